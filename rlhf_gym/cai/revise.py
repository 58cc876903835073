"""The supervised stage of Constitutional AI: ``rlhf-gym cai revise`` (critique → revision).

For each red-team prompt the model samples a reply; then, for ``rounds`` rounds, a principle is
drawn at random from the constitution, the model critiques its latest reply under it and
revises the reply. Every step goes to a JSONL that a person can read, one line per prompt::

    {"prompt": "Q: ... A:", "initial": " ...",
     "rounds": [{"principle": "safety", "critique_request": "...", "critique": "...",
                 "revision_request": "...", "revision": " ..."}],
     "revision": " ...",                                   # the final revision: the SFT target
     "gold_initial": 0.1, "gold_revision": 0.7}           # with a gold labeler (default)

``rlhf-gym sft --data FILE`` then fine-tunes on (prompt, revision). A revision that comes out
empty keeps the reply it revised as the final one (it is still recorded in ``rounds``).

Cost: ``1 + 2·rounds`` sampled sequences per prompt (3,000 per 1,000 prompts with one round).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_gym.agents.config import config_field as _f

CHAT_HELP = "auto (chat template when the tokenizer has one), yes or no"


@dataclass
class ReviseConfig:
    """Options of ``rlhf-gym cai revise``."""

    out: str | None = _f(None, "JSONL to write the critiques and revisions to (required)")
    num_prompts: int = _f(256, "red-team prompts to revise (taken in order, repeated if needed)")
    rounds: int = _f(1, "critique-and-revision rounds per prompt")
    model: str = _f("assistant", "the model that replies, critiques and revises: name or path")
    constitution: str | None = _f(None, "constitution TOML file (default: the shipped one)")
    prompts: str = _f("helpful_harmless", "red-team prompts: a built-in set or a .txt/.jsonl file")
    temperature: float = _f(1.0, "sampling temperature (0: greedy)")
    max_new_tokens: int = _f(48, "length limit of each reply, critique and revision")
    gold: str = _f(
        "helpful_harmless", "gold labeler that scores initial and final replies, or none"
    )
    batch_size: int = _f(32, "prompts sampled together")
    seed: int = _f(0, "seed of the principles drawn and of the sampling")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N or mps")
    dtype: str = _f("float32", "model dtype: float32, bfloat16, float16 or auto")
    chat: str = _f("auto", CHAT_HELP)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad option."""
        if not self.out:
            raise ValueError("--out is required: the JSONL to write the revisions to")
        check_common(self)
        for name in ("num_prompts", "rounds"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(
                    f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}"
                )


def check_common(cfg: Any) -> None:
    """Checks the options that ``cai revise`` and ``cai label`` share."""
    from rlhf_gym.cai.generate import CHAT_MODES
    from rlhf_gym.envs.gold import GOLD_LABELERS

    if not (isinstance(cfg.temperature, (int, float)) and cfg.temperature >= 0):
        raise ValueError(f"--temperature must be a number >= 0, got {cfg.temperature!r}")
    for name in ("max_new_tokens", "batch_size"):
        value = getattr(cfg, name)
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
    if cfg.gold != "none" and cfg.gold not in GOLD_LABELERS:
        raise ValueError(
            f"--gold must be none or one of {', '.join(GOLD_LABELERS)}; got {cfg.gold!r}"
        )
    if cfg.chat not in CHAT_MODES:
        raise ValueError(f"--chat must be one of {', '.join(CHAT_MODES)}; got {cfg.chat!r}")
    out = Path(cfg.out).expanduser()
    if out.is_dir():
        raise ValueError(f"--out {cfg.out} is a directory; give a file name")
    if not out.parent.exists():
        raise FileNotFoundError(f"--out {cfg.out}: the directory {out.parent} does not exist")
    from rlhf_gym.cli import check_output_path

    check_output_path(out, "--out", "file")


def gold_function(name: str) -> Callable[[str, str], float] | None:
    """The gold labeler called ``name`` (``None`` for ``"none"``)."""
    from rlhf_gym.envs.gold import GOLD_LABELERS

    return None if name == "none" else GOLD_LABELERS[name]


def prompt_list(source: str, n: int) -> list[str]:
    """``n`` prompts of ``source``, in file order, repeated from the start when there are fewer."""
    from rlhf_gym.envs.prompts import load_prompts

    prompts = load_prompts(source)
    return [prompts[i % len(prompts)] for i in range(n)]


