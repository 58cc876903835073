"""How the acting policy's distribution reaches the environment (for the KL term).

``step(action)`` carries only the token, but ``KL(π ‖ π_ref)`` needs the acting policy ``π``
at the state. So the environment accepts an :class:`ActingPolicy`: anything with
``action_logits(observation) -> (B, V)`` logits (or log-probabilities; the environment
normalises them with ``log_softmax``) for a *batched* observation (``input_ids`` and
``attention_mask`` of shape ``(B, T)``; ``B = 1`` for a single environment). The logits must be
those the action was sampled from: divided by the sampling temperature, no top-k/top-p.

Two ready implementations:
    * :class:`PrecomputedLogits`: a native agent hands over the logits it already computed to
      choose the action, so no policy forward pass runs twice.
    * :class:`LMPolicy`: a Hugging Face causal LM that acts (``act``) and answers
      ``action_logits`` from the same cached forward pass, with its own KV cache.

Attach one with ``env.unwrapped.set_policy(policy)`` (or ``envs.set_policy`` on the vector
environment, or the ``policy=`` constructor argument).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from rlhf_gym.envs.static_lm import make_incremental


def sample_tokens(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Sample one token per row from ``softmax(logits)``: ``(B,)`` int64, on ``logits``' device.

    Inverse-CDF sampling: one uniform number per row, located in the row's cumulative
    distribution (accumulated in float64) with ``searchsorted``. It draws from exactly the
    distribution ``torch.multinomial(logits.softmax(-1), 1)`` draws from, but that call draws
    an exponential variate for *every* vocabulary entry; on the CPU that is most of its cost,
    and this is several times faster per decode step at ``V`` = 1,024, twice at ``V`` = 50,257
    (``benchmarks/sampling.py``; README, "Benchmarks"). A token of probability 0 (logit
    ``-inf``, e.g. a masked EOS) is never drawn. Every sampler of the package uses it, so a seed
    gives the same tokens whichever policy class draws them from the same logits.

    Args:
        logits: ``(B, V)`` unnormalised log-probabilities (any float dtype).
        generator: the random generator, on ``logits``' device (``None``: torch's global one).
    """
    cdf = logits.float().softmax(-1).cumsum(-1, dtype=torch.float64)
    total = cdf[:, -1:]  # 1 up to rounding
    # u < total·(1 − 2⁻⁵⁰) < total: some entry of the CDF exceeds u, and the first one that
    # does belongs to a token of mass > 0 (an entry equal to the one before it never does)
    u = torch.rand(total.shape, generator=generator, dtype=torch.float64, device=cdf.device)
    u = u * (total * (1 - 2**-50))
    # the clamp changes nothing for real logits; NaN logits give a valid token id, and the
    # environment's check of the policy's logits then names the problem
    return torch.searchsorted(cdf, u, right=True)[:, 0].clamp_(max=cdf.shape[-1] - 1)


@runtime_checkable
class ActingPolicy(Protocol):
    """The acting policy's next-token logits ``(B, V)`` for a batched observation."""

    def action_logits(self, observation: dict[str, np.ndarray]) -> torch.Tensor | np.ndarray:
        """``(B, V)`` logits (or log-probabilities) the actions at ``observation`` come from."""
        ...


class PrecomputedLogits:
    """Logits an agent already has: call :meth:`set` before each ``env.step``.

    Example:
        >>> import torch
        >>> policy = PrecomputedLogits()
        >>> policy.set(torch.zeros(1, 5))   # the logits the action was sampled from
        >>> policy.action_logits({}).shape
        torch.Size([1, 5])
    """

    def __init__(self) -> None:
        self._logits: torch.Tensor | None = None

    def set(self, logits: torch.Tensor | np.ndarray) -> None:
        """Hand over the ``(B, V)`` logits of the next ``env.step``."""
        self._logits = torch.as_tensor(logits)

    def action_logits(self, observation: dict[str, np.ndarray]) -> torch.Tensor:
        """The logits given to :meth:`set` (each call to ``set`` serves one step)."""
        if self._logits is None:
            raise RuntimeError("PrecomputedLogits.set(logits) must be called before env.step")
        logits, self._logits = self._logits, None  # each set() serves exactly one step
        return logits


