"""RL from AI feedback: ``rlhf-gym cai label`` turns a model's (A)/(B) answers into soft labels.

For each prompt the policy (the SL-CAI model) samples two different replies. The feedback model
sees the conversation, the comparison question of a principle drawn at random, and the two
replies as options (A) and (B) in random order; the probabilities of ``" (A)"`` and ``" (B)"``
after ``"The answer is:"``, renormalised over the two, give the soft label. The label follows the
reply, not the letter: ``p_a`` is the probability of the option that shows ``response_a``.

Written in the preference format of :mod:`rlhf_gym.feedback.records` (soft records, ``p_a``),
with ``meta``: ``principle``, ``shown`` (``"ab"`` when ``response_a`` was option (A), else
``"ba"``), ``p_option_a`` (the raw probability of (A)) and, with a gold labeler, ``gold_a`` and
``gold_b``. ``rlhf-gym reward train --data FILE`` trains on it with the soft Bradley-Terry loss.

Cost: two sampled replies and one forward pass of the feedback model per pair (2,000
generations and 1,000 scored comparisons per 1,000 pairs), plus resampling of identical pairs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlhf_gym.agents.config import config_field as _f
from rlhf_gym.cai.revise import CHAT_HELP, check_common, gold_function


@dataclass
class AILabelConfig:
    """Options of ``rlhf-gym cai label``."""

    policy: str | None = _f(
        None, "policy whose two replies per prompt are compared: name or path (required)"
    )
    out: str | None = _f(None, "preference JSONL to write (required)")
    num_pairs: int = _f(1024, "pairs to label")
    model: str = _f("assistant", "the feedback model that answers (A) or (B): name or path")
    constitution: str | None = _f(None, "constitution TOML file (default: the shipped one)")
    prompts: str = _f("helpful_harmless", "prompts: a built-in set or a .txt/.jsonl file")
    temperature: float = _f(1.0, "the policy's sampling temperature")
    max_new_tokens: int = _f(48, "length limit of each reply")
    gold: str = _f("helpful_harmless", "gold labeler whose scores go into meta, or none")
    batch_size: int = _f(32, "rows sampled or scored together")
    seed: int = _f(0, "seed of the prompts' order, the principles, the A/B order and the sampling")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N or mps")
    dtype: str = _f("float32", "model dtype: float32, bfloat16, float16 or auto")
    chat: str = _f("auto", CHAT_HELP)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad option."""
        if not self.policy:
            raise ValueError("--policy is required: the model whose replies are compared")
        if not self.out:
            raise ValueError("--out is required: the preference JSONL to write")
        if not (isinstance(self.num_pairs, int) and self.num_pairs >= 1):
            raise ValueError(f"--num-pairs must be an integer >= 1, got {self.num_pairs!r}")
        check_common(self)


