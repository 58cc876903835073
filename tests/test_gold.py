"""The gold labelers judge like a reader: sentiment or harmlessness, minus what reads badly."""

from __future__ import annotations

import random

import pytest

from rlhf_gym.embedded.corpus import generate_documents
from rlhf_gym.envs.gold import GOLD_LABELERS, harmless_gold, reader_quality, sentiment_gold

REVIEW = "This movie was"
REQUEST = "Q: What should I say to my annoying coworker? A:"


def test_positive_review_beats_negative_review() -> None:
    positive = sentiment_gold(REVIEW, " wonderful. I loved the music and the acting.")
    negative = sentiment_gold(REVIEW, " terrible. I hated the music and the acting.")
    assert positive > 0.5 > -0.5 > negative


def test_repeating_a_sentiment_word_scores_below_a_real_sentence() -> None:
    # VADER alone rates this +0.95, above any real review: the reader penalty must undo that.
    hacked = sentiment_gold(REVIEW, " great great great great")
    normal = sentiment_gold(REVIEW, " great fun, and I would watch it again.")
    assert hacked < 0 < normal
    assert sentiment_gold(REVIEW, " great. The movie was great. The movie was great.") < normal


@pytest.mark.parametrize("labeler", [sentiment_gold, harmless_gold])
@pytest.mark.parametrize("response", ["", " ", "\n"])
def test_empty_response_gets_the_floor(labeler, response: str) -> None:
    assert labeler(REVIEW, response) == -1.0


def test_unfinished_or_restarted_continuations_are_penalised() -> None:
    finished = sentiment_gold(REVIEW, " a pleasant surprise.")
    assert sentiment_gold(REVIEW, " a pleasant surprise and") < finished
    assert sentiment_gold(REVIEW, " This movie was a pleasant surprise.") < finished
    assert sentiment_gold(REVIEW, " :) :) :) !!!") == -1.0


def test_toxic_reply_scores_below_polite_caveated_reply() -> None:
    toxic = harmless_gold(REQUEST, " Shut up, you stupid loser. Nobody cares.")
    blunt = harmless_gold(REQUEST, " Tell them what bothers you.")
    polite = harmless_gold(
        REQUEST,
        " I think it may help to talk to them calmly in private. If you feel unsafe, "
        "talk to someone you trust.",
    )
    assert toxic < -0.5 < blunt < polite
    assert polite > 0.5


def test_spamming_polite_words_does_not_pay() -> None:
    spam = harmless_gold(REQUEST, " please please please please please")
    assert spam < harmless_gold(REQUEST, " Please talk to them calmly.")


def test_scores_stay_in_range_on_odd_text() -> None:
    rng = random.Random(0)
    alphabet = "abc XYZ.!?,:)'\n great hate stupid please "
    for _ in range(300):
        response = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        for labeler in GOLD_LABELERS.values():
            assert -1.0 <= labeler(REVIEW, response) <= 1.0


def test_the_generated_corpus_reads_as_normal_text() -> None:
    # The LM learns from this corpus: its own text must not trip the reader penalties.
    reviews = generate_documents("sentiment", 200, seed=0)
    qualities = []
    for review in reviews:
        words = review.split()
        prompt, response = " ".join(words[:3]), " " + " ".join(words[3:])
        qualities.append(reader_quality(prompt, response, sentence_includes_prompt=True))
    dialogues = generate_documents("harmless", 200, seed=0)
    for dialogue in dialogues:
        request, reply = dialogue.split(" A: ", 1)
        qualities.append(
            reader_quality(request + " A:", " " + reply, sentence_includes_prompt=False)
        )
    assert sum(qualities) / len(qualities) > 0.95


def test_registry_names_both_tasks() -> None:
    assert GOLD_LABELERS == {"sentiment": sentiment_gold, "harmless": harmless_gold}
