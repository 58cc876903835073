"""PPO training throughput: response tokens per second of rollout, update, and both, for each
reference pass of the environment.

    python benchmarks/ppo_speed.py                                   # default model, CPU
    python benchmarks/ppo_speed.py --model gpt2-small-random --dtype bfloat16 --device cuda

Builds one PPO agent per ``--reference-passes`` entry (default: ``per_step`` and ``deferred``,
PPO's default), runs one warm-up update of each, then ``--updates`` timed collect + update
cycles of each, alternating between the agents so that drift on a shared machine hits both
alike. Prints medians (``--json``: one JSON object): per pass the rollout, update and total
tokens per second and the rollout's share of the time; and ``deferred_vs_per_step``, the ratio
of the rollout's tokens per second, measured in the same process. ``--autoreset-modes
disabled,next_step`` adds, per pass, an agent whose vector env autoresets finished rows (they
decode throwaway episodes until the batch's longest response ends; the agents' default is
without autoreset) and reports ``no_autoreset_vs_next_step`` per pass, the ratio of the
rollout's tokens per second. ``--cuda-graphs`` adds, per pass, an agent with
``cuda_graphs=True`` (CUDA only) and reports ``graphs_vs_eager`` per pass, the ratio of the
rollout's tokens per second. ``gpt2-small-random`` is
GPT-2 small's body with random weights (see _models.py). Both agents start from the same
weights and seeds, so they sample the same tokens.
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


def cycle(agent: PPO) -> tuple[float, float, float]:
    """One collect + update; its response tokens and the two durations in seconds."""
    dev = agent.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    ro = agent.collect()
    sync()
    t1 = time.perf_counter()
    agent.update(ro)
    sync()
    t2 = time.perf_counter()
    agent.update_idx += 1
    return float(ro.response_mask.sum()), t1 - t0, t2 - t1


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="default")
    p.add_argument("--num-envs", type=int, default=64)
    p.add_argument("--updates", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--reference-passes", default="per_step,deferred")
    p.add_argument(
        "--autoreset-modes", default="disabled", help="disabled (the agents'), next_step or both"
    )
    p.add_argument(
        "--cuda-graphs", action="store_true", help="add agents with cuda_graphs=True (CUDA)"
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.cuda_graphs and not (torch.cuda.is_available() and args.device != "cpu"):
        p.error("--cuda-graphs needs a CUDA device")
    tmp = tempfile.TemporaryDirectory()
    model = args.model
    if model == "gpt2-small-random":
        model = gpt2_small_random(Path(tmp.name) / "gpt2-small-random")
    agents = {
        name + ("" if mode == "disabled" else "+autoreset") + ("+graphs" if graphs else ""): PPO(
            PPOConfig(
                model=model,
                num_envs=args.num_envs,
                total_episodes=10**9,
                device=args.device,
                dtype=args.dtype,
                learning_rate=1e-5,
                reference_pass=name,
                cuda_graphs=graphs,
            ),
            env_kwargs={"autoreset_mode": mode},
        )
        for name in args.reference_passes.split(",")
        for mode in args.autoreset_modes.split(",")
        for graphs in ([False, True] if args.cuda_graphs else [False])
    }
    rows: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in agents}
    for i in range(args.updates + 1):
        for name, agent in agents.items():
            tokens, t_collect, t_update = cycle(agent)
            if i:  # the first update is a warm-up
                total = t_collect + t_update
                rows[name].append(
                    (tokens / t_collect, tokens / t_update, tokens / total, t_collect / total)
                )
    passes = {}
    for name, r in rows.items():
        med = [statistics.median(c) for c in zip(*r, strict=True)]
        passes[name] = {
            "rollout_tokens_per_s": med[0],
            "update_tokens_per_s": med[1],
            "total_tokens_per_s": med[2],
            "rollout_share": med[3],
        }
    report = {
        "model": args.model,
        "device": str(next(iter(agents.values())).device),
        "dtype": args.dtype,
        "num_envs": args.num_envs,
        "updates": args.updates,
        "passes": passes,
        **passes.get("deferred", {}),  # the default pass's figures at the top, as before
    }
    if {"per_step", "deferred"} <= passes.keys():
        report["deferred_vs_per_step"] = (
            passes["deferred"]["rollout_tokens_per_s"] / passes["per_step"]["rollout_tokens_per_s"]
        )
    for name in args.reference_passes.split(","):
        if {name, name + "+autoreset"} <= passes.keys():
            report.setdefault("no_autoreset_vs_next_step", {})[name] = (
                passes[name]["rollout_tokens_per_s"]
                / passes[name + "+autoreset"]["rollout_tokens_per_s"]
            )
    for name in passes:
        if name + "+graphs" in passes:
            report.setdefault("graphs_vs_eager", {})[name] = (
                passes[name + "+graphs"]["rollout_tokens_per_s"]
                / passes[name]["rollout_tokens_per_s"]
            )
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"PPO {args.model} on {report['device']} ({args.dtype}), B={args.num_envs}, median "
            f"of {args.updates} updates (tokens/s):"
        )
        for name, r in passes.items():
            print(
                f"  {name:>9}: rollout {r['rollout_tokens_per_s']:.0f}, update "
                f"{r['update_tokens_per_s']:.0f}, total {r['total_tokens_per_s']:.0f}; rollout "
                f"{100 * r['rollout_share']:.0f} % of the time"
            )
        if "deferred_vs_per_step" in report:
            print(f"  rollout, deferred / per step: {report['deferred_vs_per_step']:.2f}")
        for name, ratio in report.get("no_autoreset_vs_next_step", {}).items():
            print(f"  rollout, {name}, no autoreset / next-step autoreset: {ratio:.2f}")
        for name, ratio in report.get("graphs_vs_eager", {}).items():
            print(f"  rollout, {name}, CUDA graphs / eager: {ratio:.2f}")
    return report


if __name__ == "__main__":
    main()
