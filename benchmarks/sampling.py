"""Sampling one token per row: ``sample_tokens`` (inverse CDF) against ``torch.multinomial``.

    python benchmarks/sampling.py [--shapes 1x1024,32x1024,64x1024,32x50257] [--json]

For each ``B x V`` shape, the median time per call of
``torch.multinomial(logits.softmax(-1), 1)`` (what ``generate`` and the package's policies did
before) and of :func:`rlhf_gym.envs.policy.sample_tokens` on the same random logits, on one
torch thread, and their ratio ``multinomial_vs_sample_tokens`` (> 1: ``sample_tokens`` is
faster). The calls alternate, so drift of the shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from rlhf_gym.envs.policy import sample_tokens


def multinomial(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="1x1024,32x1024,64x1024,32x50257")
    p.add_argument("--repeats", type=int, default=9, help="timed blocks per method (median)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = {}
    for shape in args.shapes.split(","):
        B, V = (int(x) for x in shape.split("x"))
        logits = torch.randn(B, V, device=args.device) * 3
        g = torch.Generator(device=args.device).manual_seed(0)
        calls = max(3, 20_000 // V)
        methods = {
            "multinomial": partial(multinomial, logits, g),
            "sample_tokens": partial(sample_tokens, logits, g),
        }
        times: dict[str, list[float]] = {k: [] for k in methods}
        for fn in methods.values():
            per_call(fn, calls)  # warm-up
        for _ in range(args.repeats):
            for k, fn in methods.items():
                times[k].append(per_call(fn, calls))
        ratio = statistics.median(
            a / b for a, b in zip(times["multinomial"], times["sample_tokens"], strict=True)
        )
        results[shape] = {
            "multinomial_ms": 1e3 * statistics.median(times["multinomial"]),
            "sample_tokens_ms": 1e3 * statistics.median(times["sample_tokens"]),
            "multinomial_vs_sample_tokens": ratio,
        }
    report = {"device": args.device, "threads": 1, "results": results}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{'B x V':>10} {'multinomial ms':>15} {'sample_tokens ms':>17} {'ratio':>6}")
        for shape, r in results.items():
            print(
                f"{shape:>10} {r['multinomial_ms']:>15.3f} {r['sample_tokens_ms']:>17.3f} "
                f"{r['multinomial_vs_sample_tokens']:>6.1f}"
            )
    return report


if __name__ == "__main__":
    main()
