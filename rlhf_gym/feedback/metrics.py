"""How good a reward model is: pairwise accuracy, margin, calibration, agreement with gold.

``rlhf-gym reward eval`` reports, on a preference file:

* ``accuracy``: the share of pairs with a preference (``p_a != 0.5``) that the model orders
  the same way (ties in the data are not counted);
* ``mean_margin``: the mean of ``r(preferred) − r(other)``;
* ``ece``: expected calibration error of the Bradley-Terry probability that A wins,
  ``σ(s · (r_a − r_b))``, against the labels (10 equal-width bins; soft labels count as their
  ``p_a``; each pair counted in both orders). ``s`` undoes the normalisation to std 1
  (``reward_model.json`` records the std removed): the calibration of the model as trained;
* ``log_loss``: the Bradley-Terry loss on the file;
* ``accuracy_vs_gold``, where the records carry the gold labeler's scores (``gold_a``,
  ``gold_b``, as ``rlhf-gym reward simulate`` writes them): the share ordered as the
  noise-free gold orders them;
* ``gold_correlation``, where a task is named: the Pearson correlation of the score with the
  task's gold labeler on fresh samples of a policy (the reference by default) on the task's
  held-out prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rlhf_gym.feedback.records import Preference
from rlhf_gym.feedback.trainer import pair_accuracy


def expected_calibration_error(prob: np.ndarray, outcome: np.ndarray, bins: int = 10) -> float:
    """``Σ_b (n_b / N) · |mean(prob in b) − mean(outcome in b)|`` over equal-width bins.

    >>> expected_calibration_error(np.array([0.9, 0.9, 0.1, 0.1]), np.array([1, 1, 0, 0.0]))
    0.1
    """
    prob, outcome = np.asarray(prob, float), np.asarray(outcome, float)
    which = np.minimum((prob * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(prob[inside].mean() - outcome[inside].mean())
    return round(float(total), 12)


def preference_metrics(
    r_a: np.ndarray, r_b: np.ndarray, records: Sequence[Preference], bt_scale: float = 1.0
) -> dict[str, Any]:
    """The metrics of scores ``r_a``, ``r_b`` (``(N,)`` each) on ``records``; ``bt_scale``
    turns score differences into Bradley-Terry logits (calibration and log loss).

    >>> recs = [Preference("", "x", "y", 1.0), Preference("", "x", "z", 0.0)]
    >>> m = preference_metrics(np.array([1.0, 1.0]), np.array([0.0, 0.0]), recs)
    >>> m["accuracy"], m["mean_margin"]
    (0.5, 0.0)
    """
    r_a, r_b = np.asarray(r_a, float), np.asarray(r_b, float)
    p = np.array([r.p_a for r in records], float)
    accuracy, n_decided = pair_accuracy(r_a, r_b, p)
    d = r_a - r_b
    logit = bt_scale * d
    prob = 1.0 / (1.0 + np.exp(-logit))
    sign = np.where(p >= 0.5, 1.0, -1.0)
    loss = -(p * _log_sigmoid(logit) + (1 - p) * _log_sigmoid(-logit))
    out: dict[str, Any] = {
        "pairs": len(records),
        "decided_pairs": n_decided,
        "accuracy": accuracy if n_decided else None,
        "mean_margin": float((sign * d).mean()),
        # both orders of every pair: files list the chosen response first, so one order alone
        # would measure how often A is written first, not calibration
        "ece": expected_calibration_error(np.r_[prob, 1 - prob], np.r_[p, 1 - p]),
        "log_loss": float(loss.mean()),
    }
    gold = [(r.meta.get("gold_a"), r.meta.get("gold_b")) for r in records]
    if gold and all(isinstance(a, (int, float)) and isinstance(b, (int, float)) for a, b in gold):
        g = np.array(gold, float)
        differs = g[:, 0] != g[:, 1]
        agree = (d > 0) == (g[:, 0] > g[:, 1])
        out["accuracy_vs_gold"] = float(agree[differs].mean()) if differs.any() else None
    return out


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def score_records(rm: Any, records: Sequence[Preference]) -> tuple[np.ndarray, np.ndarray]:
    """``(r_a, r_b)``: a reward model's scores of both responses of every record."""
    prompts = [r.prompt for r in records]
    r_a = np.asarray(rm.score(prompts, [r.response_a for r in records]), float)
    r_b = np.asarray(rm.score(prompts, [r.response_b for r in records]), float)
    return r_a, r_b


def gold_correlation(
    rm: Any,
    task: str,
    *,
    policy: Any = None,
    samples: int = 256,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, float]:
    """Pearson correlation of ``rm``'s score with the task's gold labeler on ``samples`` fresh
    responses of ``policy`` (default: the reference) on the task's held-out prompts."""
    from rlhf_gym.feedback.simulate import gold_labeler, sample_pairs

    gold = gold_labeler(task)
    pairs = sample_pairs(
        max(1, samples // 2),
        task=task,
        policy=policy,
        prompts=f"{task}-eval",
        seed=seed,
        device=device,
    )
    prompts = [p for p, _, _ in pairs for _ in range(2)]
    responses = [r for _, a, b in pairs for r in (a, b)]
    scores = np.asarray(rm.score(prompts, responses), float)
    golds = np.array([gold(p, r) for p, r in zip(prompts, responses, strict=True)])
    return {
        "gold_correlation": float(np.corrcoef(scores, golds)[0, 1]),
        "gold_samples": len(responses),
        "score_mean": float(scores.mean()),
        "score_std": float(scores.std()),
    }
