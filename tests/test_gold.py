"""The gold labelers judge like a reader: sentiment or harmlessness, minus what reads badly."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from rlhf_gym.embedded.corpus import generate_documents
from rlhf_gym.envs.gold import (
    GOLD_LABELERS,
    addresses_request,
    fluency,
    harmless_gold,
    known_word,
    reader_quality,
    sentiment_gold,
    slips,
)

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


def test_registry_names_every_task_and_the_helpful_harmless_components() -> None:
    from rlhf_gym.envs.gold import helpful_harmless_gold

    assert GOLD_LABELERS["sentiment"] is sentiment_gold
    assert GOLD_LABELERS["harmless"] is harmless_gold
    assert GOLD_LABELERS["helpful_harmless"] is helpful_harmless_gold
    assert set(GOLD_LABELERS) == {
        "sentiment",
        "harmless",
        "helpful_harmless",
        "hh_helpful",
        "hh_harmless",
    }


# ---------------------------------------------------------------------- a reader's preferences
PAIRS = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "gold_pairs.jsonl").read_text().splitlines()
]


def test_the_pairs_cover_every_kind_of_bad_text() -> None:
    kinds = {(p["task"], p["kind"]) for p in PAIRS}
    for task in ("sentiment", "harmless"):
        for kind in ("salad", "nonwords", "repetition", "punctuation", "offtopic", "polarity"):
            assert (task, kind) in kinds
    assert sum(p["kind"] == "ppo_no_kl" for p in PAIRS) >= 10  # real outputs of PPO without KL
    assert len(PAIRS) >= 60


@pytest.mark.parametrize("task", ["sentiment", "harmless"])
def test_gold_labelers_agree_with_a_reader_on_the_pairs(task: str) -> None:
    """tests/data/gold_pairs.jsonl: pairs where a reader's preference is clear."""
    pairs = [p for p in PAIRS if p["task"] == task]
    labeler = GOLD_LABELERS[task]
    wrong = [
        (p["kind"], p["prompt"], p["better"], p["worse"])
        for p in pairs
        if not labeler(p["prompt"], p["better"]) > labeler(p["prompt"], p["worse"])
    ]
    assert 1 - len(wrong) / len(pairs) >= 0.95, wrong


def test_a_fluent_neutral_sentence_beats_positive_word_salad() -> None:
    neutral = sentiment_gold("I watched this drama", " last night with my brother.")
    rng = random.Random(0)
    positive = [
        "great",
        "wonderful",
        "amazing",
        "loved",
        "happy",
        "fun",
        "best",
        "superb",
        "lovely",
        "pleasant",
        "brilliant",
        "perfect",
        "enjoy",
        "joy",
        "delight",
    ]
    for _ in range(200):
        salad = " " + " ".join(rng.sample(positive, rng.randint(4, 9))) + rng.choice([".", "!"])
        assert sentiment_gold("I watched this drama", salad) < neutral, salad


def test_known_words_and_fragments() -> None:
    for word in ("film", "biopic", "biopics", "letdown", "nosy", "classmate's", "I", "TV", "lid"):
        assert known_word(word), word
    for word in ("ly", "happ", "happion", "atly", "likea", "andthe", "amazin", "thecol"):
        assert not known_word(word), word


def test_slips_and_fluency() -> None:
    assert slips(" It was fine. I liked it, and so did she.") == 0
    assert slips(" It was fine.,I liked it ,so did she..") == 3  # ".,I", " ,s", ".."
    assert slips(" It was was fine.") == 1
    assert fluency(" It was fine. I liked it.") == 1.0
    assert fluency(" Q: How do I cook rice? A: Boil it.") == 0.25  # another task's format
    assert fluency(" great wonderful amazing loved happy fun.") == 0.0  # no function word


def test_a_harmless_reply_must_speak_to_the_request() -> None:
    request = "Q: I want to cook rice. Where do I start? A:"
    assert addresses_request(request, " Rinse the rice, then simmer it.")  # topical word
    assert addresses_request(request, " You could ask a friend to show you.")  # to the asker
    assert addresses_request(request, " Start with a small pot.")  # an instruction
    assert not addresses_request(request, " The movie was great and I loved the music.")
    on, off = (harmless_gold(request, r) for r in (" Rinse it first.", " The film was lovely."))
    assert on > off


def test_the_labelers_are_fast_and_deterministic() -> None:
    import time

    texts = [(p["prompt"], p["worse"]) for p in PAIRS] + [(p["prompt"], p["better"]) for p in PAIRS]
    first = [GOLD_LABELERS[p["task"]](p["prompt"], p["better"]) for p in PAIRS]
    start = time.perf_counter()
    for prompt, response in texts * 5:
        sentiment_gold(prompt, response)
    per_call = (time.perf_counter() - start) / (len(texts) * 5)
    assert per_call < 2e-3  # 0.1-0.2 ms (benchmarks/gold_labelers.py): 64 episodes cost < 0.1 s
    assert first == [GOLD_LABELERS[p["task"]](p["prompt"], p["better"]) for p in PAIRS]
