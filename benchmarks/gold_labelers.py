"""The gold labelers: agreement with a reader, what they do to clean text, and their cost.

    python benchmarks/gold_labelers.py [--documents 2000] [--repeats 5] [--json]

* agreement on ``tests/data/gold_pairs.jsonl`` (pairs where a reader's preference is clear),
  per task;
* the mean reader quality ``q`` of the embedded corpus's own documents, split after 1-4 words
  into prompt and continuation (sentiment) or at ``A:`` (harmless): clean text should keep
  ``q`` near 1;
* the cost per response: the median over ``--repeats`` passes of the labeler over those
  documents, against VADER alone on the same texts in the same process (the part every
  version of the labelers pays).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from pathlib import Path

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from rlhf_gym.embedded.corpus import make_task_corpus
from rlhf_gym.envs import gold

PAIRS = Path(__file__).resolve().parent.parent / "tests" / "data" / "gold_pairs.jsonl"


def split(task: str, document: str, rng: random.Random) -> tuple[str, str]:
    """A corpus document as (prompt, response), as the environment would see it."""
    if task == "harmless":
        request, reply = document.split(" A:", 1)
        return request + " A:", reply
    spaces = [m.start() for m in re.finditer(" ", document)]
    cut = spaces[rng.randrange(1, min(5, len(spaces)))]
    return document[:cut], document[cut:]


def quality(task: str, prompt: str, response: str) -> float:
    """The reader quality the labeler multiplies by (harmless: with ``q_topic``)."""
    q = gold.reader_quality(prompt, response, sentence_includes_prompt=task == "sentiment")
    if task == "harmless" and not gold.addresses_request(prompt, response):
        q *= 0.5
    return q


def seconds_per_call(fn, texts: list[tuple[str, str]], repeats: int) -> float:
    """Median over ``repeats`` passes of the time per call."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for prompt, response in texts:
            fn(prompt, response)
        times.append((time.perf_counter() - start) / len(texts))
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--documents", type=int, default=2000, help="corpus documents per task")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    vader = SentimentIntensityAnalyzer()
    out: dict[str, dict] = {}
    for task, labeler in gold.GOLD_LABELERS.items():
        if task not in ("sentiment", "harmless"):
            continue  # the helpful-harmless labelers: tests/test_assistant_corpus.py
        mine = [x for x in pairs if x["task"] == task]
        agree = sum(
            labeler(x["prompt"], x["better"]) > labeler(x["prompt"], x["worse"]) for x in mine
        )
        corpus = make_task_corpus(task, n_documents=args.documents, n_heldout=10, seed=0)
        rng = random.Random(0)
        texts = [split(task, d, rng) for d in corpus.documents[: args.documents]]
        qs = [quality(task, prompt, response) for prompt, response in texts]
        labeler_s = seconds_per_call(labeler, texts, args.repeats)
        vader_s = seconds_per_call(lambda _, r: vader.polarity_scores(r), texts, args.repeats)
        out[task] = {
            "pairs": len(mine),
            "agreement": agree / len(mine),
            "corpus_documents": len(texts),
            "corpus_mean_quality": statistics.fmean(qs),
            "corpus_quality_below_0.9": sum(q < 0.9 for q in qs) / len(qs),
            "us_per_response": labeler_s * 1e6,
            "vader_us_per_response": vader_s * 1e6,
            "ratio_to_vader": labeler_s / vader_s,
        }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for task, r in out.items():
        print(
            f"{task:<10} agreement {r['agreement']:.3f} on {r['pairs']} pairs; corpus mean q "
            f"{r['corpus_mean_quality']:.3f} ({r['corpus_quality_below_0.9']:.1%} below 0.9); "
            f"{r['us_per_response']:.0f} us per response = {r['ratio_to_vader']:.2f} x VADER alone"
        )


if __name__ == "__main__":
    main()
