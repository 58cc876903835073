"""``rlhf-gym reward simulate | train | eval``: preference data and reward models.

::

    rlhf-gym reward simulate --task sentiment --pairs N --out prefs.jsonl   # labels from gold
    rlhf-gym reward train --data prefs.jsonl --out DIR [--base MODEL]
    rlhf-gym reward eval --reward-model DIR --data prefs.jsonl [--json]

The result of ``reward train`` is a Hugging Face directory that ``gym.make("RLHF-v0",
reward_model=DIR)`` and ``rlhf-gym train --reward-model DIR`` take as it is, with
``reward_model.json`` beside the weights (data report, training result, normalisation).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlhf_gym.agents.config import config_field as _f
from rlhf_gym.feedback.records import FORMATS
from rlhf_gym.feedback.simulate import TASK_ENVS, SimulateConfig
from rlhf_gym.feedback.trainer import RewardTrainConfig

NORMALISE = ("policy", "data", "none")


@dataclass
class TrainCommand:
    """What ``rlhf-gym reward train`` adds to :class:`RewardTrainConfig`."""

    data: str | None = _f(None, "preference JSONL to train on (required)")
    out: str | None = _f(None, "directory to write the reward model to (required)")
    base: str = _f(
        "default", "model to start from: default (the task's embedded LM), a path or hub name"
    )
    format: str = _f("auto", f"format of --data: {', '.join(FORMATS)}")
    heldout_data: str | None = _f(None, "preference JSONL to hold out instead of a split of --data")
    task: str = _f("sentiment", f"task whose prompts normalise the scores: {', '.join(TASK_ENVS)}")
    policy: str | None = _f(None, "policy whose samples normalise the scores (default: reference)")
    normalise: str = _f("policy", f"scores to mean 0 / std 1 on: {', '.join(NORMALISE)}")
    norm_samples: int = _f(512, "samples used by --normalise policy")
    logdir: str = _f("runs", "TensorBoard runs go here")
    device: str = _f("cpu", "auto, cpu, cuda, cuda:N or mps")

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad option."""
        if not self.data:
            raise ValueError("--data is required: the preference JSONL to train on")
        if not self.out:
            raise ValueError("--out is required: the directory to write the reward model to")
        if self.format not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}; got {self.format!r}")
        if self.normalise not in NORMALISE:
            raise ValueError(
                f"--normalise must be one of {', '.join(NORMALISE)}; got {self.normalise!r}"
            )
        if self.task not in TASK_ENVS:
            raise ValueError(f"--task must be one of {', '.join(TASK_ENVS)}; got {self.task!r}")
        if self.norm_samples < 2:
            raise ValueError(f"--norm-samples must be at least 2, got {self.norm_samples}")
        out = Path(self.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            if not (out / "reward_model.json").is_file():
                raise ValueError(
                    f"--out {self.out!r} exists and is not an earlier reward model: "
                    "choose a new or empty directory"
                )
        from rlhf_gym.cli import check_output_path

        check_output_path(self.out, "--out", "directory")
        check_output_path(self.logdir, "--logdir", "directory")


@dataclass
class EvalCommand:
    """``rlhf-gym reward eval``."""

    reward_model: str | None = _f(None, "reward model: directory, hub name or built-in (required)")
    data: str | None = _f(None, "preference JSONL to evaluate on (required)")
    format: str = _f("auto", f"format of --data: {', '.join(FORMATS)}")
    task: str | None = _f(
        None, "task whose gold labeler to correlate with (default: the one it was trained for)"
    )
    policy: str | None = _f(None, "policy whose samples the gold correlation uses (default: ref.)")
    gold_samples: int = _f(256, "samples for the gold correlation")
    device: str = _f("cpu", "auto, cpu, cuda, cuda:N or mps")
    seed: int = _f(0, "seed of the samples")


# ------------------------------------------------------------------------------ the parser
_SUBCOMMANDS = {
    "simulate": "sample pairs from a policy and label them with the task's gold labeler",
    "train": "train a reward model on preference data (Bradley-Terry)",
    "eval": "accuracy, margin, calibration and gold correlation of a reward model",
}


def add_reward_options(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """``simulate``, ``train`` and ``eval`` as sub-commands of ``rlhf-gym reward``."""
    from rlhf_gym.cli import add_options

    sub = parser.add_subparsers(dest="reward_command", required=True, metavar="COMMAND")
    for name, help_text in _SUBCOMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == "simulate":
            add_options(cmd, SimulateConfig, "simulation")
        elif name == "train":
            add_options(cmd, TrainCommand, "data and output")
            add_options(cmd, RewardTrainConfig, "training")
        else:
            add_options(cmd, EvalCommand, "evaluation")
            cmd.add_argument("--json", action="store_true", help="print one JSON object")


def run_reward(args: argparse.Namespace) -> int:
    """Run the chosen ``rlhf-gym reward`` sub-command; the exit status."""
    from rlhf_gym.cli import from_args

    if args.reward_command == "simulate":
        out = simulate_command(from_args(SimulateConfig, args))
        print(json.dumps(out, indent=2))
    elif args.reward_command == "train":
        train_command(from_args(TrainCommand, args), from_args(RewardTrainConfig, args))
    else:
        result = eval_command(from_args(EvalCommand, args))
        print(json.dumps(result) if args.json else eval_report(result))
    return 0


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ simulate
def simulate_command(cfg: SimulateConfig) -> dict[str, Any]:
    """``rlhf-gym reward simulate``."""
    from rlhf_gym.cli import check_output_path
    from rlhf_gym.feedback.simulate import simulate

    if not (isinstance(cfg.pairs, int) and cfg.pairs >= 1):
        raise ValueError(f"--pairs must be a positive integer, got {cfg.pairs!r}")
    check_output_path(cfg.out, "--out", "file")
    return simulate(cfg)


# ------------------------------------------------------------------------------ train
def train_command(cmd: TrainCommand, cfg: RewardTrainConfig) -> dict[str, Any]:
    """``rlhf-gym reward train``: read, train, normalise, save; returns the summary."""
    from rlhf_gym.envs.lm import resolve_device
    from rlhf_gym.envs.rlhf_env import task_model
    from rlhf_gym.feedback.records import read_preferences
    from rlhf_gym.feedback.trainer import load_base, save_model, train_reward_model

    cmd.validate()
    cfg.validate()
    data = read_preferences(cmd.data, cmd.format)
    _err(data.report.summary())
    held = None
    if cmd.heldout_data:
        held_data = read_preferences(cmd.heldout_data, cmd.format)
        _err(held_data.report.summary())
        held = held_data.records
    device = resolve_device(cmd.device)
    model, tokenizer = load_base(task_model(cmd.base, cmd.task), device)
    run_dir = Path(cmd.logdir) / f"reward__{Path(cmd.out).name}__{int(time.time())}"
    writer = _writer(run_dir)
    try:
        result = train_reward_model(
            model,
            tokenizer,
            data.records,
            cfg,
            heldout_records=held,
            writer=writer,
            progress=True,
            log=_err,
        )
    finally:
        if writer is not None:
            writer.close()
    norm = _normalise(cmd, model, tokenizer, data.records)
    summary = {
        "data": asdict(data.report),
        "command": asdict(cmd),
        "training": asdict(cfg),
        "result": asdict(result),
        "normalisation": norm,
        "task": cmd.task,
        "tensorboard": str(run_dir),
    }
    save_model(model, tokenizer, cmd.out, summary)
    held_acc = result.heldout.get("accuracy")
    print(
        f"trained on {result.train_pairs} pairs ({result.steps} steps, "
        f"{result.pairs_per_second:.0f} pairs/s); "
        + (
            f"held-out accuracy {held_acc:.3f} on {result.heldout_pairs} pairs "
            f"(step {result.best_step} kept)"
            if held_acc is not None
            else "no held-out pairs"
        )
    )
    print(f"reward model: {cmd.out}   TensorBoard: {run_dir}")
    print(f"next: rlhf-gym train --reward-model {cmd.out}")
    return summary


def _writer(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - depends on the install
        _err("TensorBoard is not installed (pip install 'rlhf-gym[tensorboard]'): no event file")
        return None
    return SummaryWriter(str(run_dir))


def _normalise(cmd: TrainCommand, model: Any, tokenizer: Any, records: Any) -> dict[str, Any]:
    """Scores to mean 0 / std 1 on the policy's samples (or the data's responses)."""
    from rlhf_gym.feedback.trainer import normalise_on

    if cmd.normalise == "none":
        return {"on": "none"}
    if cmd.normalise == "data":
        texts = sorted({r.prompt + x for r in records for x in (r.response_a, r.response_b)})
    else:
        from rlhf_gym.feedback.simulate import sample_pairs

        pairs = sample_pairs(
            cmd.norm_samples // 2, task=cmd.task, policy=cmd.policy, seed=1, device=cmd.device
        )
        texts = [p + r for p, a, b in pairs for r in (a, b)]
    mean, std, where = normalise_on(model, tokenizer, texts)
    return {
        "on": cmd.normalise,
        "texts": len(texts),
        "removed_mean": mean,
        "removed_std": std,
        "shift_in": where,
    }


# ------------------------------------------------------------------------------ eval
def eval_command(cmd: EvalCommand) -> dict[str, Any]:
    """``rlhf-gym reward eval``: the metrics of :mod:`rlhf_gym.feedback.metrics`."""
    from rlhf_gym.envs.lm import resolve_device
    from rlhf_gym.envs.rewards import HFRewardModel
    from rlhf_gym.feedback.metrics import gold_correlation, preference_metrics, score_records
    from rlhf_gym.feedback.records import read_preferences

    if not cmd.reward_model:
        raise ValueError("--reward-model is required: a reward model directory or name")
    if not cmd.data:
        raise ValueError("--data is required: the preference JSONL to evaluate on")
    if cmd.task is not None and cmd.task not in TASK_ENVS:
        raise ValueError(f"--task must be one of {', '.join(TASK_ENVS)}; got {cmd.task!r}")
    samples = cmd.gold_samples
    if not (isinstance(samples, int) and (samples == 0 or samples >= 2)):
        raise ValueError(
            f"--gold-samples must be 0 (no gold correlation) or at least 2, got {samples!r}"
        )
    data = read_preferences(cmd.data, cmd.format)
    _err(data.report.summary())
    rm = HFRewardModel.load(cmd.reward_model, resolve_device(cmd.device))
    out: dict[str, Any] = {"reward_model": cmd.reward_model, "data": cmd.data}
    scale = _bt_scale(cmd.reward_model)
    out |= preference_metrics(*score_records(rm, data.records), data.records, bt_scale=scale)
    task = cmd.task or _trained_task(cmd.reward_model)
    if task is not None and cmd.gold_samples >= 2:
        out["task"] = task
        out |= gold_correlation(
            rm, task, policy=cmd.policy, samples=cmd.gold_samples, seed=cmd.seed, device=cmd.device
        )
    return out


def _summary(reward_model: str) -> dict[str, Any]:
    path = Path(reward_model) / "reward_model.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _bt_scale(reward_model: str) -> float:
    """The standard deviation that normalisation divided the scores by (1 if unknown): the
    Bradley-Terry probabilities are ``σ(scale · (r_a − r_b))`` in the normalised scores."""
    removed = _summary(reward_model).get("normalisation", {}).get("removed_std")
    return float(removed) if removed else 1.0


def _trained_task(reward_model: str) -> str | None:
    """The task a reward model was trained for: its ``reward_model.json``, or the built-in
    name (``sentiment``, ``harmless``)."""
    if reward_model in TASK_ENVS:
        return reward_model
    return _summary(reward_model).get("task")


def eval_report(out: dict[str, Any]) -> str:
    """The text ``rlhf-gym reward eval`` prints."""
    lines = [f"{out['reward_model']} on {out['data']} ({out['pairs']} pairs)"]
    names = {
        "accuracy": "pairwise accuracy",
        "accuracy_vs_gold": "accuracy vs gold",
        "mean_margin": "mean margin",
        "ece": "calibration error",
        "log_loss": "log loss",
        "gold_correlation": "gold correlation",
    }
    for key, name in names.items():
        if out.get(key) is not None:
            lines.append(f"  {name:<20} {out[key]:.3f}")
    if "gold_correlation" in out:
        lines.append(f"  (gold correlation on {out['gold_samples']} samples, task {out['task']})")
    return "\n".join(lines)
