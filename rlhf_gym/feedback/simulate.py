"""Pairs of responses sampled from a policy, and the simulated person who labels them.

``rlhf-gym reward simulate`` runs every later step of the feedback loop offline: it samples two
responses per prompt from a policy (the task's reference model by default) in the task's
environment, and asks the task's gold labeler (:mod:`rlhf_gym.envs.gold`) to compare them with
Bradley-Terry noise: response A is preferred with probability ``sigmoid((gold_a - gold_b) / T)``,
so close calls are coin flips, as they are for people. This is the simulated person the
embedded default's reward models were trained on (``docs/feedback.md``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rlhf_gym.agents.config import config_field as _f
from rlhf_gym.feedback.records import Preference, write_preferences

TASK_ENVS = {
    "sentiment": "RLHF-v0",
    "harmless": "RLHFHarmless-v0",
    "helpful_harmless": "RLHFHelpfulHarmless-v0",
}
"""Task name → the registered environment whose prompts, reference and gold labeler it uses."""

LABEL_TEMPERATURE = 0.1
"""Default Bradley-Terry temperature: a gold gap of 0.22 is judged right 90% of the time."""


def task_env(task: str) -> str:
    """The environment id of ``task`` (a clear error for an unknown one)."""
    if task not in TASK_ENVS:
        raise ValueError(f"task must be one of {', '.join(TASK_ENVS)}; got {task!r}")
    return TASK_ENVS[task]


def sample_pairs(
    num_pairs: int,
    *,
    task: str = "sentiment",
    policy: Any = None,
    prompts: str | Sequence[str] | None = None,
    seed: int = 0,
    device: str = "cpu",
    num_envs: int = 64,
) -> list[tuple[str, str, str]]:
    """``num_pairs`` pairs ``(prompt, response_a, response_b)`` of two different samples.

    Both responses of a pair answer the same prompt; prompts are visited in a seeded random
    order (each once before any repeats). Pairs whose two samples are the same text are
    sampled again (up to ten rounds; fewer pairs come back only for a policy that is
    nearly deterministic).

    Args:
        num_pairs: How many pairs.
        task: ``sentiment`` or ``harmless`` (its environment, prompts and reference).
        policy: ``None`` (the reference), a model directory or hub name, or a loaded causal LM.
        prompts: Prompt set name or file, or a list of prompts (default: the task's train set).
        seed: Seed of the prompt order and the sampling.
        device: Where the models run.
        num_envs: Rows sampled side by side (rounded down to an even number).
    """
    import gymnasium as gym

    from rlhf_gym.evaluate import acting_policy, final_infos

    if not (isinstance(num_pairs, int) and num_pairs >= 1):
        raise ValueError(f"num_pairs must be a positive integer, got {num_pairs!r}")
    env_id = task_env(task)
    rows = max(2, min(num_envs, 2 * num_pairs) // 2 * 2)
    kwargs = {"prompts": prompts} if prompts is not None else {}  # default: the task's train set
    envs = gym.make_vec(env_id, num_envs=rows, device=device, **kwargs)
    try:
        acting = acting_policy(envs, policy, 1.0, seed)
        rng = random.Random(seed)
        n_prompts = envs.unwrapped.num_prompts
        order: list[int] = []
        pairs: list[tuple[str, str, str]] = []
        for round_ in range(10 * math.ceil(2 * num_pairs / rows) + 10):
            if len(pairs) >= num_pairs:
                break
            while len(order) < rows // 2:
                order += rng.sample(range(n_prompts), n_prompts)
            index = [order[i // 2] for i in range(rows)]
            del order[: rows // 2]
            infos = final_infos(envs, acting, index, seed + 7919 * round_)
            for i in range(0, rows, 2):
                a, b = infos[i], infos[i + 1]
                if a["response_text"] != b["response_text"] and len(pairs) < num_pairs:
                    pairs.append((str(a["prompt_text"]), a["response_text"], b["response_text"]))
    finally:
        envs.close()
    return pairs


def gold_labeler(task: str) -> Callable[[str, str], float]:
    """The gold labeler of ``task``: ``gold(prompt, response) -> float`` in [-1, 1]."""
    from rlhf_gym.envs.gold import GOLD_LABELERS

    task_env(task)
    return GOLD_LABELERS[task]


def named_gold(name: str) -> Callable[[str, str], float]:
    """The gold labeler registered as ``name`` in :data:`rlhf_gym.envs.gold.GOLD_LABELERS`."""
    from rlhf_gym.envs.gold import GOLD_LABELERS

    if name not in GOLD_LABELERS:
        raise ValueError(f"--gold must be one of {', '.join(GOLD_LABELERS)}; got {name!r}")
    return GOLD_LABELERS[name]


def bt_label(
    prompt: str,
    response_a: str,
    response_b: str,
    gold: Callable[[str, str], float],
    temperature: float,
    rng: random.Random,
    soft: bool = False,
) -> Preference | None:
    """The simulated person's judgment of one pair, or ``None`` for an exact gold tie.

    With ``soft=False`` A is chosen with probability ``p = sigmoid((gold_a - gold_b) / T)``
    (one draw from ``rng``); with ``soft=True`` the record carries ``p_a = p`` itself. The
    gold scores are kept in ``meta`` (``gold_a``, ``gold_b``) for evaluation.

    >>> rec = bt_label("Q:", " good", " bad", lambda p, r: 1.0 if "good" in r else -1.0,
    ...                0.1, random.Random(0))
    >>> rec.response_a, rec.p_a
    (' good', 1.0)
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    g_a, g_b = gold(prompt, response_a), gold(prompt, response_b)
    if g_a == g_b:
        return None
    p = 1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, (g_a - g_b) / temperature))))
    meta = {"gold_a": g_a, "gold_b": g_b, "source": "simulated"}
    if soft:
        return Preference(prompt, response_a, response_b, p, 0.0, meta)
    if rng.random() < p:
        return Preference(prompt, response_a, response_b, 1.0, 0.0, meta)
    return Preference(
        prompt, response_b, response_a, 1.0, 0.0, {**meta, "gold_a": g_b, "gold_b": g_a}
    )


