"""The outer loop the native agents share: collect → update → log, ``num_updates`` times.

An agent provides the three phases as methods, in its own module, top to bottom::

    batch = agent.collect()                    # play cfg.num_envs episodes (batch.tokens: int)
    stats = agent.update(batch)                # learn from them; the losses
    stats = agent.log(batch, stats, sps)       # add the objective's scalars, write TensorBoard

:func:`train` runs them, counts updates and episodes, measures steps (tokens) per second, and
calls ``callback(agent, stats)`` after each update (``rlhf-gym train`` checkpoints and draws
its progress bar there). It starts at ``agent.update_idx``, so a resumed agent continues.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rlhf_gym.agents import logs

Callback = Callable[[Any, dict[str, float]], None]
"""``callback(agent, stats)``, called after each update."""


def train(agent: Any, callback: Callback | None = None) -> dict[str, float]:
    """Run ``agent``'s remaining updates; return the last update's stats (``{}`` if none ran).

    Args:
        agent: has ``cfg`` (``num_updates``, ``num_envs``), ``writer``, ``update_idx``,
            ``episodes_seen`` and the methods ``collect``, ``update`` and ``log``.
        callback: called as ``callback(agent, stats)`` after each update.
    """
    if agent.update_idx == 0:
        logs.write_config(agent.writer, agent.cfg)
    stats: dict[str, float] = {}
    while agent.update_idx < agent.cfg.num_updates:
        start = time.perf_counter()
        batch = agent.collect()
        update_stats = agent.update(batch)
        agent.update_idx += 1
        agent.episodes_seen += agent.cfg.num_envs
        stats = agent.log(batch, update_stats, batch.tokens / (time.perf_counter() - start))
        if callback is not None:
            callback(agent, stats)
    return stats
