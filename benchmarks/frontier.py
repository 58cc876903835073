"""The agents against the optimum of their own objective, at several KL coefficients β.

    python benchmarks/frontier.py [--betas 0.05,0.1,0.3,1.0] [--agents ppo,qlearning]
                                  [--episodes 4096] [--eval-episodes 512] [--pool 64]
                                  [--jobs 2] [--json]

For each β and agent, the agent trains on the default task (``RLHF-v0``, seed 0, its own
defaults, ``kl_coef=β``, ``--episodes`` episodes; a variant such as
``ppo:kl_estimator=k1:anneal_lr=False`` changes defaults, for ablations) in its own process,
and its final policy is evaluated on the held-out prompts (``--prompts sentiment``: on the
training prompts instead, pool included; ``--eval-episodes`` episodes, the exact per-sequence KL):
``J = mean(score − β·KL)`` with its standard error over episodes. Beside it, from a pool of
``--pool`` reference samples per held-out prompt (:mod:`rlhf_gym.frontier`):

* ``best_of_n_J``: the best best-of-n objective for n in 1…16 (KL: the analytic bound, so a
  lower bound on best-of-n's true objective), and the n that reaches it;
* ``optimum_J``: the Monte Carlo estimate of the optimum ``β·log E_ref[exp(score/β)]``, with a
  bootstrap standard error and ``optimum_J_half`` (the same from half the pool: how much the
  estimate, which is low on average, still grows with the pool);
* ``reference_J``: the reference itself (KL 0).

Writes ``benchmarks/results/frontier.json`` and the figure ``docs/frontier.png`` (score and
gold against KL: the agents at each β, the best-of-n curve and the estimated frontier of the
tilted reference), and prints the table. ``--json`` prints the JSON instead. ``--out`` and
``--figure`` choose other paths (an ablation should not overwrite the main results).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ENV_ID, PROMPTS = "RLHF-v0", "sentiment-eval"  # the held-out prompts (``--prompts``)
LABELS = {"ppo": "PPO", "qlearning": "soft-Q"}
KEYS = {"ppo": "ppo", "qlearning": "softq"}


def parse_agent(spec: str) -> tuple[str, dict]:
    """``"ppo"`` or a variant with changed defaults, ``"ppo:kl_estimator=k1:anneal_lr=False"``
    (values read as Python literals, else as strings): the agent's name and the changes."""
    name, *pairs = spec.split(":")
    overrides = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        try:
            overrides[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[key] = text
    return name, overrides


def _quiet() -> None:
    import torch

    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def train_and_eval(
    agent: str, beta: float, episodes: int, eval_episodes: int, seed: int, prompts: str = PROMPTS
) -> dict:
    """Train ``agent`` at ``kl_coef=beta``; the held-out objective of its final policy."""
    _quiet()
    from rlhf_gym.agents import agent_class
    from rlhf_gym.evaluate import evaluate

    name, overrides = parse_agent(agent)
    cls = agent_class(name)
    fields = dict(kl_coef=beta, total_episodes=episodes, seed=seed, checkpoint_every=0)
    cfg = cls.config_class(**{**fields, **overrides})
    start = time.perf_counter()
    trained = cls(cfg)
    trained.train()
    wall = time.perf_counter() - start
    result = evaluate(
        ENV_ID,
        policy=trained.policy,
        episodes=eval_episodes,
        num_envs=min(64, eval_episodes),
        seed=10_000 + seed,
        prompts=prompts,
    )
    scores, kls = np.asarray(result.scores), np.asarray(result.kls)
    j = scores - beta * kls
    return {
        "agent": agent,
        "beta": beta,
        "J": float(j.mean()),
        "J_se": float(j.std() / math.sqrt(len(j))),
        "score": float(scores.mean()),
        "gold": float(np.mean(result.gold_scores)),
        "kl": float(kls.mean()),
        "kl_std": float(kls.std()),
        "kl_q99": float(np.quantile(kls, 0.99)),
        "train_s": wall,
    }


def pool_job(samples: int, seed: int, prompts: str = PROMPTS) -> dict:
    """The reference pool on the held-out prompts, as lists (picklable)."""
    _quiet()
    from rlhf_gym.frontier import reference_pool

    pool = reference_pool(ENV_ID, samples, seed=20_000 + seed, prompts=prompts)
    gold = None if pool.gold is None else pool.gold.tolist()
    return {"scores": pool.scores.tolist(), "gold": gold}


def as_pool(lists: dict) -> object:
    """:func:`pool_job`'s lists as a :class:`rlhf_gym.frontier.ReferencePool`."""
    from rlhf_gym.frontier import ReferencePool

    gold = lists["gold"]
    return ReferencePool(np.asarray(lists["scores"]), None if gold is None else np.asarray(gold))


def summarise(runs: list[dict], pool_lists: dict, betas: list[float], agents: list[str]) -> dict:
    """Per β: each agent's J, best-of-n's, the optimum's estimate and the reference's."""
    from rlhf_gym.frontier import best_of_n_objective, tilted

    pool = as_pool(pool_lists)
    ns = range(1, min(16, pool.samples_per_prompt) + 1)
    out: dict = {}
    for beta in betas:
        row: dict = {}
        for run in runs:
            if run["beta"] == beta:
                key = KEYS.get(run["agent"], run["agent"])
                row.update({f"{key}_{k}": v for k, v in run.items() if k not in ("agent", "beta")})
        bon = best_of_n_objective(pool, beta, ns)
        opt = tilted(pool, beta, bootstrap=200)
        row.update(
            best_of_n_J=bon["J"],
            best_of_n_n=bon["n"],
            optimum_J=opt["J"],
            optimum_J_se=opt["J_se"],
            optimum_J_half=opt["J_half"],
            optimum_score=opt["score"],
            optimum_kl=opt["kl"],
            optimum_gold=opt["gold"],
            reference_J=float(pool.scores.mean()),
        )
        out[str(beta)] = row
    return out


def table(summary: dict, agents: list[str]) -> str:
    keys = [KEYS.get(a, a) for a in agents]
    head = ["β", *(f"{LABELS.get(a, a)} J (score, KL)" for a in agents)]
    head += ["best-of-n J (n)", "optimum J (half pool)", "reference J"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for beta, row in summary.items():
        cells = [beta]
        for key in keys:
            cells.append(
                f"{row[f'{key}_J']:+.3f} ± {row[f'{key}_J_se']:.3f} "
                f"({row[f'{key}_score']:+.2f}, {row[f'{key}_kl']:.2f})"
            )
        cells.append(f"{row['best_of_n_J']:+.3f} ({row['best_of_n_n']})")
        cells.append(
            f"{row['optimum_J']:+.3f} ± {row['optimum_J_se']:.3f} ({row['optimum_J_half']:+.3f})"
        )
        cells.append(f"{row['reference_J']:+.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: dict, pool_lists: dict, agents: list[str], path: Path) -> None:
    """Score and gold against KL: agents per β, best-of-n, the tilted reference's frontier."""
    from matplotlib.figure import Figure

    from rlhf_gym.frontier import best_of_n, frontier_curve

    pool = as_pool(pool_lists)
    curve = frontier_curve(pool)
    bon = [best_of_n(pool, n) for n in range(1, min(16, pool.samples_per_prompt) + 1)]
    fig = Figure(figsize=(12, 4.8))
    axes = fig.subplots(1, 2)
    markers = {"ppo": "o", "qlearning": "^"}
    for ax, what in zip(axes, ("score", "gold"), strict=True):
        m = pool.samples_per_prompt
        ax.plot(
            [p["kl"] for p in curve],
            [p[what] for p in curve],
            "k-",
            lw=1.5,
            label=f"optimum: reference tilted by exp(score/β), {m} samples/prompt",
        )
        ax.plot(
            [p["kl"] for p in bon],
            [p[what] for p in bon],
            "k--",
            marker="s",
            ms=3,
            alpha=0.6,
            label="best-of-n, n = 1…16 (KL bound)",
        )
        for k, (beta, row) in enumerate(summary.items()):
            color = f"C{k}"
            ax.plot(
                row["optimum_kl"],
                row[f"optimum_{what}"],
                "*",
                color=color,
                ms=13,
                mec="k",
                label=f"optimum at β = {beta}",
            )
            for agent in agents:
                key = KEYS.get(agent, agent)
                if f"{key}_kl" in row:
                    ax.plot(
                        row[f"{key}_kl"],
                        row[f"{key}_{what}"],
                        markers.get(agent, "D"),
                        color=color,
                        ms=8,
                        mec="k",
                        label=f"{LABELS.get(agent, agent)}, β = {beta}",
                    )
        ax.set(xlabel="KL(π ‖ π_ref), nats per response", ylabel=f"held-out mean {what}")
        ax.grid(alpha=0.3)
    axes[0].set_title("(a) reward-model score against KL")
    axes[1].set_title("(b) gold score against KL")
    axes[1].legend(fontsize=6.5, loc="lower right", ncol=2)
    fig.suptitle("RLHF-v0: agents at four KL coefficients β against the optimum of their objective")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--betas", default="0.05,0.1,0.3,1.0")
    parser.add_argument(
        "--agents",
        default="ppo,qlearning",
        help="comma-separated; a variant changes defaults: ppo:kl_estimator=k1:anneal_lr=False",
    )
    parser.add_argument("--episodes", type=int, default=4096)
    parser.add_argument("--eval-episodes", type=int, default=512)
    parser.add_argument("--pool", type=int, default=64, help="reference samples per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--prompts",
        default=PROMPTS,
        help="prompts of the evaluation and the reference pool: the held-out set, or "
        "'sentiment' (the training prompts: is a gap to best-of-n one of generalisation?)",
    )
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/frontier.json"))
    parser.add_argument("--figure", default=str(ROOT / "docs/frontier.png"))
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    args = parser.parse_args()
    betas = [float(b) for b in args.betas.split(",")]
    agents = args.agents.split(",")
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool_exec:
        pool_future = pool_exec.submit(pool_job, args.pool, args.seed, args.prompts)
        futures = [
            pool_exec.submit(
                train_and_eval, a, b, args.episodes, args.eval_episodes, args.seed, args.prompts
            )
            for b in betas
            for a in agents
        ]
        runs = [f.result() for f in futures]
        pool_lists = pool_future.result()
    summary = summarise(runs, pool_lists, betas, agents)
    result = {
        "env": ENV_ID,
        "prompts": args.prompts,
        "episodes": args.episodes,
        "eval_episodes": args.eval_episodes,
        "pool_samples_per_prompt": args.pool,
        "seed": args.seed,
        "wall_s": time.perf_counter() - start,
        "betas": summary,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    plot(summary, pool_lists, agents, Path(args.figure))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(table(summary, agents))
        print(f"wall time {result['wall_s']:.0f} s; {args.out}; {args.figure}")


if __name__ == "__main__":
    main()
