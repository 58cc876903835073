"""Checkpoints: the policy in Hugging Face format plus the trainer state, written atomically.

Layout of ``<run>/checkpoints/update_000050/``::

    policy/              save_pretrained() of the policy and its tokenizer: loadable as
                         gym.make("RLHF-v0", model=".../policy") and by from_pretrained
    trainer_state.pt     optimizer, critic, RNG states, update index, KL coefficient, config
    checkpoint.json      agent name, model fingerprint, update index (written last)

A checkpoint is written into a temporary sibling directory and renamed into place, so a
crash or Ctrl-C while saving never leaves a half-written ``update_*`` directory; ``latest``
(a text file naming the newest checkpoint) is replaced atomically the same way.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

MARKER = "checkpoint.json"


def fingerprint(model: Any) -> dict[str, Any]:
    """What must match between a checkpoint and the model it is resumed into."""
    cfg = model.config
    return {
        "model_type": cfg.model_type,
        "vocab_size": int(cfg.vocab_size),
        "hidden_size": int(cfg.hidden_size),
        "num_layers": int(getattr(cfg, "num_hidden_layers", getattr(cfg, "n_layer", 0))),
    }


def save(run_dir: Path, agent: Any) -> Path:
    """Write a checkpoint of ``agent`` (``policy``, ``state_dict()``) under ``run_dir``."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"update_{agent.update_idx:06d}"
    final, tmp = root / name, root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    agent.policy.save_pretrained(tmp / "policy")
    agent.env.tokenizer.save_pretrained(tmp / "policy")
    torch.save(agent.state_dict(), tmp / "trainer_state.pt")
    meta = {
        "agent": agent.agent_name,
        "update": agent.update_idx,
        "episodes": agent.episodes_seen,
        "fingerprint": fingerprint(agent.policy),
    }
    (tmp / MARKER).write_text(json.dumps(meta, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = root / f".latest-{os.getpid()}"
    latest_tmp.write_text(name + "\n")
    os.replace(latest_tmp, root / "latest")
    return final


def resolve(path: str | Path) -> Path:
    """Accept a checkpoint directory, a ``checkpoints/`` directory or a run directory."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"--resume {path}: no such directory")
    for root in (p / "checkpoints", p):
        latest = root / "latest"
        if latest.is_file():
            p = root / latest.read_text().strip()
            break
    if not (p / MARKER).is_file():
        raise ValueError(
            f"--resume {path}: {p} is not a complete checkpoint (no {MARKER}); expected a "
            "directory written by `rlhf-gym train` (…/checkpoints/update_NNNNNN), its "
            "checkpoints/ folder, or the run directory"
        )
    for part in ("policy/config.json", "trainer_state.pt"):
        if not (p / part).is_file():
            raise ValueError(f"--resume {path}: checkpoint {p} is partial, {part} is missing")
    return p


def load(path: str | Path, agent: Any) -> Path:
    """Restore ``agent`` (already built from the same config) from a checkpoint."""
    from transformers import AutoModelForCausalLM

    p = resolve(path)
    meta = json.loads((p / MARKER).read_text())
    if meta["agent"] != agent.agent_name:
        raise ValueError(
            f"--resume {path}: the checkpoint is from agent {meta['agent']!r}, "
            f"not {agent.agent_name!r}"
        )
    mine = fingerprint(agent.policy)
    if meta["fingerprint"] != mine:
        raise ValueError(
            f"--resume {path}: the checkpoint is from another model "
            f"({meta['fingerprint']}) than this run's ({mine})"
        )
    saved = AutoModelForCausalLM.from_pretrained(p / "policy")
    agent.policy.load_state_dict(saved.state_dict())
    agent.load_state_dict(torch.load(p / "trainer_state.pt", weights_only=False))
    return p