def revise(cfg: ReviseConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs the critique-and-revision loop and writes ``cfg.out``; returns a summary."""
    from rlhf_gym.cai.constitution import load_constitution
    from rlhf_gym.cai.formats import few_shot_revisions
    from rlhf_gym.cai.generate import PromptedLM, draw_principles, seed_everything

    cfg.validate()
    constitution = load_constitution(cfg.constitution)
    prompts = prompt_list(cfg.prompts, cfg.num_prompts)
    lm = PromptedLM.load(cfg.model, device=cfg.device, dtype=cfg.dtype, chat=cfg.chat)
    gold = gold_function(cfg.gold)
    rng = seed_everything(cfg.seed)
    by_name = {p.name: p for p in constitution.principles}
    few_shot = few_shot_revisions(constitution.revision_examples, by_name)
    sample = lambda texts: lm.generate(  # noqa: E731
        texts,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        batch_size=cfg.batch_size,
    )

    initial = sample([lm.reply_prompt(p) for p in prompts])
    current = list(initial)
    rounds: list[list[dict[str, str]]] = [[] for _ in prompts]
    for _ in range(cfg.rounds):
        principles = draw_principles(constitution, len(prompts), rng)
        critiques = sample(
            [
                lm.critique_prompt(p, r, q, few_shot)
                for p, r, q in zip(prompts, current, principles, strict=True)
            ]
        )
        revisions = sample(
            [
                lm.revision_prompt(p, r, q, c, few_shot)
                for p, r, q, c in zip(prompts, current, principles, critiques, strict=True)
            ]
        )
        for i, (q, c, r) in enumerate(zip(principles, critiques, revisions, strict=True)):
            rounds[i].append(
                {
                    "principle": q.name,
                    "critique_request": q.critique_request,
                    "critique": c.strip(),
                    "revision_request": q.revision_request,
                    "revision": r,
                }
            )
            if r.strip():
                current[i] = r

    out = Path(cfg.out).expanduser()
    golds: list[tuple[float, float]] = []
    try:
        _write_revisions(out, prompts, initial, rounds, current, gold, golds)
    except OSError as e:  # a full disk names no file: name --out
        from rlhf_gym.feedback.records import with_filename

        raise with_filename(e, out) from e
    summary: dict[str, Any] = {
        "prompts": len(prompts),
        "rounds": cfg.rounds,
        "model": cfg.model,
        "chat": lm.chat,
        "constitution": constitution.path,
        "model_calls": dict(lm.calls),
        "truncated_prompts": lm.truncated,
        "out": str(out),
    }
    if gold is not None:
        summary["gold_initial"] = _mean([g for g, _ in golds])
        summary["gold_revision"] = _mean([g for _, g in golds])
        summary["improved_fraction"] = _mean([float(after > before) for before, after in golds])
    log(_report(summary, cfg.gold))
    return summary


def _write_revisions(
    out: Path,
    prompts: list[str],
    initial: list[str],
    rounds: list[list[dict[str, str]]],
    current: list[str],
    gold: Callable[[str, str], float] | None,
    golds: list[tuple[float, float]],
) -> None:
    """Write one JSONL record per prompt to ``out``; the gold scores go to ``golds``."""
    with out.open("w", encoding="utf-8") as f:
        for p, first, steps, final in zip(prompts, initial, rounds, current, strict=True):
            record: dict[str, Any] = {
                "prompt": p,
                "initial": first,
                "rounds": steps,
                "revision": final,
            }
            if gold is not None:
                record["gold_initial"] = round(gold(p, first), 6)
                record["gold_revision"] = round(gold(p, final), 6)
                golds.append((record["gold_initial"], record["gold_revision"]))
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _report(s: dict[str, Any], gold: str) -> str:
    lines = [
        f"revised {s['prompts']} prompts, {s['rounds']} round(s), model {s['model']}"
        f"{' (chat template)' if s['chat'] else ''}: "
        f"{s['model_calls']['generations']} sampled sequences",
    ]
    if "gold_initial" in s:
        lines.append(
            f"gold ({gold}): initial {s['gold_initial']:+.3f} → "
            f"revision {s['gold_revision']:+.3f}; "
            f"revision better on {100 * s['improved_fraction']:.0f}% of prompts"
        )
    if s["truncated_prompts"]:
        lines.append(
            f"{s['truncated_prompts']} model inputs were longer than the model's window "
            "and lost their start"
        )
    lines.append(f"wrote {s['out']}  (next: rlhf-gym sft --data {s['out']} --out DIR)")
    return "\n".join(lines)
