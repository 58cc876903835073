"""``rlhf-gym train``: run an agent with logging, checkpoints, resume and a final summary.

The run directory is ``<logdir>/<env>__<agent>__<seed>__<unix time>`` and holds the TensorBoard
event file and ``checkpoints/`` (see :mod:`rlhf_gym.agents.checkpoint`). Checkpoints are
written every ``checkpoint_every`` updates, at the end, and on Ctrl-C.

What ``train`` needs of an agent class (``AGENTS`` maps ``--agent`` names to
``(agent class, config dataclass)``):

* the config dataclass has ``env_id``, ``seed``, ``temperature``, ``checkpoint_every``, a
  ``num_updates`` property and ``env_kwargs()``; its fields carry ``metadata["help"]`` (the CLI
  options are generated from them);
* ``Agent(cfg, writer=SummaryWriter | None, env_kwargs=dict | None)``;
* ``agent.train(callback)`` runs the remaining updates and calls ``callback(agent, stats)``
  after each; ``agent.update_idx``, ``agent.episodes_seen``, ``agent.agent_name``;
* ``agent.policy`` (a Hugging Face causal LM), ``agent.core`` (the env engine: its tokenizer),
  ``agent.state_dict()`` / ``agent.load_state_dict()`` for everything but the policy weights.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlhf_gym.agents import checkpoint, tags
from rlhf_gym.agents.common import heldout_prompts
from rlhf_gym.agents.ppo import PPO, PPOConfig
from rlhf_gym.agents.soft_q import SoftQ, SoftQConfig

AGENTS: dict[str, tuple[type, type]] = {"ppo": (PPO, PPOConfig), "qlearning": (SoftQ, SoftQConfig)}
try:  # Stable-Baselines3 is optional: pip install 'rlhf-gym[sb3]'
    from rlhf_gym.agents.sb3 import SB3DQN, SB3PPO, SB3DQNConfig, SB3PPOConfig

    AGENTS.update({"sb3-ppo": (SB3PPO, SB3PPOConfig), "sb3-dqn": (SB3DQN, SB3DQNConfig)})
except ImportError:  # pragma: no cover - depends on the install
    pass


class Progress:
    """A one-line progress bar on stderr: update, live mean score and KL, elapsed<remaining."""

    def __init__(self, total: int, start_at: int = 0, stream: Any = sys.stderr) -> None:
        self.total, self.start_at, self.stream = total, start_at, stream
        self.t0 = time.perf_counter()

    @staticmethod
    def _clock(seconds: float) -> str:
        m, s = divmod(int(seconds), 60)
        return f"{m:02d}:{s:02d}"

    def __call__(self, done: int, stats: dict[str, float]) -> None:
        elapsed = time.perf_counter() - self.t0
        rate = elapsed / max(done - self.start_at, 1)
        width = 24
        filled = int(width * done / self.total)
        bar = "#" * filled + "-" * (width - filled)
        line = (
            f"\r[{bar}] {done}/{self.total} score {stats.get(tags.SCORES, 0):+.3f} "
            f"kl {stats.get(tags.KL, 0):.3f} {self._clock(elapsed)}<"
            f"{self._clock(rate * (self.total - done))}"
        )
        self.stream.write(line)
        if done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def run_dir_for(logdir: str | Path, cfg: Any, agent: str) -> Path:
    return Path(logdir) / f"{cfg.env_id}__{agent}__{cfg.seed}__{int(time.time())}"


def make_writer(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "rlhf-gym train logs to TensorBoard: pip install 'rlhf-gym[tensorboard]'"
        ) from e
    return SummaryWriter(str(run_dir))


def train(
    agent_name: str,
    cfg: Any,
    logdir: str | Path = "runs",
    resume: str | None = None,
    eval_episodes: int = 128,
    quiet: bool = False,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build, optionally resume, train, checkpoint and summarise one run. Returns the summary.

    ``env_kwargs`` are extra ``gym.make_vec`` arguments (paths of a reward model, prompts …).
    """
    if agent_name not in AGENTS:
        raise ValueError(f"--agent {agent_name!r} is not one of {sorted(AGENTS)}")
    agent_cls, _ = AGENTS[agent_name]
    out = (lambda *a: None) if quiet else print  # noqa: E731
    run_dir = run_dir_for(logdir, cfg, agent_name)
    if resume is not None:
        resumed_from = checkpoint.resolve(resume)
        run_dir = resumed_from.parent.parent  # keep writing into the same run
    writer = make_writer(run_dir)
    agent = agent_cls(cfg, writer=writer, env_kwargs=env_kwargs)
    if resume is not None:
        checkpoint.load(resumed_from, agent)
        out(f"resumed from {resumed_from} at update {agent.update_idx}")
    out(f"run directory: {run_dir}")
    before = _evaluate(cfg, None, eval_episodes, env_kwargs) if agent.update_idx == 0 else None
    progress = Progress(cfg.num_updates, agent.update_idx, stream=sys.stderr)

    def after_update(a: Any, stats: dict[str, float]) -> None:
        if not quiet:
            progress(a.update_idx, stats)
        if cfg.checkpoint_every and a.update_idx % cfg.checkpoint_every == 0:
            checkpoint.save(run_dir, a)

    try:
        agent.train(callback=after_update)
    except KeyboardInterrupt:
        path = checkpoint.save(run_dir, agent)
        writer.close()
        print(
            f"\ninterrupted: checkpoint written to {path}; continue with "
            f"`rlhf-gym train --agent {agent_name} --resume {path}`",
            file=sys.stderr,
        )
        raise
    final = checkpoint.save(run_dir, agent)
    writer.close()
    after = _evaluate(cfg, agent.policy, eval_episodes, env_kwargs)
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


def _evaluate(cfg: Any, policy: Any, episodes: int, env_kwargs: dict[str, Any] | None) -> Any:
    from rlhf_gym.evaluate import evaluate

    kw = {k: v for k, v in cfg.env_kwargs().items() if k not in ("kl_estimator",)}
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


def _cell(stats: dict | None, key: str) -> str:
    """``mean ± std`` of one quantity of an evaluation summary, or "-"."""
    if not stats or key not in stats:
        return "-"
    return f"{stats[key]['mean']:+.3f} ± {stats[key]['std']:.3f}"


def print_summary(summary: dict[str, Any]) -> None:
    before, after = summary["before"], summary["after"]
    print(f"\n{'held-out':<16} {'before':>16} {'after':>16}")
    for key in ("score", "gold_score", "kl", "response_length"):
        if key in after:
            print(f"{key:<16} {_cell(before, key):>16} {_cell(after, key):>16}")
    groups = (("before", summary["samples_before"]), ("after", summary["samples_after"]))
    for title, samples in groups:
        if samples:
            print(f"\nsamples {title}:")
            for prompt, response, score in samples:
                print(f"  [{score:+.2f}] {prompt}|{response}")
    print(f"\ncheckpoint: {summary['checkpoint']}")
