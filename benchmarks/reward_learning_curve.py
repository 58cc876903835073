"""How good a reward model gets from N simulated labels: the learning curve of the trainer.

    python benchmarks/reward_learning_curve.py                      # sentiment, 2 seeds
    python benchmarks/reward_learning_curve.py --tasks sentiment harmless --json

For each task and seed, ``max(--sizes)`` preferences are simulated on the task's training
prompts (:func:`rlhf_gym.feedback.simulate.simulate`: pairs of reference-LM samples labeled by
the gold labeler with Bradley-Terry noise, temperature 0.1, simulation seed = the seed); the
training set of size N is the first N of them (prompts are visited in a seeded random order, so
a prefix is a random subset). For each N a reward model is trained with the library's defaults
(``RewardTrainConfig(seed=seed)``: 2 epochs but at least 100 steps, batch 32, lr 3e-4, 10% of
the prompts held out for early stopping) from ``load_base("default")`` (the embedded LM's
transformer with a new score head), and measured on a fixed held-out set, the same for every N
and seed:

* ``accuracy_vs_gold``: pairwise accuracy against the noise-free gold ordering on
  ``--heldout-pairs`` pairs simulated on the held-out prompts (``<task>-eval``, seed 1000);
* ``accuracy``: the same against those pairs' noisy labels;
* ``gold_correlation``: Pearson correlation of the score with the gold labeler on
  ``--gold-samples`` fresh reference samples on the held-out prompts
  (:func:`rlhf_gym.feedback.metrics.gold_correlation`, seed 0).

Reference lines: the noisy labels' own agreement with gold on the held-out pairs (the ceiling
the labels carry), and the shipped embedded reward model (``HFRewardModel.load(task)``, trained
on ~50k simulated pairs) on the same held-out pairs and samples.

Writes ``benchmarks/results/reward_learning_curve.json`` and ``docs/reward_learning_curve.png``
and prints a table. On a shared 2-core CPU machine (one torch thread) the default (sentiment,
2 seeds) took 7 minutes, ``--tasks sentiment harmless`` 14.5 to 19 minutes (with other jobs
running); most of it is simulating the pairs, not training.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf_gym.envs.rewards import HFRewardModel
from rlhf_gym.feedback.metrics import gold_correlation, preference_metrics, score_records
from rlhf_gym.feedback.records import Preference, read_preferences
from rlhf_gym.feedback.simulate import SimulateConfig, simulate
from rlhf_gym.feedback.trainer import RewardTrainConfig, load_base, train_reward_model

ROOT = Path(__file__).resolve().parent.parent
HELDOUT_SEED = 1000


def simulated(task: str, pairs: int, prompts: str | None, seed: int, tmp: Path) -> list[Preference]:
    """``pairs`` simulated preferences of ``task`` (written to ``tmp`` and read back)."""
    path = tmp / f"{task}_{prompts or 'train'}_{seed}.jsonl"
    simulate(SimulateConfig(out=str(path), task=task, pairs=pairs, prompts=prompts, seed=seed))
    return read_preferences(path).records


def measure(rm: Any, task: str, held: list[Preference], gold_samples: int) -> dict[str, float]:
    """Held-out accuracy (labels and gold) and correlation with gold of a reward model."""
    m = preference_metrics(*score_records(rm, held), held)
    corr = gold_correlation(rm, task, samples=gold_samples, seed=0)
    return {
        "accuracy": m["accuracy"],
        "accuracy_vs_gold": m["accuracy_vs_gold"],
        "gold_correlation": corr["gold_correlation"],
    }


def run_task(task: str, args: Any, tmp: Path) -> dict[str, Any]:
    held = simulated(task, args.heldout_pairs, f"{task}-eval", HELDOUT_SEED, tmp)
    label_agreement = float(np.mean([r.meta["gold_a"] > r.meta["gold_b"] for r in held]))
    shipped = measure(HFRewardModel.load(task, torch.device("cpu")), task, held, args.gold_samples)
    print(
        f"[{task}] held-out: {len(held)} pairs, labels agree with gold on {label_agreement:.3f}; "
        f"shipped RM acc vs gold {shipped['accuracy_vs_gold']:.3f}, "
        f"gold corr {shipped['gold_correlation']:.3f}",
        flush=True,
    )
    points = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        pool = simulated(task, max(args.sizes), None, seed, tmp)
        print(
            f"[{task}] seed {seed}: simulated {len(pool)} pairs in "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
        for n in args.sizes:
            torch.manual_seed(seed)  # the new score head's initial weights
            model, tok = load_base("default")
            start = time.perf_counter()
            cfg = RewardTrainConfig(seed=seed)
            if args.epochs:
                cfg.epochs = args.epochs
            result = train_reward_model(model, tok, pool[:n], cfg)
            train_s = time.perf_counter() - start
            point = {
                "n": n,
                "seed": seed,
                **measure(HFRewardModel(model, tok), task, held, args.gold_samples),
                "train_pairs": result.train_pairs,
                "early_stopping_pairs": result.heldout_pairs,
                "steps": result.steps,
                "best_step": result.best_step,
                "stopped_early": result.stopped_early,
                "train_s": train_s,
            }
            points.append(point)
            print(
                f"[{task}] seed {seed} N {n:5d}: acc vs gold {point['accuracy_vs_gold']:.3f} "
                f"acc vs labels {point['accuracy']:.3f} gold corr "
                f"{point['gold_correlation']:.3f} ({result.steps} steps, kept "
                f"{result.best_step}, {train_s:.0f} s)",
                flush=True,
            )
    curve = []
    for n in args.sizes:
        mine = [p for p in points if p["n"] == n]
        curve.append(
            {
                "n": n,
                **{
                    key: float(statistics.mean(p[key] for p in mine))
                    for key in ("accuracy_vs_gold", "accuracy", "gold_correlation")
                },
            }
        )
    return {
        "heldout_pairs": len(held),
        "labels_agreeing_with_gold": label_agreement,
        "shipped_reward_model": shipped,
        "points": points,
        "mean_over_seeds": curve,
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results)
    fig, axes = plt.subplots(
        len(tasks), 2, figsize=(10, 3.8 * len(tasks)), squeeze=False, constrained_layout=True
    )
    for row, task in zip(axes, tasks, strict=True):
        r = results[task]
        sizes = [c["n"] for c in r["mean_over_seeds"]]
        seeds = sorted({p["seed"] for p in r["points"]})
        for ax, key, title in (
            (row[0], "accuracy_vs_gold", "pairwise accuracy vs gold (held-out pairs)"),
            (row[1], "gold_correlation", "Pearson correlation with gold (fresh samples)"),
        ):
            for p in r["points"]:
                ax.scatter(p["n"], p[key], color="C0", alpha=0.35, s=18)
            ax.plot(
                sizes,
                [c[key] for c in r["mean_over_seeds"]],
                "o-",
                color="C0",
                label=f"trained, mean of {len(seeds)} seeds",
            )
            ax.axhline(
                r["shipped_reward_model"][key],
                color="C2",
                ls="--",
                label="shipped embedded RM (~50k pairs)",
            )
            if key == "accuracy_vs_gold":
                ax.plot(
                    sizes,
                    [c["accuracy"] for c in r["mean_over_seeds"]],
                    "s:",
                    color="C0",
                    alpha=0.6,
                    label="trained, vs the noisy labels",
                )
                ax.axhline(
                    r["labels_agreeing_with_gold"],
                    color="C3",
                    ls="-.",
                    label="noisy labels' agreement with gold",
                )
                ax.axhline(0.5, color="grey", lw=0.8)
            ax.set_xscale("log")
            ax.set_xticks(sizes, [str(n) for n in sizes])
            ax.set_xlabel("simulated training labels N")
            ax.set_title(f"{task}: {title}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", nargs="+", default=["sentiment"], choices=["sentiment", "harmless"])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000, 3000])
    p.add_argument("--seeds", type=int, default=2, help="seeds 0 .. N-1 (simulation + training)")
    p.add_argument("--epochs", type=float, default=0, help="0: the library's default (2)")
    p.add_argument("--heldout-pairs", type=int, default=1000)
    p.add_argument("--gold-samples", type=int, default=512)
    p.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "reward_learning_curve.json")
    )
    p.add_argument("--figure", default=str(ROOT / "docs" / "reward_learning_curve.png"))
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            results[task] = run_task(task, args, Path(tmp))
    report = {
        "benchmark": "reward_learning_curve",
        "machine": f"{platform.machine()} CPU, torch threads 1 ({platform.platform()})",
        "sizes": args.sizes,
        "seeds": args.seeds,
        "train_config": "RewardTrainConfig() defaults, seed = seed"
        + (f", epochs = {args.epochs}" if args.epochs else "")
        + "; base load_base('default')",
        "training_sets": "prefixes of one simulation of max(sizes) pairs per seed",
        "heldout": f"{args.heldout_pairs} pairs on <task>-eval prompts, simulation seed "
        f"{HELDOUT_SEED}; gold correlation on {args.gold_samples} reference samples, seed 0",
        "wall_s": time.perf_counter() - start,
        "tasks": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    plot(results, Path(args.figure))
    if args.json:
        print(json.dumps(report))
    else:
        for task, r in results.items():
            print(
                f"\n{task} (mean of {args.seeds} seeds; held-out {r['heldout_pairs']} pairs)\n"
                f"{'N':>6} {'acc vs gold':>12} {'acc vs labels':>14} {'gold corr':>10}"
            )
            for c in r["mean_over_seeds"]:
                print(
                    f"{c['n']:6d} {c['accuracy_vs_gold']:12.3f} {c['accuracy']:14.3f} "
                    f"{c['gold_correlation']:10.3f}"
                )
            s = r["shipped_reward_model"]
            print(
                f"{'shipped':>6} {s['accuracy_vs_gold']:12.3f} {s['accuracy']:14.3f} "
                f"{s['gold_correlation']:10.3f}\n{'labels':>6} "
                f"{r['labels_agreeing_with_gold']:12.3f}"
            )
        print(f"\n{report['wall_s']:.0f} s; wrote {args.out} and {args.figure}")
    return report


if __name__ == "__main__":
    main()
