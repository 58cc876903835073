"""rlhf_gym.frontier: best-of-n over a pool (the U-statistic), the tilted-reference optimum."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rlhf_gym.envs import toy
from rlhf_gym.frontier import (
    ReferencePool,
    best_of_n,
    best_of_n_objective,
    frontier_curve,
    reference_pool,
    tilted,
)


@pytest.fixture
def pool():
    rng = np.random.default_rng(0)
    return ReferencePool(scores=rng.normal(size=(4, 7)), gold=rng.normal(size=(4, 7)))


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_best_of_n_averages_every_subset(pool, n):
    def brute(values):
        per_prompt = []
        for p in range(len(pool.scores)):
            picks = [
                values[p, max(c, key=lambda i: pool.scores[p, i])]
                for c in itertools.combinations(range(7), n)
            ]
            per_prompt.append(np.mean(picks))
        return np.mean(per_prompt)

    got = best_of_n(pool, n)
    assert got["score"] == pytest.approx(brute(pool.scores), abs=1e-12)
    assert got["gold"] == pytest.approx(brute(pool.gold), abs=1e-12)
    assert got["kl"] == pytest.approx(math.log(n) - (n - 1) / n)


def test_the_tilted_pool_is_the_objective_of_its_own_point(pool):
    for beta in (0.05, 0.3, 1.0):
        t = tilted(pool, beta)
        assert t["J"] == pytest.approx(t["score"] - beta * t["kl"], abs=1e-9)
        assert 0 <= t["kl"] <= math.log(7) + 1e-9
    # a large β keeps the reference (its mean score, no KL); a small one the best sample
    assert tilted(pool, 1e4)["J"] == pytest.approx(pool.scores.mean(), abs=1e-3)
    assert tilted(pool, 1e-3)["score"] == pytest.approx(pool.scores.max(1).mean(), abs=1e-6)
    # best-of-1 is the reference: its objective is the mean score
    assert best_of_n_objective(pool, 1e4, range(1, 8)) == {
        "J": pytest.approx(pool.scores.mean()),
        "n": 1,
    }


def test_bootstrap_error_and_half_pool(pool):
    t = tilted(pool, 0.5, bootstrap=50, seed=1)
    assert t["J_se"] > 0 and math.isfinite(t["J_half"])
    assert tilted(pool, 0.5, bootstrap=50, seed=1)["J_se"] == t["J_se"]  # seeded


def test_frontier_curve_rises_with_kl(pool):
    curve = frontier_curve(pool)
    kls, scores = [p["kl"] for p in curve], [p["score"] for p in curve]
    assert np.all(np.diff(kls) >= -1e-9) and np.all(np.diff(scores) >= -1e-9)


def test_reference_pool_on_the_toy_estimates_the_exact_optimum():
    got = reference_pool("RLHFToy-v0", samples_per_prompt=4096, seed=0)
    assert got.scores.shape == (2, 4096) and got.gold is None
    again = reference_pool("RLHFToy-v0", samples_per_prompt=4096, seed=0)
    np.testing.assert_array_equal(got.scores, again.scores)
    for beta in (0.3, 1.0):
        assert tilted(got, beta)["J"] == pytest.approx(toy.solve(beta).value, abs=0.01)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: best_of_n(p, 8), "1 <= n <= 7"),
        (lambda p: tilted(p, 0.0), "beta must be > 0"),
        (lambda p: reference_pool("RLHFToy-v0", samples_per_prompt=0), "samples_per_prompt"),
    ],
)
def test_bad_arguments(pool, call, message):
    with pytest.raises(ValueError, match=message):
        call(pool)
