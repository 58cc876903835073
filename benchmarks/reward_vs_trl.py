"""Our reward-model trainer against TRL's ``RewardTrainer``: speed and held-out quality.

    pip install -e ".[bench]"              # TRL is a benchmark extra, not a dependency
    python benchmarks/reward_vs_trl.py     # 2000 pairs, 2 epochs, 3 repeats: ~5 min on 2 CPUs
    python benchmarks/reward_vs_trl.py --pairs 500 --repeats 1 --json

Both trainers get the same data, model and hyper-parameters, side by side in one process:

* data: ``--pairs`` preferences simulated on the sentiment task's training prompts
  (:func:`rlhf_gym.feedback.simulate.simulate`, seed 0) and a held-out set of
  ``--heldout-pairs`` on the held-out prompts (``sentiment-eval``, seed 1); the held-out
  records carry the noise-free gold scores, so both the accuracy against the (noisy) labels
  and against the gold ordering are measured;
* model: one copy of ``load_base("default")`` (the embedded LM's transformer with a new score
  head), deep-copied for each run, so both start from the same weights;
* hyper-parameters: batch 32, learning rate 3e-4, ``--epochs`` passes, AdamW with betas
  (0.9, 0.95) and no weight decay, gradient norm clipped to 1, 5% linear warm-up then cosine
  decay to 10% (our defaults; TRL is given ``lr_scheduler_type="cosine_with_min_lr"`` to
  match), dropout off, float32, one torch thread. Ours runs with ``heldout=0`` (no held-out
  split, no early stopping); TRL with ``activation_checkpointing=False`` (formerly
  ``gradient_checkpointing``) and ``bf16=False`` (its defaults on CPU are True and True), and
  no evaluation, logging or saving.

Speed is pairs trained per second of wall time: for TRL ``trainer.train()`` (its dataset
tokenisation runs in the constructor, not timed), for ours the whole
``train_reward_model`` call (its tokenisation *is* timed). Our own ``pairs_per_second``
(optimiser steps only) is reported too. The runs alternate order (ours, TRL; TRL, ours; ...)
and repeat ``--repeats`` times with seed = repeat index; the median ratio ours/TRL is reported.

Quality: both models score the held-out texts with
:func:`rlhf_gym.feedback.trainer.score_texts` (right-padded batches, the score at the last
real token). TRL appends the EOS token to every training text, so its model is scored on
``prompt + response + EOS`` (as trained) and, for reference, without EOS (as
:class:`~rlhf_gym.envs.rewards.HFRewardModel` would score it in the environment); ours is
scored on ``prompt + response`` (as trained and as the environment scores it).

Writes ``benchmarks/results/reward_vs_trl_cpu.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf_gym.feedback.metrics import preference_metrics
from rlhf_gym.feedback.records import Preference, read_preferences
from rlhf_gym.feedback.simulate import SimulateConfig, simulate
from rlhf_gym.feedback.trainer import (
    RewardTrainConfig,
    load_base,
    score_texts,
    train_reward_model,
)

ROOT = Path(__file__).resolve().parent.parent


def simulated(pairs: int, prompts: str | None, seed: int, tmp: Path) -> list[Preference]:
    """``pairs`` simulated sentiment preferences (written to ``tmp`` and read back)."""
    path = tmp / f"prefs_{prompts or 'train'}_{seed}.jsonl"
    simulate(SimulateConfig(out=str(path), pairs=pairs, prompts=prompts, seed=seed))
    return read_preferences(path).records


def quality(
    model: Any, tok: Any, records: list[Preference], suffix: str = ""
) -> dict[str, float | None]:
    """Held-out accuracy against the labels and against gold, texts scored with ``suffix``."""
    texts = [r.prompt + x + suffix for r in records for x in (r.response_a, r.response_b)]
    scores = score_texts(model, tok, texts)
    m = preference_metrics(scores[0::2], scores[1::2], records)
    return {"accuracy": m["accuracy"], "accuracy_vs_gold": m.get("accuracy_vs_gold")}


def run_ours(
    base: Any, tok: Any, train: list[Preference], held: list[Preference], args: Any, seed: int
) -> dict[str, Any]:
    model, tok = copy.deepcopy(base), copy.deepcopy(tok)
    cfg = RewardTrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, heldout=0.0, seed=seed
    )
    start = time.perf_counter()
    result = train_reward_model(model, tok, train, cfg)
    wall = time.perf_counter() - start
    pairs = len(train) * args.epochs
    return {
        "trainer": "rlhf_gym",
        "seed": seed,
        "threads": torch.get_num_threads(),
        "steps": result.steps,
        "wall_s": wall,
        "pairs_per_second": pairs / wall,
        "internal_pairs_per_second": result.pairs_per_second,
        "heldout": quality(model, tok, held),
    }


def run_trl(
    base: Any,
    tok: Any,
    train: list[Preference],
    held: list[Preference],
    args: Any,
    seed: int,
    out: Path,
) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import RewardConfig, RewardTrainer

    model, tok = copy.deepcopy(base), copy.deepcopy(tok)
    data = Dataset.from_dict(
        {
            "prompt": [r.prompt for r in train],
            "chosen": [r.response_a for r in train],
            "rejected": [r.response_b for r in train],
        }
    )
    steps = -(-len(train) // args.batch_size) * args.epochs
    cfg = RewardConfig(
        output_dir=str(out),
        use_cpu=True,
        seed=seed,
        report_to=[],
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1},
        warmup_steps=max(1, steps // 20),
        adam_beta2=0.95,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_length=None,  # every text fits the 128-token window: nothing to filter
        disable_dropout=True,
        activation_checkpointing=False,  # TRL's default (as gradient_checkpointing): True
        bf16=False,  # TRL's default on CPU: True
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
    )
    trainer = RewardTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok)
    trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict to stdout
    start = time.perf_counter()
    output = trainer.train()
    wall = time.perf_counter() - start
    trained = trainer.model
    return {
        "trainer": "trl",
        "seed": seed,
        "threads": torch.get_num_threads(),
        "steps": output.global_step,
        "wall_s": wall,
        "pairs_per_second": len(train) * args.epochs / wall,
        "internal_pairs_per_second": output.metrics.get("train_samples_per_second"),
        "heldout": quality(trained, tok, held, suffix=tok.eos_token),
        "heldout_scored_without_eos": quality(trained, tok, held),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pairs", type=int, default=2000, help="training preferences")
    p.add_argument("--heldout-pairs", type=int, default=500, help="held-out preferences")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=RewardTrainConfig.lr)
    p.add_argument("--repeats", type=int, default=3, help="pairs of runs, alternating order")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reward_vs_trl_cpu.json"))
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    import datasets
    import transformers
    import trl
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        train = simulated(args.pairs, None, 0, tmp)
        held = simulated(args.heldout_pairs, "sentiment-eval", 1, tmp)
        base, tok = load_base("default")
        runs: list[dict[str, Any]] = []
        ratios = []
        for rep in range(args.repeats):
            order = ("ours", "trl") if rep % 2 == 0 else ("trl", "ours")
            pair = {}
            for name in order:
                if name == "ours":
                    pair[name] = run_ours(base, tok, train, held, args, rep)
                else:
                    pair[name] = run_trl(base, tok, train, held, args, rep, tmp / f"trl{rep}")
                pair[name]["repeat"] = rep
                pair[name]["position"] = order.index(name)
                runs.append(pair[name])
                if not args.json:
                    r = pair[name]
                    print(
                        f"repeat {rep} {name:5} {r['wall_s']:6.1f} s {r['pairs_per_second']:6.1f} "
                        f"pairs/s  held-out acc {r['heldout']['accuracy']:.3f} "
                        f"vs gold {r['heldout']['accuracy_vs_gold']:.3f}",
                        flush=True,
                    )
            ratios.append(pair["ours"]["pairs_per_second"] / pair["trl"]["pairs_per_second"])

    def med(name: str, *keys: str) -> float:
        values = []
        for r in runs:
            if r["trainer"] == name:
                v: Any = r
                for k in keys:
                    v = v[k]
                values.append(v)
        return float(statistics.median(values))

    summary = {
        name: {
            "pairs_per_second_median": med(name, "pairs_per_second"),
            "accuracy_median": med(name, "heldout", "accuracy"),
            "accuracy_vs_gold_median": med(name, "heldout", "accuracy_vs_gold"),
        }
        for name in ("rlhf_gym", "trl")
    }
    noisy = float(np.mean([r.meta["gold_a"] > r.meta["gold_b"] for r in held]))
    report = {
        "benchmark": "reward_vs_trl",
        "machine": f"{platform.machine()} CPU, torch threads 1 ({platform.platform()})",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
        },
        "train_pairs": len(train),
        "heldout_pairs": len(held),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "repeats": args.repeats,
        "labels_agreeing_with_gold_heldout": noisy,
        "speed_ratio_ours_over_trl": ratios,
        "speed_ratio_median": float(statistics.median(ratios)),
        "summary": summary,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"\n{len(train)} training pairs x {args.epochs} epochs, batch {args.batch_size}, "
            f"{args.repeats} repeats; held-out {len(held)} pairs (labels agree with gold on "
            f"{noisy:.3f})"
        )
        print(f"{'':9} {'pairs/s':>8} {'acc':>7} {'vs gold':>8}   (medians)")
        for name, s in summary.items():
            print(
                f"{name:9} {s['pairs_per_second_median']:8.1f} {s['accuracy_median']:7.3f} "
                f"{s['accuracy_vs_gold_median']:8.3f}"
            )
        print(
            "speed ratio ours/TRL per repeat: "
            + ", ".join(f"{x:.2f}" for x in ratios)
            + f"; median {report['speed_ratio_median']:.2f}"
        )
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
