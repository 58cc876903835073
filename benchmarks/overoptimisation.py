"""Reward over-optimisation, measured: proxy and gold score against √KL while PPO trains.

    python benchmarks/overoptimisation.py [--episodes 8192] [--every 8] [--betas 0,0.05]

For each KL coefficient β (one process each, in parallel), PPO trains on the default task
(``RLHF-v0``, seed 0) for ``--episodes`` episodes; before training and every ``--every``
updates the current policy is evaluated on the held-out prompts (``--eval-episodes`` episodes,
:func:`rlhf_gym.evaluate.evaluate`): the reward model's score (the *proxy* PPO maximises), the
gold labeler's score (the stand-in for a person) and the exact KL from the reference. The
curves of Gao et al. (2022, "Scaling Laws for Reward Model Overoptimization") plot both scores
against √KL: without a KL penalty the proxy keeps rising while the gold score peaks and falls;
the penalty keeps the policy where the proxy still tracks the gold.

Writes ``benchmarks/results/overoptimisation.json`` and the figure ``docs/overoptimisation.png``
(``--out``), and prints one table row per evaluation. The defaults took 5 min 46 s on a shared
2-core CPU machine (the two runs in parallel, one torch thread each).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(beta: float, episodes: int, every: int, eval_episodes: int, seed: int) -> dict:
    """Train PPO with ``kl_coef=beta``; evaluate before training and every ``every`` updates."""
    import torch

    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a model load per evaluation: keep the output readable
    from rlhf_gym.agents.ppo import PPO, PPOConfig
    from rlhf_gym.evaluate import evaluate

    points: list[dict] = []

    def measure(policy: object, done_episodes: int) -> None:
        result = evaluate(
            "RLHF-v0",
            policy=policy,
            episodes=eval_episodes,
            num_envs=min(64, eval_episodes),
            seed=10_000 + seed,
            prompts="sentiment-eval",
        ).summary()
        kl = result["kl"]["mean"]
        points.append(
            {
                "episodes": done_episodes,
                "proxy": result["score"]["mean"],
                "gold": result["gold_score"]["mean"],
                "kl": kl,
                "sqrt_kl": math.sqrt(max(kl, 0.0)),
            }
        )

    def after_update(agent: PPO, stats: dict) -> None:
        if agent.update_idx % every == 0 or agent.update_idx == agent.cfg.num_updates:
            measure(agent.policy, agent.episodes_seen)

    start = time.perf_counter()
    agent = PPO(PPOConfig(kl_coef=beta, total_episodes=episodes, seed=seed))
    measure(None, 0)  # the reference
    agent.train(callback=after_update)
    return {"beta": beta, "seed": seed, "wall_s": time.perf_counter() - start, "points": points}


def plot(runs: list[dict], path: Path) -> None:
    """Proxy (dashed) and gold (solid) score against √KL, one colour per β."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    reference_gold = runs[0]["points"][0]["gold"]
    for k, r in enumerate(runs):
        x = [p["sqrt_kl"] for p in r["points"]]
        ax.plot(x, [p["proxy"] for p in r["points"]], "--", color=f"C{k}", marker=".")
        ax.plot(x, [p["gold"] for p in r["points"]], "-", color=f"C{k}", marker="o",
                label=f"β = {r['beta']:g}: gold (solid), proxy (dashed)")  # fmt: skip
    ax.axhline(reference_gold, color="grey", lw=1, ls=":", label="reference's gold score")
    ax.set(
        xlabel="√KL(π ‖ π_ref)  (√nats per response)",
        ylabel="held-out mean score",
        title="Over-optimisation of the reward model (RLHF-v0, PPO)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=8192, help="training episodes per run")
    p.add_argument("--every", type=int, default=8, help="updates between evaluations")
    p.add_argument("--eval-episodes", type=int, default=128)
    p.add_argument("--betas", default="0,0.05", help="KL coefficients, comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "docs" / "overoptimisation.png"))
    p.add_argument(
        "--results", default=str(ROOT / "benchmarks" / "results" / "overoptimisation.json")
    )
    args = p.parse_args()
    betas = [float(b) for b in args.betas.split(",")]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with ProcessPoolExecutor(max_workers=min(len(betas), os.cpu_count() or 1)) as pool:
        futures = [
            pool.submit(run, b, args.episodes, args.every, args.eval_episodes, args.seed)
            for b in betas
        ]
        runs = [f.result() for f in futures]
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    plot(runs, Path(args.out))
    print(f"{'β':>5} {'episodes':>8} {'√KL':>6} {'proxy':>7} {'gold':>7}")
    for r in runs:
        for pt in r["points"]:
            print(
                f"{r['beta']:>5g} {pt['episodes']:>8} {pt['sqrt_kl']:>6.2f} "
                f"{pt['proxy']:>+7.3f} {pt['gold']:>+7.3f}"
            )
        print(f"  β = {r['beta']:g}: {r['wall_s']:.0f} s")
    print(f"figure: {args.out}\nresults: {args.results}")


if __name__ == "__main__":
    main()