@dataclass
class SimulateConfig:
    """``rlhf-gym reward simulate`` (its options are generated from these fields)."""

    out: str = _f("prefs.jsonl", "preference JSONL to write")
    task: str = _f(
        "sentiment", f"task whose prompts and gold labeler to use: {', '.join(TASK_ENVS)}"
    )
    pairs: int = _f(1000, "number of labeled pairs to write")
    policy: str | None = _f(None, "policy model directory to sample from (default: the reference)")
    prompts: str | None = _f(None, "prompt set name or file (default: the task's training prompts)")
    temperature: float = _f(LABEL_TEMPERATURE, "Bradley-Terry noise of the simulated person")
    soft: bool = _f(False, "write soft labels p_a = sigmoid(gap / T) instead of sampled choices")
    seed: int = _f(0, "seed of the sampling and of the labeler")
    device: str = _f("cpu", "auto, cpu, cuda, cuda:N or mps")
    gold: str | None = _f(
        None,
        "gold labeler of the simulated person (default: the task's); e.g. hh_harmless for "
        "people who judge only harmlessness",
    )


def simulate(cfg: SimulateConfig) -> dict[str, Any]:
    """Sample, label and write ``cfg.pairs`` preferences; returns counts and the path.

    Gold ties (both responses scored the same) carry no preference and are sampled again, as
    are pairs with an empty response and repeats of an earlier pair (which
    :func:`~rlhf_gym.feedback.records.read_preferences` would drop).
    """
    if not cfg.temperature > 0:
        raise ValueError(f"--temperature must be > 0, got {cfg.temperature!r}")
    gold = gold_labeler(cfg.task) if cfg.gold is None else named_gold(cfg.gold)
    rng = random.Random(cfg.seed)
    records: list[Preference] = []
    ties = skipped = 0
    seen: set[tuple[str, frozenset[str]]] = set()
    for attempt in range(5):
        need = cfg.pairs - len(records)
        if need <= 0:
            break
        pairs = sample_pairs(
            need,
            task=cfg.task,
            policy=cfg.policy,
            prompts=cfg.prompts,
            seed=cfg.seed + 104_729 * attempt,
            device=cfg.device,
        )
        for prompt, a, b in pairs:
            key = (prompt, frozenset((a, b)))
            if not a.strip() or not b.strip() or key in seen:
                skipped += 1  # what read_preferences would drop: the count must survive
                continue
            rec = bt_label(prompt, a, b, gold, cfg.temperature, rng, soft=cfg.soft)
            if rec is None:
                ties += 1
            else:
                seen.add(key)
                records.append(rec)
    written = write_preferences(records[: cfg.pairs], cfg.out)
    # the probability mass each label puts on the response the gold labeler scores higher
    agree = sum(
        r.p_a if r.meta["gold_a"] > r.meta["gold_b"] else 1.0 - r.p_a for r in records[: cfg.pairs]
    )
    return {
        "out": cfg.out,
        "pairs": written,
        "gold_ties_resampled": ties,
        "empty_or_repeated_resampled": skipped,
        "labels_agreeing_with_gold": agree / max(1, written),
    }
