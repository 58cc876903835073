"""``rlhf-gym compare``: agents on the same environment, budget and seeds; a figure and a table.

Each agent named in ``--agents`` (any name ``rlhf-gym train --agent`` accepts) is trained once
per seed ``0 … seeds−1`` through :func:`rlhf_gym.train.train`, with the same number of
episodes (``--total-episodes``, a multiple of ``--num-envs``, so every agent sees exactly that
many responses) and each agent's own defaults otherwise. Final numbers are
:func:`rlhf_gym.evaluate.evaluate` on the task's held-out prompts (the summary ``train``
writes: score, gold score, exact KL from the reference). The reference itself, best-of-n
sampling from it and the optimum of the KL-regularised objective give the points to beat, all
from one pool of ``--optimum-samples`` reference samples per held-out prompt
(:mod:`rlhf_gym.frontier`): best-of-n's KL from the reference is the bound
``log n − (n − 1)/n`` (Stiennon et al. 2020, appendix; Hilton & Gao 2022); the optimum at β
is the reference tilted by ``exp(score/β)``, and over all β those tilted policies trace the
best score any policy reaches at each KL (known up to ``log m`` nats from ``m`` samples).

Written into ``--out DIR``::

    runs/          the TensorBoard runs and checkpoints, one per agent and seed
    compare.png    (a) mean training score against env steps, band ± std over seeds;
                   (b) held-out score against KL from the reference (reward–KL frontier),
                   best-of-n points and the optimum's curve for reference
    results.csv    one row per agent, reference, best-of-n and the optimum at each agent's
                   β: mean and std over seeds
    results.md     the same table in Markdown (also printed)
    runs.csv       one row per agent and seed

Example:
    ``rlhf-gym compare --agents ppo,qlearning --seeds 3 --out compare/`` (the defaults took
    9 min 48 s on a busy shared 2-core CPU machine, one torch thread), or::

        >>> from rlhf_gym.compare import CompareConfig, compare
        >>> cc = CompareConfig(env_id="RLHFToy-v0", total_episodes=32, num_envs=16, seeds=1,
        ...                    eval_episodes=16, out="/tmp/cmp")
        >>> result = compare(cc)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rlhf_gym import frontier
from rlhf_gym.agents import AGENTS, config_class, tags
from rlhf_gym.agents.config import config_field as _f
from rlhf_gym.agents.config import heldout_prompts
from rlhf_gym.frontier import ReferencePool

DEFAULT_AGENTS = ("ppo", "qlearning")


@dataclass
class CompareConfig:
    """What ``rlhf-gym compare`` runs; the defaults fit 15 minutes on 2 CPU cores.

    The ``rlhf-gym compare`` options are generated from the fields that have help text.
    """

    agents: tuple[str, ...] = _f(
        DEFAULT_AGENTS, "comma-separated agent names (any that rlhf-gym train --agent takes)"
    )
    seeds: int = _f(3, "runs per agent, seeds 0 … seeds − 1")
    env_id: str = _f("RLHF-v0", "a registered environment id")
    total_episodes: int = _f(
        2048, "episodes (responses) per run, the budget: a multiple of --num-envs"
    )
    num_envs: int = _f(64, "episodes per rollout / collection round, for every agent")
    eval_episodes: int = _f(128, "held-out episodes for each final evaluation")
    best_of: tuple[int, ...] = _f((1, 2, 4, 8, 16), "n of the best-of-n reference points")
    optimum_samples: int = _f(
        32,
        "reference samples per held-out prompt, for best-of-n (n up to it) and the optimum's "
        "curve (known up to log(it) nats)",
    )
    out: str | Path = _f("compare", "output directory")
    model: str = _f("default", "policy initialisation and reference (agents that take one)")
    device: str = _f("auto", "for every agent and evaluation: auto, cpu, cuda, cuda:N or mps")
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra ``gym.make_vec`` arguments (tests: a local reward model, prompts); not an option."""

    def __post_init__(self) -> None:
        self.agents = tuple(self.agents)
        if not self.agents:
            raise ValueError(f"--agents is empty; valid agents: {', '.join(sorted(AGENTS))}")
        unknown = [a for a in self.agents if a not in AGENTS]
        if unknown:
            raise ValueError(
                f"unknown agent {unknown[0]!r}; valid agents: {', '.join(sorted(AGENTS))}"
            )
        if len(set(self.agents)) != len(self.agents):
            raise ValueError(f"--agents names an agent twice: {','.join(self.agents)}")
        for name in ("seeds", "total_episodes", "num_envs", "eval_episodes", "optimum_samples"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.total_episodes % self.num_envs:
            near = max(1, round(self.total_episodes / self.num_envs)) * self.num_envs
            raise ValueError(
                f"total_episodes={self.total_episodes} must be a multiple of num_envs="
                f"{self.num_envs}, so that every agent trains on exactly the same number of "
                f"episodes (e.g. {near})"
            )
        self.best_of = tuple(sorted(set(self.best_of)))
        if not self.best_of or any(not (isinstance(n, int) and n >= 1) for n in self.best_of):
            raise ValueError(f"best_of must be positive integers, got {self.best_of!r}")
        if max(self.best_of) > self.optimum_samples:
            raise ValueError(
                f"best_of={max(self.best_of)} needs at least that many reference samples per "
                f"prompt; optimum_samples is {self.optimum_samples}"
            )
        try:
            gym.spec(self.env_id)
        except gym.error.Error as e:
            raise ValueError(f"env {self.env_id!r} is not registered ({e})") from e


@dataclass
class RunResult:
    """One agent trained with one seed."""

    agent: str
    seed: int
    score: float
    gold: float
    kl: float
    wall_s: float
    steps_per_s: float
    env_steps: int
    curve: tuple[np.ndarray, np.ndarray]  # (cumulative env steps, training mean score)
    reference: dict[str, Any] | None  # the held-out summary of the reference (train's "before")
    run_dir: str


# ---------------------------------------------------------------------- running
def agent_config(agent: str, cc: CompareConfig, seed: int) -> Any:
    """The agent's own config with the shared settings (env, budget, seed, device, model)."""
    config_cls = config_class(agent)
    names = {f.name for f in dataclasses.fields(config_cls)}
    if "total_episodes" not in names:
        raise ValueError(
            f"agent {agent!r}: its config has no total_episodes field, so compare "
            "cannot give it the same budget as the others"
        )
    shared = dict(
        env_id=cc.env_id,
        seed=seed,
        total_episodes=cc.total_episodes,
        num_envs=cc.num_envs,
        device=cc.device,
        model=cc.model,
    )
    return config_cls(**{k: v for k, v in shared.items() if k in names})


def run_one(agent: str, cc: CompareConfig, seed: int) -> RunResult:
    """Train one agent with one seed through :func:`rlhf_gym.train.train`; read its curve."""
    from rlhf_gym.train import train

    cfg = agent_config(agent, cc, seed)
    start = time.perf_counter()
    summary = train(
        agent,
        cfg,
        logdir=Path(cc.out) / "runs",
        eval_episodes=cc.eval_episodes,
        quiet=True,
        env_kwargs=cc.env_kwargs or None,
    )
    wall = time.perf_counter() - start
    steps, scores, sps = read_curve(summary["run_dir"])
    after = summary["after"]
    return RunResult(
        agent,
        seed,
        after["score"]["mean"],
        after["gold_score"]["mean"] if "gold_score" in after else math.nan,
        after["kl"]["mean"],
        wall,
        sps,
        int(steps[-1]),
        (steps, scores),
        summary["before"],
        summary["run_dir"],
    )


def read_curve(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray, float]:
    """``(cumulative env steps, mean training score, mean steps per second)`` of a run.

    Env steps per update are ``Δepisodes × mean response length`` (every response token is one
    environment step), from the run's TensorBoard scalars.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()

    def values(tag: str) -> np.ndarray:
        return np.array([e.value for e in sorted(acc.Scalars(tag), key=lambda e: e.step)])

    episodes = values(tags.EPISODES)
    per_update = np.diff(np.concatenate([[0.0], episodes])) * values(tags.RESPONSE_LENGTH)
    steps = np.rint(np.cumsum(per_update))
    return steps, values(tags.SCORES), float(np.mean(values(tags.STEPS_PER_SECOND)))


def eval_env_kwargs(cc: CompareConfig) -> dict[str, Any]:
    """The held-out environment of ``train``'s final evaluation, for the best-of-n pool."""
    prompts = heldout_prompts(cc.env_id)
    kw: dict[str, Any] = {}
    if prompts is not None:  # the toy fixes model, prompts and device
        kw = dict(model=cc.model, device=cc.device, prompts=prompts)
    return {**kw, **cc.env_kwargs}


def reference_pool(cc: CompareConfig, seed: int = 20_000) -> ReferencePool:
    """``optimum_samples`` reference samples per held-out prompt (the toy: its 2 prompts)."""
    return frontier.reference_pool(
        cc.env_id, cc.optimum_samples, seed=seed, num_envs=256, **eval_env_kwargs(cc)
    )


def best_of_n_points(cc: CompareConfig, pool: ReferencePool | None = None) -> list[dict[str, Any]]:
    """Best-of-n from the reference on the held-out prompts, for every ``n`` in ``best_of``:
    score, gold and the KL bound ``log n − (n − 1)/n``, averaged over every ``n``-subset of each
    prompt's samples (:func:`rlhf_gym.frontier.best_of_n`)."""
    pool = reference_pool(cc) if pool is None else pool
    return [{**frontier.best_of_n(pool, n), "prompts": len(pool.scores)} for n in cc.best_of]


def optimum_points(pool: ReferencePool, betas: list[float]) -> list[dict[str, Any]]:
    """The optimum of ``score − β·KL`` at each β (the pool tilted by ``exp(score/β)``)."""
    return [{"beta": b, **frontier.tilted(pool, b)} for b in betas]


# ---------------------------------------------------------------------- the table
COLUMNS = (
    ("score", "final score"),
    ("gold", "gold score"),
    ("kl", "KL"),
    ("wall_s", "wall time (s)"),
    ("steps_per_s", "steps/s"),
)


def table_rows(
    results: list[RunResult],
    bon: list[dict[str, float]],
    optimum: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per agent (mean and std over seeds), then the reference, best-of-n and the
    optimum at each β of ``optimum``."""
    rows = []
    for agent in dict.fromkeys(r.agent for r in results):
        mine = [r for r in results if r.agent == agent]
        row: dict[str, Any] = {
            "name": agent,
            "seeds": len(mine),
            "env_steps": int(np.mean([r.env_steps for r in mine])),
        }
        for key, _ in COLUMNS:
            vals = np.array([getattr(r, key) for r in mine], dtype=float)
            row[key] = _mean_std(vals)
        rows.append(row)
    refs = [r.reference for r in results if r.reference]
    if refs:
        row = {
            "name": "reference",
            "seeds": len(refs),
            "env_steps": 0,
            "score": _mean_std([x["score"]["mean"] for x in refs]),
            "kl": (0.0, 0.0),
        }
        if "gold_score" in refs[0]:
            row["gold"] = _mean_std([x["gold_score"]["mean"] for x in refs])
        rows.append(row)
    rows += [_point_row(f"best-of-{p['n']}", p) for p in bon]
    rows += [_point_row(f"optimum at β={p['beta']:g}", p) for p in optimum or []]
    return rows


def _point_row(name: str, point: dict[str, Any]) -> dict[str, Any]:
    """A table row for one reference-derived point (no spread): score, gold and KL."""
    row: dict[str, Any] = {"name": name, "seeds": 1, "env_steps": 0}
    return row | {k: (point[k], math.nan) for k in ("score", "gold", "kl")}


def _mean_std(values: Any) -> tuple[float, float]:
    """Mean and std over the seeds' values; the std is NaN (the table then shows the mean
    alone) when fewer than two values are known: one seed has no spread to report."""
    vals = np.asarray(values, dtype=float)
    known = vals[~np.isnan(vals)]
    if known.size == 0:
        return math.nan, math.nan
    return float(known.mean()), float(known.std()) if known.size >= 2 else math.nan


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """A CSV file: the header, then the rows."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def write_tables(rows: list[dict[str, Any]], out: Path) -> str:
    """Write ``results.csv`` and ``results.md``; return the Markdown text."""
    stats = [f"{k}_{s}" for k, _ in COLUMNS for s in ("mean", "std")]
    lines_csv = []
    for row in rows:
        cells = [c for k, _ in COLUMNS for c in row.get(k, (math.nan, math.nan))]
        numbers = ["" if math.isnan(c) else f"{c:.6g}" for c in cells]
        lines_csv.append([row["name"], row["seeds"], row["env_steps"], *numbers])
    write_csv(out / "results.csv", ["name", "seeds", "env_steps", *stats], lines_csv)
    head = "| | " + " | ".join(title for _, title in COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 1) + "|"]
    for row in rows:
        cells = [table_cell(row.get(k), k) for k, _ in COLUMNS]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    return text