def soft_labels(
    feedback: Any,
    pairs: Sequence[tuple[str, str, str]],
    questions: Sequence[str],
    shown_ab: Sequence[bool],
    few_shot: str | Sequence[str] = "",
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """``p_a`` of each pair ``(prompt, response_a, response_b)``, and the raw P((A)).

    Args:
        feedback: A :class:`~rlhf_gym.cai.generate.PromptedLM`.
        questions: The comparison question asked of each pair.
        shown_ab: Per pair, whether ``response_a`` is option (A) (else it is option (B)).
        few_shot: The few-shot block in front of every comparison, or one per pair.
    """
    blocks = [few_shot] * len(pairs) if isinstance(few_shot, str) else few_shot
    texts = [
        feedback.comparison_prompt(p, q, a if ab else b, b if ab else a, f)
        for (p, a, b), q, ab, f in zip(pairs, questions, shown_ab, blocks, strict=True)
    ]
    probs = feedback.option_probs(texts, batch_size=batch_size)
    p_option_a = probs[:, 0]
    p_a = np.where(np.asarray(shown_ab, dtype=bool), p_option_a, 1.0 - p_option_a)
    return p_a, p_option_a


def sample_two(
    policy: Any, prompts: Sequence[str], cfg: AILabelConfig, log: Callable[[str], None]
) -> list[tuple[str, str, str]]:
    """Two different non-empty replies per prompt (prompts whose two replies stay equal after
    five tries are dropped and counted)."""
    todo = list(range(len(prompts)))
    replies: dict[int, tuple[str, str]] = {}
    for _ in range(5):
        if not todo:
            break
        texts = [policy.reply_prompt(prompts[i]) for i in todo for _ in (0, 1)]
        out = policy.generate(
            texts,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            batch_size=cfg.batch_size,
        )
        again = []
        for k, i in enumerate(todo):
            a, b = out[2 * k], out[2 * k + 1]
            if a.strip() and b.strip() and a.strip() != b.strip():
                replies[i] = (a, b)
            else:
                again.append(i)
        todo = again
    if todo:
        log(f"{len(todo)} prompts gave two equal or empty replies five times and were skipped")
    return [(prompts[i], *replies[i]) for i in sorted(replies)]


def label(cfg: AILabelConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Samples pairs from the policy, labels them with the feedback model, writes ``cfg.out``."""
    from rlhf_gym.cai.constitution import load_constitution
    from rlhf_gym.cai.formats import few_shot_comparisons
    from rlhf_gym.cai.generate import PromptedLM, draw_principles, seed_everything
    from rlhf_gym.envs.prompts import load_prompts
    from rlhf_gym.feedback.records import Preference, write_preferences

    cfg.validate()
    constitution = load_constitution(cfg.constitution)
    rng = seed_everything(cfg.seed)
    # the distinct prompts among the first num_pairs, visited in a seeded order, then repeated
    pool = list(dict.fromkeys(load_prompts(cfg.prompts)[: cfg.num_pairs]))
    random.Random(f"rlhf-gym/cai/label-order/{cfg.seed}").shuffle(pool)
    prompts = [pool[i % len(pool)] for i in range(cfg.num_pairs)]

    policy = PromptedLM.load(
        cfg.policy, what="--policy", device=cfg.device, dtype=cfg.dtype, chat=cfg.chat
    )
    pairs = sample_two(policy, prompts, cfg, log)
    same = cfg.model == cfg.policy
    feedback = (
        policy
        if same
        else PromptedLM.load(cfg.model, device=cfg.device, dtype=cfg.dtype, chat=cfg.chat)
    )
    principles = draw_principles(constitution, len(pairs), rng)
    shown_ab = [rng.random() < 0.5 for _ in pairs]
    by_name = {p.name: p for p in constitution.principles}
    # few-shot blocks depend on the question only through examples without a principle
    few = [
        few_shot_comparisons(constitution.comparison_examples, by_name, q.comparison)
        for q in principles
    ]
    p_a, p_opt = soft_labels(
        feedback, pairs, [q.comparison for q in principles], shown_ab, few, cfg.batch_size
    )

    gold = gold_function(cfg.gold)
    records = []
    for (prompt, a, b), q, ab, pa, po in zip(pairs, principles, shown_ab, p_a, p_opt, strict=True):
        meta: dict[str, Any] = {
            "principle": q.name,
            "shown": "ab" if ab else "ba",
            "p_option_a": round(float(po), 6),
        }
        if gold is not None:
            meta["gold_a"] = round(gold(prompt, a), 6)
            meta["gold_b"] = round(gold(prompt, b), 6)
        records.append(Preference(prompt, a, b, p_a=round(float(pa), 6), meta=meta))
    write_preferences(records, cfg.out)

    summary: dict[str, Any] = {
        "pairs": len(records),
        "policy": cfg.policy,
        "model": cfg.model,
        "chat": feedback.chat,
        "mean_p_a": float(np.mean(p_a)) if len(records) else float("nan"),
        "mean_confidence": float(np.mean(np.maximum(p_a, 1 - p_a)))
        if len(records)
        else float("nan"),
        "position_bias": float(np.mean(p_opt)) if len(records) else float("nan"),
        "model_calls": {
            k: policy.calls[k] + (0 if same else feedback.calls[k]) for k in policy.calls
        },
        "truncated_prompts": policy.truncated + (0 if same else feedback.truncated),
        "out": str(cfg.out),
    }
    if gold is not None:
        agree = [
            float((pa > 0.5) == (r.meta["gold_a"] > r.meta["gold_b"]))
            for r, pa in zip(records, p_a, strict=True)
            if r.meta["gold_a"] != r.meta["gold_b"] and pa != 0.5
        ]
        summary["agreement_with_gold"] = float(np.mean(agree)) if agree else float("nan")
        summary["gold_decided_pairs"] = len(agree)
    log(_report(summary, cfg.gold))
    return summary


def _report(s: dict[str, Any], gold: str) -> str:
    lines = [
        f"labeled {s['pairs']} pairs: replies from {s['policy']}, labels from {s['model']}"
        f"{' (chat template)' if s['chat'] else ''}",
        f"mean p_a {s['mean_p_a']:.3f}, mean confidence max(p, 1-p) {s['mean_confidence']:.3f}, "
        f"mean P((A)) {s['position_bias']:.3f} (0.5: no position bias)",
        f"model calls: {s['model_calls']['generations']} sampled replies, "
        f"{s['model_calls']['comparisons']} scored comparisons",
    ]
    if "agreement_with_gold" in s:
        lines.append(
            f"agreement with the gold labeler ({gold}): {s['agreement_with_gold']:.3f} "
            f"on {s['gold_decided_pairs']} pairs"
        )
    lines.append(f"wrote {s['out']}  (next: rlhf-gym reward train --data {s['out']} --out RM_DIR)")
    return "\n".join(lines)
