"""Stable-Baselines3 agents on the RLHF environments: a causal LM as an SB3 policy.

Everything here plugs into SB3 2.x through its public extension points only (a vector
environment, policy classes, a features extractor, callbacks, a logger output format); no SB3
code is copied or forked.

* :class:`RLHFVecEnv`: SB3's vector environment over ``num_envs`` RLHF environments sharing one
  reference (:class:`SharedReference`: all rows decoded in one call) and one reward model.
* :class:`LMFeaturesExtractor`: runs a Hugging Face causal LM's body over the (right-padded)
  observation and returns the final hidden state at the last real position,
  ``attention_mask.sum(-1) − 1``, as SB3's features ``(B, H)``; with a KV cache while acting.
* :class:`LMActorCriticPolicy`: for ``stable_baselines3.PPO`` (or A2C). The actor is the LM's own
  output head over the vocabulary (so the action distribution *is* the LM's next-token
  distribution, divided by ``temperature``), the critic a zero-initialised linear value head on
  the same hidden state. Training it trains the language model.
* :class:`LMQPolicy`: for ``stable_baselines3.DQN``; the Q-values are the LM head's outputs.
* :class:`AttachPolicyCallback`: attaches the SB3 policy to the environment as the acting policy,
  so the env's KL term sees ``π`` (:class:`SB3ActingPolicy`).
* :class:`RLHFInfoCallback`: logs the env's ``info`` (score, KL, gold score …) to SB3's logger
  (and so TensorBoard) under the tag names of :mod:`rlhf_gym.agents.tags`.
* :class:`SB3PPO` and :class:`SB3DQN`: adapters for ``rlhf-gym train --agent sb3-ppo|sb3-dqn``.

Cost (``benchmarks/sb3_vs_native.py``). Shared: the ``num_envs`` environments of
:class:`RLHFVecEnv` hold one reference and one reward model, and the reference decodes all
rows in one call per step (plus one prefill call for the rows that were reset), as the native
vector environment does. While acting, the policy keeps a KV cache of the rows, so a step runs
the LM on one new token per row, not over the whole prefix. What remains is the price of the
generic per-state API: PPO's update runs the LM once per *distinct sequence in each
minibatch* (states that are prefixes of another state in the minibatch share its pass), where
the native PPO runs each sequence once per epoch whatever its minibatch; SB3 shuffles states,
not sequences, so smaller minibatches mean more passes. The environments step one by one in
Python, and a finished response is scored alone (one reward-model call per episode, where the
native vector environment scores the rows that end together in one call). On a CPU, with as
many gradient steps per rollout as the native PPO, SB3 PPO makes about 0.6× its env steps per
second (``benchmarks/results/sb3_vs_native_cpu.json``).

KL with plain SB3 policies: ``PPO("MultiInputPolicy", env)`` runs on ``RLHF-v0`` too. Without
:class:`AttachPolicyCallback` the env sees no acting policy, warns once and takes ``π = π_ref``
(KL term 0, the reward is the plain score); with it, the KL uses the MLP policy's distribution.

Example:
    >>> import gymnasium as gym, rlhf_gym
    >>> from stable_baselines3 import PPO
    >>> from rlhf_gym.agents.sb3 import AttachPolicyCallback, LMActorCriticPolicy, policy_lm_config
    >>> env = gym.make("RLHFToy-v0")
    >>> model = PPO(LMActorCriticPolicy, env, n_steps=32, batch_size=32,
    ...             policy_kwargs=dict(lm=policy_lm_config(env)))
    >>> _ = model.learn(64, callback=AttachPolicyCallback())
    >>> from rlhf_gym.agents.sb3 import RLHFVecEnv
    >>> venv = RLHFVecEnv("RLHF-v0", 4, max_new_tokens=16)  # one reference for the 4 envs
    >>> model = PPO(LMActorCriticPolicy, venv, n_steps=16, batch_size=64)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from stable_baselines3.dqn.policies import MultiInputPolicy as DQNMultiInputPolicy
from stable_baselines3.dqn.policies import QNetwork
from torch import nn

from rlhf_gym.agents import logs, tags
from rlhf_gym.agents.config import AgentConfig, takes_model
from rlhf_gym.agents.config import config_field as _f
from rlhf_gym.agents.episodes import EpisodeStats
from rlhf_gym.agents.models import make_policy
from rlhf_gym.envs import IncrementalLM, RLHFEnv
from rlhf_gym.envs.lm import DATA_DIR, cache_argument, fuse_activations, resolve_model_path
from rlhf_gym.envs.policy import sample_tokens

LMSpec = Any  # a name or path, a transformers PretrainedConfig, or a causal LM module


# ---------------------------------------------------------------------- the language model
def load_lm(lm: LMSpec) -> nn.Module:
    """A float32 causal LM in eval mode from a name/path, a config (random init) or a module,
    with its activations fused as the environment's models are
    (:func:`~rlhf_gym.envs.lm.fuse_activations`: the same function, one kernel).

    A module is deep-copied (SB3 builds separate networks, e.g. DQN's target network), so the
    caller's module is not changed.
    """
    from transformers import AutoModelForCausalLM, PretrainedConfig

    if isinstance(lm, nn.Module):
        model = copy.deepcopy(lm)
    elif isinstance(lm, PretrainedConfig):
        model = AutoModelForCausalLM.from_config(lm)
    elif isinstance(lm, str):
        path = resolve_model_path(lm, "lm", {"default": DATA_DIR / "lm"})
        model = AutoModelForCausalLM.from_pretrained(path)
    else:
        raise ValueError(
            f"lm must be a name or path, a PretrainedConfig or a causal LM; got {lm!r}"
        )
    return fuse_activations(model.float().eval())


def policy_lm_config(env: gym.Env | VecEnv) -> Any:
    """The config of the policy LM the native agents would train on ``env``: the reference's
    (:func:`rlhf_gym.agents.models.make_policy`), or the toy's one-layer GPT-2.

    A config (not a module) keeps ``model.save`` small; the weights are in the saved policy.
    """
    venv = env.envs[0] if isinstance(env, DummyVecEnv) else env
    return make_policy(venv.unwrapped).config


class LMFeaturesExtractor(BaseFeaturesExtractor):
    """Final hidden state ``(B, H)`` of a causal LM at each row's last real position.

    Args:
        observation_space: the env's ``Dict(input_ids, attention_mask)`` space.
        lm: see :func:`load_lm`; its vocabulary must match ``input_ids``' range.
        kv_cache: while acting (eval mode, no gradient: SB3's rollout), keep a KV cache of the
            rows (:class:`~rlhf_gym.envs.IncrementalLM`, following the observations as
            :class:`~rlhf_gym.envs.LMPolicy` does), so a step runs the LM on one new token per
            row instead of the whole prefix. Dropped at every train/eval switch (SB3 switches
            around each update, so cached keys and values never outlive the weights).

    Without the cache (training, or ``kv_cache=False``) a batch of right-padded states runs
    the LM once per *distinct sequence*: a state whose tokens are a prefix of another state's
    in the batch (an earlier step of the same response) takes its hidden state from that
    row's forward pass, which a causal LM makes identical. The LM stays in eval mode (dropout
    off) even while SB3 trains. The last call's inputs and hidden states are kept (detached)
    so that :class:`SB3ActingPolicy` can hand the env the very logits an action was sampled
    from without another forward pass.
    """

    def __init__(
        self, observation_space: spaces.Dict, lm: LMSpec = "default", kv_cache: bool = False
    ) -> None:
        model = load_lm(lm)
        super().__init__(observation_space, features_dim=int(model.config.hidden_size))
        high = int(observation_space["input_ids"].high.max())
        vocab = int(model.get_output_embeddings().weight.shape[0])
        if high >= vocab:
            raise ValueError(
                f"lm has a vocabulary of {vocab} but observations hold ids up to {high}"
            )
        self.lm = model
        self.kv_cache = kv_cache
        self.cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.rows: IncrementalLM | None = None  # the acting KV cache (not a submodule)

    def train(self, mode: bool = True) -> LMFeaturesExtractor:
        """SB3's train/eval switch, keeping the LM itself in eval mode (dropout off); drops the
        acting KV cache (the weights may change, or just have)."""
        super().train(mode)
        self.lm.eval()  # dropout off while training too (as the native PPO; see its docstring)
        self.rows = None
        return self

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Features ``(B, H)``: the final hidden state at each row's last real token."""
        ids, mask = obs["input_ids"].long(), obs["attention_mask"].long()  # SB3 gives floats
        if self.kv_cache and not self.training and not torch.is_grad_enabled():
            h = self._acting(ids, mask)
        else:
            h = self._distinct(ids, mask)
        self.cache = (ids.detach(), mask.detach(), h.detach())
        return h

    def _acting(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states from the KV-cached rows, brought up to date with the observation."""
        if self.rows is None:  # the first batch after a switch sets the rows (SB3's num_envs)
            self.rows = IncrementalLM(_HiddenStates(self.lm.base_model), ids.shape[0], 0)
        elif self.rows.num_rows != ids.shape[0]:  # another batch size: leave the cache alone
            return self._distinct(ids, mask)
        # a copy: the rows write a restarted row's logits into their tensor in place
        return self.rows.sync(ids.cpu().numpy(), mask.cpu().numpy()).clone()

    def _distinct(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states from one forward pass over the batch's distinct sequences."""
        length = mask.sum(-1)  # (B,)
        width = int(length.max().clamp(min=1))
        ids, mask = ids[:, :width], mask[:, :width]  # right-padded: later columns are padding
        columns = torch.arange(width, device=ids.device)
        if bool((mask == (columns[None, :] < length[:, None]).long()).all()):
            source = covering_rows(ids, mask)  # (B,) the row whose pass serves each row
        else:  # not right-padded (a random check_env sample): every row on its own
            source = torch.arange(ids.shape[0], device=ids.device)
        run, index = torch.unique(source, return_inverse=True)
        ids_, mask_ = ids[run], mask[run]
        pos = (mask_.cumsum(-1) - 1).clamp(min=0)
        out = self.lm.base_model(input_ids=ids_, attention_mask=mask_, position_ids=pos)
        last = (length - 1).clamp(min=0)  # (B,)
        return out.last_hidden_state[index, last]  # (B, H)


def covering_rows(ids: torch.Tensor, mask: torch.Tensor, chunk: int = 0) -> torch.Tensor:
    """For each right-padded row, the longest row (then the first) whose tokens start with its
    tokens: ``(B,)`` indices; a row no other row extends is its own. Compares ``chunk`` rows
    with all at a time (0: as many as keep the comparison to about 16M elements)."""
    n = ids.shape[0]
    chunk = chunk or max(1, 2**24 // max(1, n * ids.shape[1]))
    length, real = mask.sum(-1), mask.bool()
    rank = length * n + (n - 1 - torch.arange(n, device=ids.device))  # longer, then earlier
    out = torch.empty(n, dtype=torch.long, device=ids.device)
    for a in range(0, n, chunk):
        b = slice(a, a + chunk)
        agree = ((ids[b, None] == ids[None]) | ~real[b, None]).all(-1)  # (c, n)
        covers = agree & (length[None] >= length[b, None]) & (length[b, None] > 0)
        out[b] = torch.where(covers, rank[None], -1).argmax(-1)
    return torch.where(length > 0, out, torch.arange(n, device=ids.device))


class _HiddenStates(nn.Module):
    """A causal LM's body seen as a "causal LM" whose logits are its final hidden states, so
    that :class:`~rlhf_gym.envs.IncrementalLM` keeps its KV cache and returns ``(B, H)``."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.cache_kw = cache_argument(body)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values: Any = None,
        use_cache: bool = True,
        logits_to_keep: int = 0,
    ) -> dict[str, Any]:
        out = self.body(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **{self.cache_kw: past_key_values},
        )
        h = out.last_hidden_state[:, -logits_to_keep:]
        return _Output(logits=h, past_key_values=out[self.cache_kw])


class _Output(dict):
    """A model output as :class:`~rlhf_gym.envs.IncrementalLM` reads it (keys and ``.logits``)."""

    @property
    def logits(self) -> torch.Tensor:
        return self["logits"]


class TemperedHead(nn.Module):
    """The LM's output head divided by the sampling temperature: logits ``(B, V)``."""

    def __init__(self, head: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.head, self.temperature = head, float(temperature)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, H)`` hidden states to tempered ``(B, V)`` logits."""
        return self.head(h) / self.temperature


# ---------------------------------------------------------------------- SB3 policies
class VocabularyCategorical(CategoricalDistribution):
    """SB3's categorical distribution, drawing with :func:`~rlhf_gym.envs.policy.sample_tokens`
    (torch's global generator, which SB3 seeds): the same distribution as
    ``Categorical.sample``, without its exponential variate per vocabulary entry."""

    def sample(self) -> torch.Tensor:
        return sample_tokens(self.distribution.logits, None)


class LMActorCriticPolicy(MultiInputActorCriticPolicy):
    """PPO/A2C policy whose actor is a causal LM's next-token head and critic a value head.

    Args:
        observation_space, action_space, lr_schedule: given by SB3.
        lm: the language model (:func:`load_lm`; default: the embedded model of ``RLHF-v0``).
        temperature: the actor's logits are ``LM logits / temperature``.
        **kwargs: other :class:`~stable_baselines3.common.policies.ActorCriticPolicy` options;
            the features extractor, ``net_arch=[]``, ``ortho_init=False`` (an orthogonal
            re-initialisation would wipe the pretrained weights) and a shared extractor are fixed.

    Example:
        >>> from stable_baselines3 import PPO
        >>> model = PPO(LMActorCriticPolicy, gym.make("RLHF-v0"))  # doctest: +SKIP
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        lr_schedule: Callable[[float], float],
        lm: LMSpec = "default",
        temperature: float = 1.0,
        **kwargs: Any,
    ) -> None:
        self.temperature = temperature  # read by _build, which SB3's __init__ calls
        kwargs.update(
            features_extractor_class=LMFeaturesExtractor,
            features_extractor_kwargs={"lm": lm, "kv_cache": True},
            net_arch=[],
            ortho_init=False,
            share_features_extractor=True,
        )
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Callable[[float], float]) -> None:
        super()._build(lr_schedule)
        lm = self.features_extractor.lm
        self.action_net = TemperedHead(lm.get_output_embeddings(), self.temperature)
        self.action_dist = VocabularyCategorical(int(self.action_space.n))
        nn.init.zeros_(self.value_net.weight)  # values start at 0, as the native value head
        nn.init.zeros_(self.value_net.bias)
        # the optimizer SB3 built holds the replaced Linear: rebuild it over the real parameters
        self.optimizer = self.optimizer_class(
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    @property
    def lm(self) -> nn.Module:
        """The Hugging Face causal LM being trained."""
        return self.features_extractor.lm

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {
            **super()._get_constructor_parameters(),
            "lm": self.features_extractor_kwargs["lm"],
            "temperature": self.temperature,
        }


class LMQPolicy(DQNMultiInputPolicy):
    """DQN policy whose Q-values ``Q(s, ·)`` are a causal LM head's outputs over the vocabulary.

    Both the online and the target network get their own copy of the LM (SB3's contract).

    Args:
        observation_space, action_space, lr_schedule: given by SB3.
        lm: the language model (:func:`load_lm`).
        **kwargs: other DQN policy options; the features extractor and ``net_arch=[]`` are fixed.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        lr_schedule: Callable[[float], float],
        lm: LMSpec = "default",
        **kwargs: Any,
    ) -> None:
        kwargs.update(
            features_extractor_class=LMFeaturesExtractor,
            features_extractor_kwargs={"lm": lm},
            net_arch=[],
        )
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def make_q_net(self) -> QNetwork:
        """SB3's Q-network with the LM head as its output layer."""
        q = super().make_q_net()
        q.q_net = q.features_extractor.lm.get_output_embeddings()  # (B, H) -> (B, V) Q-values
        return q

    @property
    def lm(self) -> nn.Module:
        """The online network's Hugging Face causal LM (the one being trained)."""
        return self.q_net.features_extractor.lm

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "lm": self.features_extractor_kwargs["lm"]}


# ---------------------------------------------------------------------- acting policy for the KL
class SB3ActingPolicy:
    """An SB3 model as the env's acting policy (``action_logits(obs) -> (B, V)``).

    * Actor-critic policies: the logits of the action distribution. With
      :class:`LMActorCriticPolicy` the hidden states of the forward pass that chose the action
      are reused (one small head matmul, no second LM pass); otherwise the policy runs.
    * DQN: the ε-greedy behaviour distribution itself, ``ε/V + (1 − ε)·[a = argmax Q]``, with
      ε the model's current ``exploration_rate``, and ε = 1 (uniform) before
      ``learning_starts``, where SB3 samples every action at random.
    """

    def __init__(self, model: BaseAlgorithm) -> None:
        self.model = model

    @torch.no_grad()
    def action_logits(self, observation: dict[str, np.ndarray]) -> torch.Tensor:
        """The logits ``(B, V)`` of the model's action distribution at ``observation``."""
        policy = self.model.policy
        if isinstance(policy, LMActorCriticPolicy):
            cached = self._from_cache(policy, observation)
            if cached is not None:
                return cached
        obs, _ = policy.obs_to_tensor({k: np.atleast_2d(v) for k, v in observation.items()})
        if hasattr(policy, "q_net"):
            q = policy.q_net(obs)  # (B, V)
            eps = float(self.model.exploration_rate)
            if self.model.num_timesteps < getattr(self.model, "learning_starts", 0):
                eps = 1.0  # SB3's warm-up: actions drawn uniformly, whatever ε says
            probs = torch.full_like(q, eps / q.shape[-1])
            probs.scatter_add_(1, q.argmax(-1, keepdim=True), torch.full_like(q[:, :1], 1 - eps))
            return probs.log()
        return policy.get_distribution(obs).distribution.logits

    @staticmethod
    def _from_cache(policy: LMActorCriticPolicy, observation: dict[str, np.ndarray]) -> Any:
        cache = policy.features_extractor.cache
        if cache is None:
            return None
        ids_c, mask_c, h = cache
        ids = torch.as_tensor(np.atleast_2d(observation["input_ids"]), device=ids_c.device)
        mask = torch.as_tensor(np.atleast_2d(observation["attention_mask"]), device=ids_c.device)
        if ids.shape[1] != ids_c.shape[1]:
            return None
        same = (ids[:, None] == ids_c[None]).all(-1) & (mask[:, None] == mask_c[None]).all(-1)
        if not same.any(-1).all():  # (B, B_cache): every row must be one the policy just saw
            return None
        return policy.action_net(h[same.float().argmax(-1)])


# ---------------------------------------------------------------------- the vector environment
class SharedReference:
    """One frozen reference LM for ``num_envs`` single environments, all rows decoded together.

    A *reference object* for :class:`~rlhf_gym.envs.RLHFEnv`'s ``model=`` argument (the
    environment's public extension point, as LoRA's adapter-off reference): each environment
    asks it for its rows (``incremental``) and gets a view of one row of a single KV-cached
    :class:`~rlhf_gym.envs.IncrementalLM` of ``num_envs`` rows. A view's ``start`` (a reset) and
    ``advance`` (a step) only record the work; the first read of a row's ``logits`` with work
    pending runs it for *every* row that has some, as one prefill call (the rows that were
    reset) and one decode call (the rows that stepped). In SB3's ``DummyVecEnv`` the first
    environment's step thus decodes the previous step's tokens of all rows at once.

    Args:
        model: the frozen causal LM (a loaded environment's ``reference_model``).
        num_envs: the number of environments (rows); each calls :meth:`incremental` once.

    Attributes:
        calls: the number of batched model calls so far (prefill and decode).
    """

    def __init__(self, model: nn.Module, num_envs: int) -> None:
        self.model, self.num_envs = model, num_envs
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.rows: IncrementalLM | None = None
        self.calls = 0
        self._views = 0
        self._to_prefill: dict[int, list[int]] = {}  # row -> token ids to prefill
        self._tokens = np.zeros(num_envs, dtype=np.int64)  # row -> token to decode
        self._pending = np.zeros(num_envs, dtype=bool)  # rows with a token to decode
        self._started = False

    def incremental(self, num_rows: int, pad_token_id: int) -> _ReferenceRow:
        """The next environment's row (the environment calls this once, with ``num_rows=1``)."""
        if num_rows != 1 or self._views >= self.num_envs:
            raise ValueError(
                f"SharedReference serves {self.num_envs} single environments (one row each); "
                f"asked for {num_rows} more row(s) after {self._views}"
            )
        if self.rows is None:
            self.rows = IncrementalLM(self.model, self.num_envs, pad_token_id)
        self._views += 1
        return _ReferenceRow(self, self._views - 1)

    def start(self, row: int, tokens: Sequence[int]) -> None:
        """Record a prefill of ``row`` (a reset replaces any token still to decode)."""
        self._to_prefill[row] = list(tokens)
        self._pending[row] = False

    def advance(self, row: int, token: int) -> None:
        """Record ``token`` to append to ``row``."""
        if row in self._to_prefill or self._pending[row]:
            self.flush()  # never two steps of one row in one call
        self._tokens[row], self._pending[row] = token, True

    def pending(self, row: int) -> bool:
        """Whether ``row`` has recorded work (its logits are out of date)."""
        return row in self._to_prefill or bool(self._pending[row])

    def flush(self) -> None:
        """Run the recorded work of all rows: one prefill call and one decode call at most."""
        assert self.rows is not None
        if self._to_prefill:
            rows = sorted(self._to_prefill)
            if not self._started and rows != list(range(self.num_envs)):
                raise RuntimeError(
                    "reset every environment before stepping one: the shared reference "
                    "prefills all rows together the first time"
                )
            self.rows.start(rows, [self._to_prefill[r] for r in rows])
            self._to_prefill.clear()
            self._started, self.calls = True, self.calls + 1
        if self._pending.any():
            self.rows.advance(self._tokens, self._pending)
            self._pending[:] = False
            self.calls += 1


class _ReferenceRow:
    """Row ``row`` of a :class:`SharedReference`: one environment's reference rows (B = 1)."""

    def __init__(self, shared: SharedReference, row: int) -> None:
        self.shared, self.row = shared, row
        self.model = shared.model  # the environment's reference_model
        self.device = next(shared.model.parameters()).device

    @property
    def logits(self) -> torch.Tensor | None:
        """``(1, V)`` next-token logits of this row (runs all rows' recorded work if needed)."""
        shared = self.shared
        if shared.pending(self.row):
            shared.flush()
        if shared.rows is None or shared.rows.logits is None:
            return None
        return shared.rows.logits[self.row : self.row + 1]

    def start(self, rows: Sequence[int], sequences: Sequence[Sequence[int]]) -> None:
        """(Re)start the row with a prompt."""
        (seq,) = sequences
        self.shared.start(self.row, seq)

    def advance(self, tokens: Any, active: Any) -> None:
        """Append ``tokens[0]`` if ``active[0]``."""
        if bool(np.asarray(active).reshape(-1)[0]):
            self.shared.advance(self.row, int(np.asarray(tokens).reshape(-1)[0]))

    def next_token_logits(self, sequences: Any, starts: Any) -> list[torch.Tensor]:
        """The deferred reference pass (``reference_pass="deferred"``): the shared rows' own."""
        assert self.shared.rows is not None
        return self.shared.rows.next_token_logits(sequences, starts)


class RLHFVecEnv(DummyVecEnv):
    """SB3's vector environment over ``num_envs`` RLHF environments that share their models.

    The first environment loads the reference, tokenizer and reward model the ordinary way
    (``gym.make(env_id, **kwargs)``: the same code and errors); every environment is then built
    on those objects, the reference as a :class:`SharedReference`, so memory holds one
    reference and one reward model whatever ``num_envs`` is, and the reference decodes all rows
    in one call per step. Ids with fixed, table-based models (the toy) are made one by one.

    SB3 semantics are ``DummyVecEnv``'s: same-step autoreset, the last observation in
    ``info["terminal_observation"]``, ``info["TimeLimit.truncated"]`` (always ``False``: an
    episode ends with ``terminated=True``), each row's ``info`` the single environment's
    (``score``, ``kl``, ``kl_sum``, ``gold_score``, ``response_text`` …); ``seed(s)`` seeds row
    ``i`` with ``s + i``, as ``gym.make_vec``. Each episode gives exactly what a single
    environment seeded the same way gives (up to float rounding of the batched reference).

    Why not wrap :class:`~rlhf_gym.envs.RLHFVectorEnv`: it follows Gymnasium's next-step
    autoreset (the step after an episode ends resets that row and ignores its action; it offers
    no same-step mode) and its ``reset()`` restarts every row, while SB3 needs a finished row's
    next episode in the same step, the other rows untouched. Translating would give every
    episode an extra SB3 transition at a state that does not exist, trained on like a real one.

    Args:
        env_id: a registered id.
        num_envs: the number of environments.
        **kwargs: ``gym.make`` keyword arguments (names, paths and numbers).
    """

    def __init__(self, env_id: str, num_envs: int, **kwargs: Any) -> None:
        first = gym.make(env_id, **kwargs)
        self.reference: SharedReference | None = None
        if takes_model(env_id) and isinstance(first.unwrapped, RLHFEnv):
            loaded = first.unwrapped
            self.reference = SharedReference(loaded.reference_model, num_envs)
            spec = first.spec
            assert spec is not None
            shared = dict(
                model=self.reference,
                tokenizer=loaded.tokenizer,
                reward_model=loaded.reward_model,
            )
            own = {k: v for k, v in spec.kwargs.items() if k not in (*shared, "reward_label")}
            first.close()

            def make() -> gym.Env:
                env = RLHFEnv(**own, **shared)
                env.spec = spec  # the id and the names it was made from (for render and logs)
                return env

            fns = [make] * num_envs
        else:
            fns = [lambda: first] + [lambda: gym.make(env_id, **kwargs)] * (num_envs - 1)
        super().__init__(fns)


def base_envs(venv: VecEnv) -> list[gym.Env]:
    """The in-process environments under SB3 VecEnv wrappers (DummyVecEnv, so RLHFVecEnv)."""
    while hasattr(venv, "venv"):
        venv = venv.venv
    if not isinstance(venv, DummyVecEnv):
        raise TypeError(
            "AttachPolicyCallback needs the envs in this process (DummyVecEnv): a subprocess "
            f"env would only see a stale copy of the policy; got {type(venv).__name__}"
        )
    return [e.unwrapped for e in venv.envs]


class AttachPolicyCallback(BaseCallback):
    """Attach the SB3 model to every env as its acting policy while ``learn`` runs.

    Without it the env takes ``π = π_ref`` (KL 0, a one-time warning). Detaches at the end.
    """

    def _on_training_start(self) -> None:
        acting = SB3ActingPolicy(self.model)
        for env in base_envs(self.training_env):
            env.set_policy(acting)

    def _on_training_end(self) -> None:
        for env in base_envs(self.training_env):
            env.set_policy(None)

    def _on_step(self) -> bool:
        return True


class RLHFInfoCallback(BaseCallback):
    """Log each finished episode's ``info`` into SB3's logger under :mod:`~rlhf_gym.agents.tags`.

    Per episode it records (as means until SB3's next dump) ``objective/scores``,
    ``objective/kl`` (``info["kl_sum"]``), ``objective/rlhf_reward``,
    ``objective/response_length``, ``objective/gold_scores`` when the task has a gold labeler,
    and ``objective/kl_coef`` and ``charts/episodes``. SB3 writes them to TensorBoard against
    its ``num_timesteps`` when ``tensorboard_log`` is set.

    Args:
        every: call ``on_update(stats)`` after each ``every`` finished episodes (0: never).
        on_update: receives the mean stats of those episodes, plus ``charts/episodes`` and
            ``charts/steps_per_second`` (env steps per second since the previous call).
        max_episodes: stop ``learn`` once this many episodes have finished (0: no limit).
    """

    def __init__(
        self,
        every: int = 0,
        on_update: Callable[[dict[str, float]], None] | None = None,
        max_episodes: int = 0,
    ) -> None:
        super().__init__()
        self.every, self.on_update, self.max_episodes = every, on_update, max_episodes
        self.episodes = 0
        self.pending = EpisodeStats()
        self._t0, self._steps0 = time.perf_counter(), 0

    def _on_training_start(self) -> None:
        self._t0, self._steps0 = time.perf_counter(), self.num_timesteps

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done and "score" in info:
                self._record(info)
        return not (self.max_episodes and self.episodes >= self.max_episodes)

    def _record(self, info: dict[str, Any]) -> None:
        self.episodes += 1
        score, kl, coef = float(info["score"]), float(info["kl_sum"]), float(info["kl_coef"])
        log = self.logger
        log.record_mean(tags.SCORES, score)
        log.record_mean(tags.KL, kl)
        log.record_mean(tags.RLHF_REWARD, score - coef * kl)
        log.record_mean(tags.RESPONSE_LENGTH, float(info["response_length"]))
        log.record(tags.KL_COEF, coef)
        log.record(tags.EPISODES, self.episodes)
        self.pending.add(info)
        if "gold_score" in info:
            log.record_mean(tags.GOLD_SCORES, float(info["gold_score"]))
        if self.every and self.episodes % self.every == 0 and self.on_update is not None:
            now = time.perf_counter()
            stats = {
                **self.pending.scalars(coef),
                tags.EPISODES: float(self.episodes),
                tags.STEPS_PER_SECOND: (self.num_timesteps - self._steps0) / (now - self._t0),
            }
            self.pending, self._t0, self._steps0 = EpisodeStats(), now, self.num_timesteps
            self.on_update(stats)


# ---------------------------------------------------------------------- rlhf-gym train adapters


SHARED_MODELS_HELP = (
    "one reference (decoding all rows in one call) and one reward model for all environments "
    "(RLHFVecEnv); false: SB3's DummyVecEnv of gym.make environments, each loading its own"
)


@dataclass
class SB3PPOConfig(AgentConfig):
    """``stable_baselines3.PPO`` with :class:`LMActorCriticPolicy` (``--agent sb3-ppo``).

    An *update* (the unit of logging, callbacks and checkpoints) is every ``num_envs`` finished
    episodes; SB3 itself trains after every ``n_steps × num_envs`` env steps. The shared fields
    are :class:`~rlhf_gym.agents.config.AgentConfig`'s.
    """

    total_episodes: int = _f(2048, "episodes (responses) to train on")
    num_envs: int = _f(8, "environments in SB3's vector env; also episodes per logged update")
    shared_models: bool = _f(True, SHARED_MODELS_HELP)
    n_steps: int = _f(32, "env steps per environment per SB3 rollout")
    batch_size: int = _f(64, "SB3 minibatch size, in states (tokens)")
    n_epochs: int = _f(4, "SB3 passes over each rollout")
    learning_rate: float = _f(3e-4, "Adam learning rate")
    gamma: float = _f(1.0, "discount (1: the score is all that matters at the end)")
    gae_lambda: float = _f(0.95, "GAE lambda")
    clip_range: float = _f(0.2, "PPO policy ratio clip")
    ent_coef: float = _f(0.0, "entropy bonus coefficient")
    vf_coef: float = _f(0.5, "value loss coefficient")
    max_grad_norm: float = _f(1.0, "gradient clipping norm")
    temperature: float = _f(1.0, "the actor's logits are the LM's divided by this")

    def algorithm(self, env: VecEnv, lm: nn.Module, device: Any) -> BaseAlgorithm:
        """The SB3 PPO model on ``env`` whose policy starts from ``lm``."""
        policy_kwargs = dict(lm=lm, temperature=self.temperature)
        arguments = sb3_arguments(self, device)
        return PPO(LMActorCriticPolicy, env, **arguments, policy_kwargs=policy_kwargs)


@dataclass
class SB3DQNConfig(AgentConfig):
    """``stable_baselines3.DQN`` with :class:`LMQPolicy` (``--agent sb3-dqn``).

    The env uses ``reward_form="ref_logprob"`` (``score·[done] + β·log π_ref``): a reward that
    does not depend on the acting policy, as replayed transitions need (``docs/design.md``,
    "KL"). The shared fields are :class:`~rlhf_gym.agents.config.AgentConfig`'s.
    """

    total_episodes: int = _f(2048, "episodes (responses) to collect")
    num_envs: int = _f(8, "environments in SB3's vector env; also episodes per logged update")
    shared_models: bool = _f(True, SHARED_MODELS_HELP)
    kl_coef: float = _f(0.05, "β of the reward score·[done] + β·log π_ref(a|s)")
    learning_rate: float = _f(1e-4, "Adam learning rate")
    buffer_size: int = _f(50_000, "replay buffer size in transitions (tokens)")
    learning_starts: int = _f(256, "env steps before the first gradient step")
    batch_size: int = _f(64, "replayed transitions per gradient step")
    gamma: float = _f(1.0, "discount")
    train_freq: int = _f(4, "env steps (per environment) between gradient phases")
    gradient_steps: int = _f(4, "gradient steps per phase")
    target_update_interval: int = _f(500, "env steps between target-network copies")
    exploration_fraction: float = _f(0.5, "fraction of the step budget over which ε decays")
    exploration_final_eps: float = _f(0.05, "final ε of the ε-greedy behaviour")
    temperature: float = _f(0.05, "held-out evaluation samples softmax(Q / temperature)")

    def env_kwargs(self) -> dict[str, Any]:
        """The ``gym.make`` keyword arguments: the policy-independent reward form."""
        return {**super().env_kwargs(), "reward_form": "ref_logprob"}

    def algorithm(self, env: VecEnv, lm: nn.Module, device: Any) -> BaseAlgorithm:
        """The SB3 DQN model on ``env`` whose Q-network starts from ``lm``."""
        return DQN(LMQPolicy, env, **sb3_arguments(self, device), policy_kwargs=dict(lm=lm))


def sb3_arguments(cfg: AgentConfig, device: Any = "auto") -> dict[str, Any]:
    """The SB3 algorithm's keyword arguments: the config's own fields (named as SB3 names
    them; ``temperature`` and ``shared_models`` are ours), its ``seed`` and ``device``."""
    shared = {f.name for f in fields(AgentConfig)} | {"temperature", "shared_models"}
    own = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in shared}
    return {**own, "seed": cfg.seed, "device": device}


class LatestValues(KVWriter):
    """An SB3 logger output that keeps the last value of every key (for our TensorBoard run)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def write(self, key_values: dict[str, Any], key_excluded: Any, step: int = 0) -> None:
        """Keep the latest value of every key SB3 dumps."""
        self.values.update(key_values)


# SB3's own training diagnostics, written to our run under these tags (glossary in tags.py)
SB3_KEYS = {
    "train/loss": tags.SB3_LOSS,
    "train/policy_gradient_loss": tags.SB3_POLICY_LOSS,
    "train/value_loss": tags.SB3_VALUE_LOSS,
    "train/approx_kl": tags.SB3_APPROX_KL,
    "train/clip_fraction": tags.SB3_CLIP_FRACTION,
    "train/entropy_loss": tags.SB3_ENTROPY_LOSS,
    "rollout/exploration_rate": tags.EPSILON,
}


class SB3Agent:
    """The ``rlhf-gym train`` agent contract around an SB3 algorithm (see :mod:`rlhf_gym.train`).

    ``policy`` is the Hugging Face causal LM inside the SB3 policy; ``env`` the first
    environment (unwrapped: its public surface). Resume restores the SB3 policy (LM, value
    head or target network), its optimizer, ``num_timesteps`` and the counters, but **not
    bit-exactly**: SB3's rollout or replay buffer and the envs' unfinished episodes are not
    saved (a resumed run starts fresh episodes and, for DQN, an empty replay buffer). The
    envs are an :class:`RLHFVecEnv` (one reference and one reward model for all), or with
    ``shared_models=False`` ``num_envs`` separate ``gym.make`` instances, each loading its own.
    """

    agent_name = "sb3"

    def __init__(self, config: Any, writer: Any = None, env_kwargs: dict | None = None) -> None:
        self.cfg, self.writer = config, writer
        kwargs = {**config.env_kwargs(), **(env_kwargs or {})}
        if config.shared_models:
            self.venv: DummyVecEnv = RLHFVecEnv(config.env_id, config.num_envs, **kwargs)
        else:
            self.venv = DummyVecEnv(
                [lambda: gym.make(config.env_id, **kwargs) for _ in range(config.num_envs)]
            )
        self.env = self.venv.envs[0].unwrapped
        torch.manual_seed(config.seed)
        self.model = config.algorithm(self.venv, make_policy(self.env), self.env.device)
        self.latest = LatestValues()
        self.model.set_logger(Logger(folder=None, output_formats=[self.latest]))
        self.update_idx, self.episodes_seen = 0, 0

    @property
    def policy(self) -> nn.Module:
        """The Hugging Face causal LM being trained."""
        return self.model.policy.lm

    def train(self, callback: Callable[[Any, dict[str, float]], None] | None = None) -> dict:
        """Run the remaining updates, calling ``callback(agent, stats)`` after each."""
        cfg = self.cfg
        if self.update_idx == 0:
            logs.write_config(self.writer, cfg)
        last: dict[str, float] = {}

        def on_update(stats: dict[str, float]) -> None:
            nonlocal last
            self.update_idx += 1
            self.episodes_seen = int(stats[tags.EPISODES])
            stats.update(
                {SB3_KEYS[k]: float(v) for k, v in self.latest.values.items() if k in SB3_KEYS}
            )
            logs.write_update(self.writer, stats, self.episodes_seen)
            last = stats
            if callback is not None:
                callback(self, stats)

        target = cfg.num_updates * cfg.num_envs
        info = RLHFInfoCallback(every=cfg.num_envs, on_update=on_update, max_episodes=target)
        info.episodes = self.episodes_seen
        remaining = target - self.episodes_seen
        if remaining > 0:
            # an upper bound on the env steps needed; the callback stops at the episode budget
            steps = (remaining + 2 * cfg.num_envs) * self.env.max_new_tokens
            self.model.learn(
                steps,
                callback=CallbackList([AttachPolicyCallback(), info]),
                reset_num_timesteps=self.update_idx == 0,
            )
        return last

    def state_dict(self) -> dict[str, Any]:
        """SB3 policy and optimizer state, counters and RNG (see the class note on exactness)."""
        return {
            "sb3_policy": self.model.policy.state_dict(),
            "sb3_optimizer": self.model.policy.optimizer.state_dict(),
            "num_timesteps": self.model.num_timesteps,
            "update_idx": self.update_idx,
            "episodes_seen": self.episodes_seen,
            "torch_rng": torch.get_rng_state(),
            "config": asdict(self.cfg),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.model.policy.load_state_dict(state["sb3_policy"])
        self.model.policy.optimizer.load_state_dict(state["sb3_optimizer"])
        self.model.num_timesteps = state["num_timesteps"]
        self.update_idx, self.episodes_seen = state["update_idx"], state["episodes_seen"]
        torch.set_rng_state(state["torch_rng"])


class SB3PPO(SB3Agent):
    """``rlhf-gym train --agent sb3-ppo``: SB3's PPO training the LM (:class:`SB3PPOConfig`)."""

    agent_name = "sb3-ppo"
    config_class = SB3PPOConfig


class SB3DQN(SB3Agent):
    """``rlhf-gym train --agent sb3-dqn``: SB3's DQN over LM-head Q-values (:class:`SB3DQNConfig`).

    ``policy`` is the online Q-network's LM: its logits are Q-values, so sampling it at a low
    ``temperature`` (as ``rlhf-gym train``'s evaluation does) is near-greedy in Q.
    """

    agent_name = "sb3-dqn"
    config_class = SB3DQNConfig
