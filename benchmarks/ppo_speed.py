"""PPO training throughput: response tokens per second of rollout, update, and both.

    python benchmarks/ppo_speed.py                                   # default model, CPU
    python benchmarks/ppo_speed.py --model gpt2-small-random --dtype bfloat16 --device cuda

Runs one warm-up update, then ``--updates`` timed ones, and prints medians (``--json``: one
JSON object). ``gpt2-small-random`` is GPT-2 small's body with random weights (see _models.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _models import gpt2_small_random

from rlhf_gym.agents.ppo import PPO, PPOConfig


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="default")
    p.add_argument("--num-envs", type=int, default=64)
    p.add_argument("--updates", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    tmp = tempfile.TemporaryDirectory()
    model = args.model
    if model == "gpt2-small-random":
        model = gpt2_small_random(Path(tmp.name) / "gpt2-small-random")
    cfg = PPOConfig(
        model=model,
        num_envs=args.num_envs,
        total_episodes=10**9,
        device=args.device,
        dtype=args.dtype,
        learning_rate=1e-5,
    )
    agent = PPO(cfg)
    dev = agent.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rows = []
    for i in range(args.updates + 1):
        sync()
        t0 = time.perf_counter()
        ro = agent.collect()
        sync()
        t1 = time.perf_counter()
        agent.update(ro)
        sync()
        t2 = time.perf_counter()
        agent.update_idx += 1
        tokens = float(ro.response_mask.sum())
        if i:  # the first update is a warm-up
            rows.append((tokens / (t1 - t0), tokens / (t2 - t1), tokens / (t2 - t0)))
    med = [statistics.median(c) for c in zip(*rows, strict=True)]
    report = {
        "model": args.model,
        "device": str(dev),
        "dtype": args.dtype,
        "num_envs": args.num_envs,
        "updates": args.updates,
        "rollout_tokens_per_s": med[0],
        "update_tokens_per_s": med[1],
        "total_tokens_per_s": med[2],
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"PPO {args.model} on {dev} ({args.dtype}), B={args.num_envs}, median of "
            f"{args.updates} updates: rollout {med[0]:.0f} tok/s, update {med[1]:.0f} tok/s, "
            f"total {med[2]:.0f} tok/s"
        )
    return report


if __name__ == "__main__":
    main()
