"""Stable-Baselines3 agents on the RLHF environments: a causal LM as an SB3 policy.

Everything here plugs into SB3 2.x through its public extension points only (policy classes,
a features extractor, callbacks, a logger output format); no SB3 code is copied or forked.

* :class:`LMFeaturesExtractor`: runs a Hugging Face causal LM's body over the (right-padded)
  observation and returns the final hidden state at the last real position,
  ``attention_mask.sum(-1) − 1``, as SB3's features ``(B, H)``.
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

Cost: SB3 acts through a per-step API, so each step runs the LM over the whole observation
(up to the longest real row; no KV cache) and PPO's update runs one forward pass per *state*
rather than per sequence. That is the honest price of the generic API (see
``benchmarks/sb3_vs_native.py``).

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
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from stable_baselines3.dqn.policies import MultiInputPolicy as DQNMultiInputPolicy
from stable_baselines3.dqn.policies import QNetwork
from torch import nn

from rlhf_gym.agents import logs, tags
from rlhf_gym.agents.config import AgentConfig
from rlhf_gym.agents.config import config_field as _f
from rlhf_gym.agents.episodes import EpisodeStats
from rlhf_gym.agents.models import make_policy
from rlhf_gym.envs.lm import DATA_DIR, resolve_model_path

LMSpec = Any  # a name or path, a transformers PretrainedConfig, or a causal LM module


# ---------------------------------------------------------------------- the language model
def load_lm(lm: LMSpec) -> nn.Module:
    """A float32 causal LM in eval mode from a name/path, a config (random init) or a module.

    A module is deep-copied (SB3 builds separate networks, e.g. DQN's target network).
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
    return model.float().eval()


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

    The LM stays in eval mode (dropout off) even while SB3 trains. The last call's inputs and
    hidden states are kept (detached) so that :class:`SB3ActingPolicy` can hand the env the
    very logits an action was sampled from without another forward pass.
    """

    def __init__(self, observation_space: spaces.Dict, lm: LMSpec = "default") -> None:
        model = load_lm(lm)
        super().__init__(observation_space, features_dim=int(model.config.hidden_size))
        high = int(observation_space["input_ids"].high.max())
        vocab = int(model.get_output_embeddings().weight.shape[0])
        if high >= vocab:
            raise ValueError(
                f"lm has a vocabulary of {vocab} but observations hold ids up to {high}"
            )
        self.lm = model
        self.cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def train(self, mode: bool = True) -> LMFeaturesExtractor:
        """SB3's train/eval switch, keeping the LM itself in eval mode (dropout off)."""
        super().train(mode)
        self.lm.eval()  # dropout off while training too (as the native PPO; see its docstring)
        return self

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Features ``(B, H)``: the final hidden state at each row's last real token."""
        ids, mask = (
            obs["input_ids"].long(),
            obs["attention_mask"].long(),
        )  # (B, T); SB3 gives floats
        length = int(mask.sum(-1).max().clamp(min=1))
        ids_, mask_ = ids[:, :length], mask[:, :length]  # right-padded: later columns are padding
        pos = (mask_.cumsum(-1) - 1).clamp(min=0)
        out = self.lm.base_model(input_ids=ids_, attention_mask=mask_, position_ids=pos)
        last = (mask_.sum(-1) - 1).clamp(min=0)  # (B,)
        h = out.last_hidden_state[torch.arange(ids.shape[0], device=ids.device), last]  # (B, H)
        self.cache = (ids.detach(), mask.detach(), h.detach())
        return h


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
            features_extractor_kwargs={"lm": lm},
            net_arch=[],
            ortho_init=False,
            share_features_extractor=True,
        )
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Callable[[float], float]) -> None:
        super()._build(lr_schedule)
        lm = self.features_extractor.lm
        self.action_net = TemperedHead(lm.get_output_embeddings(), self.temperature)
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


def base_envs(venv: VecEnv) -> list[gym.Env]:
    """The in-process environments under SB3 VecEnv wrappers (DummyVecEnv only)."""
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


@dataclass
class SB3PPOConfig(AgentConfig):
    """``stable_baselines3.PPO`` with :class:`LMActorCriticPolicy` (``--agent sb3-ppo``).

    An *update* (the unit of logging, callbacks and checkpoints) is every ``num_envs`` finished
    episodes; SB3 itself trains after every ``n_steps × num_envs`` env steps. The shared fields
    are :class:`~rlhf_gym.agents.config.AgentConfig`'s.
    """

    total_episodes: int = _f(2048, "episodes (responses) to train on")
    num_envs: int = _f(8, "environments in SB3's DummyVecEnv; also episodes per logged update")
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
    num_envs: int = _f(8, "environments in SB3's DummyVecEnv; also episodes per logged update")
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
    them; ``temperature`` is ours), its ``seed`` and ``device``."""
    shared = {f.name for f in fields(AgentConfig)} | {"temperature"}
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
    envs are ``num_envs`` separate ``gym.make`` instances, each loading its own reference and
    reward model.
    """

    agent_name = "sb3"

    def __init__(self, config: Any, writer: Any = None, env_kwargs: dict | None = None) -> None:
        self.cfg, self.writer = config, writer
        kwargs = {**config.env_kwargs(), **(env_kwargs or {})}
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