def table_cell(value: tuple[float, float] | None, key: str) -> str:
    """``mean ± std`` of a table column (``mean`` alone for one-off points, "–" if none)."""
    if value is None or math.isnan(value[0]):
        return "–"
    digits = 0 if key in ("wall_s", "steps_per_s") else 3
    mean, std = value
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def write_runs(results: list[RunResult], out: Path) -> None:
    """``runs.csv``: one row per agent and seed."""
    header = ["agent", "seed", "score", "gold", "kl", "wall_s", "steps_per_s", "env_steps"]
    rows = [
        [r.agent, r.seed, f"{r.score:.6g}", f"{r.gold:.6g}", f"{r.kl:.6g}"]
        + [f"{r.wall_s:.1f}", f"{r.steps_per_s:.1f}", r.env_steps, r.run_dir]
        for r in results
    ]
    write_csv(out / "runs.csv", [*header, "run_dir"], rows)


# ---------------------------------------------------------------------- the figure
def plot(
    results: list[RunResult],
    bon: list[dict[str, float]],
    title: str,
    path: Path,
    curve: list[dict[str, float]] | None = None,
) -> None:
    """(a) score against env steps, mean ± std over seeds; (b) final score against KL, with
    best-of-n and the optimum's ``curve`` (:func:`rlhf_gym.frontier.frontier_curve`).

    Drawn on a bare :class:`matplotlib.figure.Figure` (no pyplot): the caller's backend, e.g. a
    notebook's inline one, is left as it was, and no display is needed.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5))
    ax_a, ax_b = fig.subplots(1, 2)
    agents = list(dict.fromkeys(r.agent for r in results))
    for k, agent in enumerate(agents):
        mine = [r for r in results if r.agent == agent]
        _plot_agent(ax_a, ax_b, agent, mine, color=f"C{k}")
    if bon:
        _plot_best_of_n(ax_b, bon)
    if curve:
        ax_b.plot(
            [p["kl"] for p in curve],
            [p["score"] for p in curve],
            "k-",
            lw=1.2,
            label="optimum (reference tilted by exp(score/β))",
        )
    ax_a.set(
        xlabel="env steps (response tokens)",
        ylabel="mean score of the rollouts",
        title="(a) training score",
    )
    ax_b.set(
        xlabel="KL(π ‖ π_ref), nats per response",
        ylabel="held-out mean score",
        title="(b) reward–KL frontier",
    )
    for ax in (ax_a, ax_b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _plot_agent(ax_a: Any, ax_b: Any, agent: str, mine: list[RunResult], color: str) -> None:
    """One agent's training band on (a) and its runs and mean ± std on (b)."""
    # the steps every seed covers: from its latest first update to its earliest last one
    grid = np.linspace(max(r.curve[0][0] for r in mine), min(r.curve[0][-1] for r in mine), 100)
    ys = np.stack([np.interp(grid, *r.curve) for r in mine])
    mean, std = ys.mean(0), ys.std(0)
    ax_a.plot(grid, mean, color=color, label=f"{agent} ({len(mine)} seeds)")
    ax_a.fill_between(grid, mean - std, mean + std, color=color, alpha=0.2)
    kl, score = np.array([r.kl for r in mine]), np.array([r.score for r in mine])
    ax_b.scatter(kl, score, color=color, alpha=0.4, s=18)
    ax_b.errorbar(
        kl.mean(),
        score.mean(),
        xerr=kl.std(),
        yerr=score.std(),
        color=color,
        marker="o",
        markersize=8,
        capsize=3,
        label=agent,
    )


