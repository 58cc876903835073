"""``sample_tokens``: inverse-CDF sampling draws from ``softmax(logits)`` exactly."""

from __future__ import annotations

import pytest
import torch

from rlhf_gym.envs.policy import sample_tokens


def draw(logits: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return sample_tokens(logits.expand(n, -1).contiguous(), g)


def test_frequencies_match_softmax() -> None:
    # a masked token (-inf), a rare one and the first and last entries all carry mass or none
    logits = torch.tensor([[1.0, -4.0, float("-inf"), 0.0, 2.5, -1.0]])
    n = 400_000
    counts = torch.bincount(draw(logits, n), minlength=6).double()
    p = logits[0].softmax(-1).double()
    assert counts[2] == 0
    expected = n * p
    ok = expected > 0
    chi2 = (((counts - expected)[ok]) ** 2 / expected[ok]).sum().item()
    # 4 degrees of freedom: P(chi2 > 30) < 1e-5, while an off-by-one in the search moves
    # whole buckets of mass (chi2 in the tens of thousands)
    assert chi2 < 30, (counts / n, p)


@pytest.mark.parametrize("hot", [0, 5])
def test_all_mass_on_one_token_always_draws_it(hot: int) -> None:
    logits = torch.full((1, 6), float("-inf"))
    logits[0, hot] = 3.0
    assert (draw(logits, 10_000) == hot).all()


def test_seeded_shapes_dtypes_and_large_logits() -> None:
    logits = torch.randn(7, 50) * 1e4  # exp of unshifted logits would overflow
    a, b = draw(logits[:1], 5, seed=3), draw(logits[:1], 5, seed=3)
    assert torch.equal(a, b) and a.dtype == torch.int64 and a.shape == (5,)
    g = torch.Generator().manual_seed(0)
    tokens = sample_tokens(logits.bfloat16(), g)
    assert tokens.shape == (7,)
    assert torch.equal(tokens, logits.bfloat16().float().argmax(-1))  # one token holds the mass