class LMPolicy:
    """A causal LM as the acting policy: pure categorical sampling at ``temperature``.

    ``act(obs)`` samples tokens from ``logits / temperature``; ``action_logits(obs)`` returns
    exactly those tempered logits, reusing the forward pass when ``obs`` is the one just acted
    on. The model keeps its own KV cache (:class:`IncrementalLM`) that follows the observations;
    a trainer must call :meth:`reset` after each update, since cached keys and values were
    computed with the old weights.

    Args:
        model: a Hugging Face causal LM (put in eval mode here: dropout off).
        num_envs: the batch size of the observations it will see.
        temperature: sampling temperature (> 0), used for every log-probability.
        pad_token_id: any valid token id, fed at masked positions.
        seed: seed of the sampling generator.
        cuda_graphs: on a CUDA device, decode on a static KV cache replayed as a CUDA graph
            (:mod:`rlhf_gym.envs.static_lm`; same logits). Call :meth:`reset` after a weight
            update as always; an optimizer that updates the weights in place keeps the graph.
    """

    def __init__(
        self,
        model: Any,
        num_envs: int = 1,
        temperature: float = 1.0,
        pad_token_id: int = 0,
        seed: int | None = None,
        cuda_graphs: bool = False,
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        model.eval()
        self.lm = make_incremental(model, num_envs, pad_token_id, cuda_graphs)
        self.temperature = temperature
        self.generator = torch.Generator(device=self.lm.device)
        if seed is not None:
            self.generator.manual_seed(seed)
        self._obs_ids: np.ndarray | None = None
        self._obs_mask: np.ndarray | None = None
        self._logits: torch.Tensor | None = None

    def reset(self) -> None:
        """Drop the KV cache and cached logits; call it whenever the model's weights change."""
        self.lm.reset()
        self._logits = self._obs_ids = self._obs_mask = None

    def action_logits(self, observation: dict[str, np.ndarray]) -> torch.Tensor:
        """The tempered logits ``(B, V)`` at ``observation`` (cached for the last one seen)."""
        ids = np.atleast_2d(observation["input_ids"])
        mask = np.atleast_2d(observation["attention_mask"])
        fresh = (
            self._logits is not None
            and np.array_equal(ids, self._obs_ids)
            and np.array_equal(mask, self._obs_mask)
        )
        if not fresh:
            # a row that did not change has finished (a vector env without autoreset leaves
            # it as it is): it leaves the decode batch until it restarts
            self._logits = self.lm.sync(ids, mask, release_unchanged=True) / self.temperature
            self._obs_ids, self._obs_mask = ids.copy(), mask.copy()
        assert self._logits is not None
        return self._logits

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """Sample one token per row: ``(B,)`` int64 (a scalar for an unbatched observation)."""
        logits = self.action_logits(observation)
        tokens = sample_tokens(logits, self.generator).cpu().numpy()
        return tokens[0] if np.ndim(observation["input_ids"]) == 1 else tokens


class ReferencePolicy:
    """Act with the environment's own reference model, at no extra forward pass.

    The environment keeps ``π_ref(·|s)`` of every row up to date (it needs it for the KL term),
    so sampling from it is free: this is the baseline policy of ``rlhf-gym eval`` and of
    best-of-n. With ``temperature=1`` every KL estimate is exactly 0.

    Args:
        env: an :class:`~rlhf_gym.envs.rlhf_env.RLHFEnv` or ``RLHFVectorEnv`` (unwrapped).
        temperature: sampling temperature (> 0).
        seed: seed of the sampling generator.
    """

    def __init__(self, env: Any, temperature: float = 1.0, seed: int | None = None) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.env = env
        self.temperature = temperature
        self.generator = torch.Generator(device=env.device)
        if seed is not None:
            self.generator.manual_seed(seed)

    def action_logits(self, observation: dict[str, np.ndarray]) -> torch.Tensor:
        """The reference's logits at the current states, divided by ``temperature``."""
        return self.env.reference_logits / self.temperature

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """Sample one token per row, like :meth:`LMPolicy.act`."""
        tokens = sample_tokens(self.action_logits(observation), self.generator).cpu().numpy()
        return tokens[0] if np.ndim(observation["input_ids"]) == 1 else tokens
