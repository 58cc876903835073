"""Env steps (response tokens) per second and peak memory: SB3 PPO with the LM policy against
our native PPO.

    python benchmarks/sb3_vs_native.py                        # default task, CPU, ~3 minutes
    python benchmarks/sb3_vs_native.py --episodes 64 --repeats 1 --json

Both agents train the same model on the same task with the same number of parallel episodes
(``--num-envs``) for ``--episodes`` episodes, each run in a fresh process (so that each peak
RSS, ``ru_maxrss``, is its own), ``--repeats`` times in alternation. Reported:

* ``native_steps_per_s``, ``sb3_steps_per_s``: the median env steps per second of one
  collect-and-learn cycle, the first (warm-up) left out: per native update; for SB3 from the
  end of one SB3 training phase to the end of the next (one rollout of ``n_steps × num_envs``
  steps and its update).
* ``sb3_vs_native``: SB3 ÷ native (``ratio_native_over_sb3`` is its inverse).
* ``*_peak_rss_mib``: each process's peak RSS; ``*_built_rss_mib``: the peak once the agent is
  built (models loaded, nothing run), before the update's activations.
* ``sb3_dummy_*``: SB3 PPO over SB3's ``DummyVecEnv`` of separately made environments
  (``shared_models=False``: a reference and a reward model per environment, every model call
  per row), with the same SB3 policy.

The same update work per rollout: the native PPO makes 4 epochs × 4 minibatches (its default
is 2 epochs; set to SB3's 4 here); SB3 PPO gets
4 epochs and ``batch_size = n_steps × num_envs / 4`` (``--sb3-batch-size`` to change it), so
both take 16 gradient steps per rollout.

Where a difference remains: both act with a KV cache (one new token per row per step), and
through :class:`rlhf_gym.agents.sb3.RLHFVecEnv` SB3 shares one reference that decodes all rows
in one call, as the native vector environment does. But SB3's minibatches are random
*states*: its update runs the LM once per distinct sequence of each minibatch
(:class:`rlhf_gym.agents.sb3.LMFeaturesExtractor`), and a sequence with states in every
minibatch runs in every one, where the native PPO's minibatches are whole sequences, each run
once per epoch. SB3's environments also step one by one in Python and score each response
alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

AGENTS = ("native", "sb3", "sb3_dummy")


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_native(args: argparse.Namespace, kw: dict) -> tuple[list[float], float]:
    """Env steps per second of each native PPO update (collect + update), and the peak RSS
    once the agent is built (its models loaded, nothing run yet)."""
    from rlhf_gym.agents import tags
    from rlhf_gym.agents.ppo import PPO, PPOConfig

    cfg = PPOConfig(
        model=args.model,
        num_envs=args.num_envs,
        total_episodes=args.episodes,
        device="cpu",
        max_new_tokens=args.max_new_tokens,
        ppo_epochs=4,  # SB3's 4 epochs: the same update work (PPO's own default is 2)
    )
    agent = PPO(cfg, env_kwargs=kw)
    built = peak_rss_mib()
    sps: list[float] = []
    agent.train(callback=lambda a, s: sps.append(s[tags.STEPS_PER_SECOND]))
    return sps, built


def run_sb3(args: argparse.Namespace, kw: dict, shared: bool) -> tuple[list[float], float]:
    """Env steps per second of each SB3 cycle: from the end of one SB3 training phase to the
    end of the next (a whole rollout and its update), and the peak RSS once built."""
    from rlhf_gym.agents.sb3 import SB3PPO, SB3PPOConfig

    cfg = SB3PPOConfig(
        model=args.model,
        num_envs=args.num_envs,
        total_episodes=args.episodes,
        device="cpu",
        n_steps=args.max_new_tokens,
        batch_size=sb3_batch_size(args),
        max_new_tokens=args.max_new_tokens,
        shared_models=shared,
    )
    agent = SB3PPO(cfg, env_kwargs=kw)
    built = peak_rss_mib()
    marks: list[tuple[float, int]] = []
    learn = agent.model.train  # SB3's update phase; timed from outside, SB3 unchanged

    def timed_train() -> None:
        learn()
        marks.append((time.perf_counter(), agent.model.num_timesteps))

    agent.model.train = timed_train
    agent.train()
    pairs = zip(marks, marks[1:], strict=False)
    return [(s1 - s0) / (t1 - t0) for (t0, s0), (t1, s1) in pairs], built


def sb3_batch_size(args: argparse.Namespace) -> int:
    """SB3's minibatch: ``--sb3-batch-size``, or a quarter of a rollout (native's 4 minibatches)."""
    return args.sb3_batch_size or max(1, args.max_new_tokens * args.num_envs // 4)


def one(args: argparse.Namespace) -> dict[str, Any]:
    """Run one agent in this process; its rates, median (warm-up left out) and peak RSS."""
    import torch

    torch.set_num_threads(args.threads)
    kw: dict[str, Any] = {}
    if args.reward_model:
        kw.update(reward_model=args.reward_model, gold="none")
    start = time.perf_counter()
    if args.one == "native":
        rates, built = run_native(args, kw)
        rates = rates[1:]  # the first update is a warm-up
    else:  # from the end of the first update
        rates, built = run_sb3(args, kw, shared=args.one == "sb3")
    return {
        "steps_per_s": statistics.median(rates),
        "rates": rates,
        "peak_rss_mib": peak_rss_mib(),
        "built_rss_mib": built,
        "wall_s": time.perf_counter() - start,
    }


def pooled(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One agent's repeats as one result: the median over all their cycles, the largest RSS."""
    rates = [rate for r in results for rate in r["rates"]]
    return {
        "steps_per_s": statistics.median(rates),
        "rates": rates,
        "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
        "built_rss_mib": max(r["built_rss_mib"] for r in results),
    }


