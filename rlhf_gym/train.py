"""``rlhf-gym train``: run an agent with logging, checkpoints, resume and a final summary.

The run directory is ``<logdir>/<env>__<agent>__<seed>__<unix time>`` and holds the TensorBoard
event file and ``checkpoints/`` (see :mod:`rlhf_gym.agents.checkpoint`). Checkpoints are
written every ``checkpoint_every`` updates, at the end, and on Ctrl-C.

What ``train`` needs of an agent class (:data:`rlhf_gym.agents.AGENTS` maps ``--agent``
names to agent classes):

* ``Agent.config_class``: its config dataclass, a subclass of
  :class:`~rlhf_gym.agents.config.AgentConfig` (``env_id``, ``seed``, ``checkpoint_every``,
  ``num_updates``, ``env_kwargs()``) with a ``temperature`` field; its fields carry
  ``metadata["help"]`` (the CLI options are generated from them);
* ``Agent(cfg, writer=SummaryWriter | None, env_kwargs=dict | None)``;
* ``agent.train(callback)`` runs the remaining updates and calls ``callback(agent, stats)``
  after each; ``agent.update_idx``, ``agent.episodes_seen``, ``agent.agent_name``;
* ``agent.policy`` (a Hugging Face causal LM), ``agent.env`` (the unwrapped environment: its
  tokenizer is saved with the policy), ``agent.state_dict()`` / ``agent.load_state_dict()`` for
  everything but the policy weights: tensors, numbers, strings, ``None`` and lists, tuples and
  dicts of them (what :func:`rlhf_gym.agents.checkpoint.flatten` stores without pickle).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlhf_gym.agents import AGENTS, agent_class, checkpoint, distributed, tags
from rlhf_gym.agents.config import config_field as _f
from rlhf_gym.agents.config import heldout_prompts
from rlhf_gym.evaluate import evaluate

__all__ = ["AGENTS", "RunOptions", "train"]


@dataclass
class RunOptions:
    """What ``rlhf-gym train`` adds to the agent's config (its options come from here)."""

    logdir: str = _f("runs", "TensorBoard runs and checkpoints go here")
    resume: str | None = _f(None, "checkpoint, checkpoints/ or run directory to continue")
    allow_pickle: bool = _f(
        False,
        "resume from an old checkpoint whose trainer state is a pickle (trainer_state.pt): "
        "unpickling runs any code in the file, so only for checkpoints you trust",
    )
    eval_episodes: int = _f(128, "held-out episodes for the before/after summary")


