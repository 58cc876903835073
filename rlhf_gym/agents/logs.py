"""What an agent writes to TensorBoard, in one place (the tag names are in :mod:`.tags`).

Every agent writes the same three things through a ``torch.utils.tensorboard.SummaryWriter``
(or anything with ``add_scalar``/``add_text``; ``None`` writes nothing):

* :func:`write_config`: its configuration as a table, once at the start of a run;
* :func:`write_update`: after each update, every scalar against the number of episodes seen,
  and, after the first update, every tenth and the last, a table of sample completions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from rlhf_gym.agents import tags


def write_config(writer: Any, config: Any) -> None:
    """The config dataclass as a Markdown table under :data:`tags.HYPERPARAMETERS`."""
    if writer is None:
        return
    table = "\n".join(f"|{k}|{v}|" for k, v in asdict(config).items())
    writer.add_text(tags.HYPERPARAMETERS, "|param|value|\n|-|-|\n" + table)


def samples_table(samples: Sequence[tuple[str, str, float]]) -> str:
    """``(prompt, response, score)`` rows as a Markdown table (blank lines folded)."""
    rows = "\n".join(f"| {p} | {r} | {s:+.2f} |" for p, r, s in samples)
    return "| prompt | response | score |\n|---|---|---|\n" + rows.replace("\n\n", " ")


def write_update(
    writer: Any,
    stats: dict[str, float],
    step: int,
    samples: Sequence[tuple[str, str, float]] = (),
    update_idx: int = 0,
    num_updates: int = 0,
) -> None:
    """Write ``stats`` at ``step`` (episodes seen) and, on updates 1, 11, 21 … and the last
    (``update_idx`` counts from 1), the first eight ``samples`` under :data:`tags.SAMPLES`."""
    if writer is None:
        return
    for key, value in stats.items():
        writer.add_scalar(key, value, step)
    if samples and (update_idx % 10 == 1 or update_idx == num_updates):
        writer.add_text(tags.SAMPLES, samples_table(samples[:8]), step)