def child(agent: str, argv: list[str]) -> dict[str, Any]:
    """Run ``agent`` in a fresh Python process (its own peak RSS) and read its JSON line."""
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    out = subprocess.run(
        [sys.executable, __file__, *argv, "--one", agent], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        raise RuntimeError(f"the {agent} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="policy and reference: name or path")
    p.add_argument("--reward-model", default=None, help="default: the task's embedded one")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--episodes", type=int, default=256, help="per agent (a multiple of num-envs)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="also SB3's n_steps")
    p.add_argument("--sb3-batch-size", type=int, default=0, help="0: n_steps × num_envs / 4")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--skip-dummy", action="store_true", help="leave out the DummyVecEnv run")
    p.add_argument("--repeats", type=int, default=2, help="runs per agent, in alternation")
    p.add_argument("--json", action="store_true")
    p.add_argument("--one", choices=AGENTS, help=argparse.SUPPRESS)  # a child process
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(args)))
        return {}
    passed = [a for a in argv if a not in ("--json",)]
    start, load = time.perf_counter(), os.getloadavg()
    agents = [a for a in AGENTS if not (args.skip_dummy and a == "sb3_dummy")]
    tries: dict[str, list[dict[str, Any]]] = {agent: [] for agent in agents}
    for _ in range(args.repeats):  # alternating, so that a busy spell hits every agent
        for agent in agents:
            tries[agent].append(child(agent, passed))
    runs = {agent: pooled(results) for agent, results in tries.items()}
    native, sb3 = runs["native"]["steps_per_s"], runs["sb3"]["steps_per_s"]
    report: dict[str, Any] = {
        "model": args.model,
        "num_envs": args.num_envs,
        "episodes": args.episodes,
        "max_new_tokens": args.max_new_tokens,
        "sb3_n_steps": args.max_new_tokens,
        "sb3_batch_size": sb3_batch_size(args),
        "threads": args.threads,
        "repeats": args.repeats,
        "native_steps_per_s": native,
        "sb3_steps_per_s": sb3,
        "sb3_vs_native": sb3 / native,
        "ratio_native_over_sb3": native / sb3,
        "native_peak_rss_mib": runs["native"]["peak_rss_mib"],
        "sb3_peak_rss_mib": runs["sb3"]["peak_rss_mib"],
        "native_built_rss_mib": runs["native"]["built_rss_mib"],
        "sb3_built_rss_mib": runs["sb3"]["built_rss_mib"],
    }
    if "sb3_dummy" in runs:
        dummy = runs["sb3_dummy"]["steps_per_s"]
        report.update(
            sb3_dummy_steps_per_s=dummy,
            sb3_dummy_vs_native=dummy / native,
            sb3_dummy_peak_rss_mib=runs["sb3_dummy"]["peak_rss_mib"],
            sb3_dummy_built_rss_mib=runs["sb3_dummy"]["built_rss_mib"],
        )
    report.update(
        rates={agent: run["rates"] for agent, run in runs.items()},
        wall_s=time.perf_counter() - start,
        machine={"cpus": os.cpu_count(), "load_average_at_start": load[0]},
    )
    if args.json:
        print(json.dumps(report))
    else:
        lines = [
            f"env steps/s on CPU, {args.model}, {args.num_envs} envs, {args.threads} thread(s):",
            f"  native PPO {native:.0f} (peak RSS {report['native_peak_rss_mib']:.0f} MiB)",
            f"  SB3 PPO    {sb3:.0f} (peak RSS {report['sb3_peak_rss_mib']:.0f} MiB), "
            f"{sb3 / native:.2f}x native",
        ]
        if "sb3_dummy" in runs:
            lines.append(
                f"  SB3 PPO, DummyVecEnv {report['sb3_dummy_steps_per_s']:.0f} (peak RSS "
                f"{report['sb3_dummy_peak_rss_mib']:.0f} MiB), "
                f"{report['sb3_dummy_vs_native']:.2f}x native"
            )
        print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