def train(
    agent_name: str,
    cfg: Any,
    logdir: str | Path = RunOptions.logdir,
    resume: str | None = RunOptions.resume,
    eval_episodes: int = RunOptions.eval_episodes,
    allow_pickle: bool = RunOptions.allow_pickle,
    quiet: bool = False,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build, optionally resume, train, checkpoint and summarise one run. Returns the summary.

    ``env_kwargs`` are extra ``gym.make_vec`` arguments (paths of a reward model, prompts …).
    ``allow_pickle`` lets ``resume`` unpickle an old ``trainer_state.pt`` (trusted files only).
    """
    from rlhf_gym.cli import check_output_path

    agent_cls = agent_class(agent_name)
    check_output_path(logdir, "--logdir", "directory")
    world, main = distributed.world_size(), distributed.is_main_process()
    if world > 1 and not getattr(agent_cls, "multi_process", False):
        raise ValueError(
            f"--agent {agent_name} trains in one process, but this run was launched with "
            f"{world} (WORLD_SIZE); multi-process training is PPO's (--agent ppo)"
        )
    quiet = quiet or not main  # rank 0 alone prints, logs, checkpoints and evaluates
    out = (lambda *a: None) if quiet else print
    run_dir = Path(logdir) / f"{cfg.env_id}__{agent_name}__{cfg.seed}__{int(time.time())}"
    if resume is not None:
        resumed_from = checkpoint.resolve(resume, allow_pickle=allow_pickle)
        run_dir = resumed_from.parent.parent  # keep writing into the same run
    writer = make_writer(run_dir) if main else None
    agent = agent_cls(cfg, writer=writer, env_kwargs=env_kwargs)
    if resume is not None:
        checkpoint.load(resumed_from, agent, allow_pickle=allow_pickle)
        out(f"resumed from {resumed_from} at update {agent.update_idx}")
    out(f"run directory: {run_dir}")
    before = None
    if main and agent.update_idx == 0:
        before = held_out(cfg, None, eval_episodes, env_kwargs)
    final = _train_with_checkpoints(agent, agent_name, cfg, run_dir, writer, quiet)
    if not main:
        return {"run_dir": str(run_dir), "rank": distributed.rank()}
    after = held_out(cfg, agent.policy, eval_episodes, env_kwargs)
    summary = {
        "run_dir": str(run_dir),
        "checkpoint": str(final),
        "config": asdict(cfg),
        "before": before.summary() if before else None,
        "after": after.summary(),
        "samples_before": before.samples[:3] if before else [],
        "samples_after": after.samples[:3],
    }
    if not quiet:
        print_summary(summary)
    return summary


def _train_with_checkpoints(
    agent: Any, agent_name: str, cfg: Any, run_dir: Path, writer: Any, quiet: bool
) -> Path:
    """``agent.train`` with a progress bar and checkpoints (also on Ctrl-C); the last one.
    Checkpoints are written by rank 0 alone (``writer`` is ``None`` on the other ranks)."""
    progress = None if quiet else progress_bar(cfg.num_updates, agent.update_idx)
    save = distributed.is_main_process()
    final = Path(run_dir) / "checkpoints"

    def after_update(a: Any, stats: dict[str, float]) -> None:
        if progress is not None:
            progress.set_postfix_str(
                f"score {stats.get(tags.SCORES, 0):+.3f} kl {stats.get(tags.KL, 0):.3f}",
                refresh=False,  # update() redraws
            )
            progress.update(1)
        if save and cfg.checkpoint_every and a.update_idx % cfg.checkpoint_every == 0:
            checkpoint.save(run_dir, a)

    try:
        agent.train(callback=after_update)
    except KeyboardInterrupt:
        if not save:
            raise
        path = checkpoint.save(run_dir, agent)
        print(
            f"\ninterrupted: checkpoint written to {path}; continue with "
            f"`rlhf-gym train --agent {agent_name} --resume {path}`",
            file=sys.stderr,
        )
        raise
    finally:
        if progress is not None:
            progress.close()
        if writer is not None:
            writer.close()
    return checkpoint.save(run_dir, agent) if save else final


def progress_bar(total: int, start_at: int = 0) -> Any:
    """A tqdm bar on stderr over the updates (live score and KL as its postfix)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start_at, unit="update", file=sys.stderr, dynamic_ncols=True)


def make_writer(run_dir: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``run_dir`` (a clear error if TensorBoard is missing)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "rlhf-gym train logs to TensorBoard: pip install 'rlhf-gym[tensorboard]'"
        ) from e
    return SummaryWriter(str(run_dir))


def held_out(cfg: Any, policy: Any, episodes: int, env_kwargs: dict[str, Any] | None) -> Any:
    """:func:`rlhf_gym.evaluate.evaluate` of ``policy`` (``None``: the reference) on the task's
    held-out prompts, with the config's environment and temperature."""
    # The held-out env is the evaluation's own: its KL is exact and its reference steps along
    # (the reference baseline samples from it), whatever the training env used.
    kw = {k: v for k, v in cfg.env_kwargs().items() if k not in ("kl_estimator", "reference_pass")}
    prompts = heldout_prompts(cfg.env_id)
    if prompts is not None:
        kw["prompts"] = prompts
    kw.update(env_kwargs or {})
    return evaluate(
        cfg.env_id,
        policy=policy,
        episodes=episodes,
        num_envs=min(64, episodes),
        seed=10_000 + cfg.seed,
        temperature=cfg.temperature,
        **kw,
    )


def mean_std(stats: dict | None, key: str) -> str:
    """``mean ± std`` of one quantity of an evaluation summary, or "-"."""
    if not stats or key not in stats:
        return "-"
    return f"{stats[key]['mean']:+.3f} ± {stats[key]['std']:.3f}"


def print_summary(summary: dict[str, Any]) -> None:
    """The held-out before/after table, a few samples, and the final checkpoint."""
    before, after = summary["before"], summary["after"]
    print(f"\n{'held-out':<16} {'before':>16} {'after':>16}")
    for key in ("score", "gold_score", "kl", "response_length"):
        if key in after:
            print(f"{key:<16} {mean_std(before, key):>16} {mean_std(after, key):>16}")
    groups = (("before", summary["samples_before"]), ("after", summary["samples_after"]))
    for title, samples in groups:
        if samples:
            print(f"\nsamples {title}:")
            for prompt, response, score in samples:
                print(f"  [{score:+.2f}] {prompt}|{response}")
    print(f"\ncheckpoint: {summary['checkpoint']}")
