"""Agreement between annotators: Cohen's kappa, and its mean over pairs of annotators.

Kappa is ``(p_o - p_e) / (1 - p_e)``: the observed agreement ``p_o`` on the items both judged,
corrected for the agreement ``p_e`` two annotators with the same label frequencies would reach
by chance. 1 is perfect agreement, 0 chance level. It is undefined (``nan``) when ``p_e = 1``,
i.e. both annotators gave one and the same label to every shared item.

The categories are ``a``, ``b`` and ``tie`` in terms of the underlying responses (not the
screen sides); skips are left out before anything is counted.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CATEGORIES = ("a", "b", "tie")


def cohen_kappa(
    x: Sequence[str], y: Sequence[str], categories: Sequence[str] = CATEGORIES
) -> float:
    """Cohen's kappa of two annotators' labels of the same items (``nan`` if undefined).

    >>> cohen_kappa(["a", "a", "b", "b"], ["a", "b", "b", "b"])  # p_o = 3/4, p_e = 1/2
    0.5
    """
    if len(x) != len(y) or not x:
        raise ValueError(f"need two equally long, non-empty label lists; got {len(x)} and {len(y)}")
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)))
    for u, v in zip(x, y, strict=True):
        table[index[u], index[v]] += 1
    table /= table.sum()
    p_o = float(np.trace(table))
    p_e = float(table.sum(axis=1) @ table.sum(axis=0))
    return math.nan if p_e == 1.0 else (p_o - p_e) / (1.0 - p_e)


@dataclass(frozen=True)
class Agreement:
    """Mean pairwise kappa and what it rests on.

    Attributes:
        kappa: Mean kappa over the annotator pairs where it is defined, or ``None``.
        annotator_pairs: Pairs of annotators who judged at least one item in common.
        shared: Items judged by at least two annotators.
    """

    kappa: float | None
    annotator_pairs: int
    shared: int

    def describe(self) -> str:
        """One line, e.g. ``Cohen's kappa 0.62 on 40 pairs judged by two or more annotators``."""
        if self.annotator_pairs == 0:
            return "no pair judged by two annotators yet"
        pairs = f"{self.shared} pair{'' if self.shared == 1 else 's'}"
        shared = f"on {pairs} judged by two or more annotators"
        if self.kappa is None:
            return f"Cohen's kappa undefined (one label throughout) {shared}"
        what = "Cohen's kappa"
        if self.annotator_pairs > 1:
            what = f"mean Cohen's kappa of {self.annotator_pairs} annotator pairs"
        return f"{what} {self.kappa:.2f} {shared}"


def pairwise_kappa(votes: Mapping[str, Mapping[int, str]]) -> Agreement:
    """Cohen's kappa of two annotators, or its mean over every two with a shared item.

    ``votes`` maps annotator → item → label (skips already removed).

    >>> pairwise_kappa({"ann": {1: "a", 2: "b"}, "bob": {1: "a", 2: "b", 3: "tie"}})
    Agreement(kappa=1.0, annotator_pairs=1, shared=2)
    """
    kappas: list[float] = []
    pairs = 0
    for u, v in itertools.combinations(sorted(votes), 2):
        items = sorted(votes[u].keys() & votes[v].keys())
        if items:
            pairs += 1
            kappa = cohen_kappa([votes[u][i] for i in items], [votes[v][i] for i in items])
            if not math.isnan(kappa):
                kappas.append(kappa)
    counts: dict[int, int] = {}
    for labels in votes.values():
        for item in labels:
            counts[item] = counts.get(item, 0) + 1
    shared = sum(n >= 2 for n in counts.values())
    return Agreement(sum(kappas) / len(kappas) if kappas else None, pairs, shared)