def _plot_best_of_n(ax: Any, bon: list[dict[str, float]]) -> None:
    """The best-of-n points from the reference, joined and labelled with n."""
    ax.plot(
        [p["kl"] for p in bon],
        [p["score"] for p in bon],
        "k--",
        marker="s",
        markersize=4,
        alpha=0.7,
        label="best-of-n (reference)",
    )
    for p in bon:
        ax.annotate(
            f"n={p['n']}",
            (p["kl"], p["score"]),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=8,
        )


# ---------------------------------------------------------------------- the command
def compare(cc: CompareConfig, log: Any = print) -> dict[str, Any]:
    """Run every agent for every seed, then write the figure and the tables under ``cc.out``.

    Returns:
        ``{"results": [RunResult …], "best_of": [...], "table": markdown, "paths": {...}}``.
    """
    from transformers.utils import logging as hf_logging

    from rlhf_gym.cli import check_output_path

    hf_logging.disable_progress_bar()  # dozens of model loads and saves: keep the log readable
    check_output_path(cc.out, "--out", "directory")
    out = Path(cc.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for agent in cc.agents:
        for seed in range(cc.seeds):
            log(f"[{agent} seed {seed}] training on {cc.env_id}, {cc.total_episodes} episodes …")
            r = run_one(agent, cc, seed)
            log(
                f"[{agent} seed {seed}] score {r.score:+.3f}  KL {r.kl:.3f}  "
                f"{r.wall_s:.0f}s  {r.steps_per_s:.0f} steps/s"
            )
            results.append(r)
    log(
        f"reference pool ({cc.optimum_samples} samples per held-out prompt): best-of-n "
        f"(n = {', '.join(map(str, cc.best_of))}) and the optimum …"
    )
    pool = reference_pool(cc)
    bon = best_of_n_points(cc, pool)
    betas = sorted({float(getattr(agent_config(a, cc, 0), "kl_coef", 0.0)) for a in cc.agents})
    optimum = optimum_points(pool, [b for b in betas if b > 0])
    write_runs(results, out)
    table = write_tables(table_rows(results, bon, optimum), out)
    title = (
        f"{cc.env_id}: {', '.join(cc.agents)}; {cc.total_episodes} episodes per run, "
        f"{cc.seeds} seed{'s' if cc.seeds > 1 else ''}"
    )
    plot(results, bon, title, out / "compare.png", frontier.frontier_curve(pool))
    paths = {
        name: str(out / name)
        for name in ("compare.png", "results.csv", "results.md", "runs.csv", "runs")
    }
    return {
        "results": results,
        "best_of": bon,
        "optimum": optimum,
        "table": table,
        "paths": paths,
    }
