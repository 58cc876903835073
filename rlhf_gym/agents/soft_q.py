"""Token-level soft Q-learning for causal LMs: the LM's logits are the Q-values.

Design (why each piece is there):

* **Reward.** The environment runs with ``reward_form="ref_logprob"`` and ``kl_coef = β``:
  ``r_t = score·[done] + β·log π_ref(a_t|s_t)``. It does not depend on the policy that
  collected it, so replayed rewards never go stale, and the KL is not counted twice: the
  soft-Q entropy regulariser of the same ``β`` turns it into ``E[score] − β·KL(π ‖ π_ref)``
  (``docs/design.md``, "KL"; the per-token KL penalty of PPO's reward form would make it
  policy dependent). ``β`` stays fixed: an adaptive KL controller would change the meaning of the
  rewards already in the buffer.
* **Q-function, no new heads.** As in Guo et al. 2021 ("Efficient (Soft) Q-Learning for Text
  Generation with Limited Good Data"), the LM's logits ``f_θ(s)`` are the Q-values; with the
  reference as prior they are read relative to the reference's normaliser::

      Q(s, a) = β·(f_θ(s)[a] − logsumexp f_ref(s))       (ref_logprob parameterisation)
      V(s)    = β·logsumexp(Q(s, ·)/β) = β·(logsumexp f_θ(s) − logsumexp f_ref(s))
      π(a|s)  = softmax(Q(s, ·)/β)[a] = softmax(f_θ(s))[a] = π_ref(a|s)·exp((Q° − V)/β)

  with ``Q° = Q − β·log π_ref`` the score-to-go of :func:`rlhf_gym.envs.toy.solve`. So the
  trained LM *is* the policy (a checkpoint is an ordinary causal LM, loadable as the env's
  model), and an LM initialised from the reference starts at ``Q° ≡ 0, V ≡ 0``: its soft
  Bellman residual at the start is the reward-model score alone. The per-state baseline
  ``logsumexp f_ref(s)`` is read from the environment's reference at collection time and
  stored with the transition.
* **Targets.** Soft λ-returns over replayed episodes::

      y_t = r_t + (1 − λ)·V̄(s_{t+1}) + λ·(y_{t+1} − β·log π̄(a_{t+1}|s_{t+1})),   y_T = r_T

  ``λ = 0`` is one-step soft Q-learning (Haarnoja et al. 2017, "Reinforcement Learning with
  Deep Energy-Based Policies"); ``λ = 1`` is multi-step path consistency (Nachum et al. 2017,
  PCL), which Guo et al. combine with the single step because a sparse end-of-sequence
  reward needs many one-step backups to reach the first token. Every λ has the same fixed
  point without importance weights, because ``Q̄(s, a) − β·log π̄(a|s) = V̄(s)`` holds for
  *every* action of a soft Q-function, not only in expectation: the off-policy correction is
  exact.
* **Replay buffer** of whole episodes (FIFO, ``buffer_episodes``); a gradient step replays
  ``batch_size`` episodes with one forward pass per sequence, not per token (a forward pass
  per token, as in RL4LMs' implementation, is tens of times slower).
* **Target network** ``Q̄`` updated by Polyak averaging, ``θ̄ ← (1 − τ)·θ̄ + τ·θ`` after each
  gradient step (Lillicrap et al. 2016); ``tau = 1`` uses the online network itself and saves
  the copy's memory.
* **Double Q** (``double_q=True``, after van Hasselt et al. 2016): the soft value of the next
  state is evaluated with the target's Q-values under the online network's policy,
  ``V̄(s) = Σ_a π_θ(a|s)·(Q̄(s, a) − β·log π_θ(a|s))``, decoupling the policy that picks from
  the values that score.
* **Decoding.** :class:`SoftQPolicy` samples ``π_gen ∝ π_ref·exp(β_gen·(Q − V)/β)``, i.e.
  logits ``f_ref + β_gen·(log π_θ − log π_ref)``: ``β_gen = 1`` is the learned policy,
  ``β_gen = 0`` the reference exactly (the same logits, hence the same samples), larger is
  greedier — ILQL's generation-time β (Snell et al. 2022), in units of ``1/β``.

Defaults. Measured against PPO on the default ``RLHF-v0`` task: the README, "Comparing agents"
(``rlhf-gym compare``) and "The reward–KL frontier" (``benchmarks/frontier.py``). ``β = 0.1``
comes from a sweep on an earlier build of the default models (8,192 episodes, one seed each):
PPO's ``β = 0.05`` is too small for soft-Q, since a TD error of one score unit is
``1/β = 20`` logits; the sampled tokens' logits swing and the policy ends near-deterministic
(entropy 0.04) at a lower score. The learning rate is ``1e-4/β`` by default (1e-3 at
``β = 0.1``; at ``β = 1`` the old fixed 1e-3 diverged: :attr:`SoftQ.base_lr`), decayed
linearly to 0 over the run (without the decay the last rounds' noise is where the policy
ends), with 8 gradient steps per round of 64 episodes (4 left the Q-function under-fitted:
held-out objective 0.82 against 1.00 with 16 at ``β = 0.1``, one seed).

Why not ILQL (Snell et al. 2022, "Offline RL for Natural Language Generation with Implicit
Language Q Learning")? Its separate vocabulary-sized Q heads, target heads and expectile
value head cost more memory than the base model (so in trlX's implementation) and learn
offline from a fixed data set; here the agent collects its own data, and the LM already has one
vocabulary-sized output per state, which the soft-Q reading turns into Q-values at no cost.

Example:
    >>> from rlhf_gym.agents.soft_q import SoftQ, SoftQConfig
    >>> agent = SoftQ(SoftQConfig(env_id="RLHFToy-v0", num_envs=8, total_episodes=16,
    ...                           batch_size=8))
    >>> stats = agent.train()
    >>> "losses/td_loss" in stats
    True
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rlhf_gym.agents import logs, loop, tags
from rlhf_gym.agents.common import annealed_lr, masked_mean
from rlhf_gym.agents.config import AgentConfig, positive_ints
from rlhf_gym.agents.config import config_field as _f
from rlhf_gym.agents.episodes import (
    EpisodeStats,
    first_episodes,
    pad_episodes,
    real_tokens,
    row_info,
)
from rlhf_gym.agents.models import make_vector_env, trainable_policy
from rlhf_gym.envs.policy import LMPolicy, sample_tokens


@dataclass
class SoftQConfig(AgentConfig):
    """Every knob of :class:`SoftQ`; ``rlhf-gym train --agent qlearning`` options come from it.

    The shared fields are :class:`~rlhf_gym.agents.config.AgentConfig`'s.
    """

    num_envs: int = _f(64, "episodes per collection round (the vector env's batch size B)")
    kl_coef: float = _f(
        0.1, "β: the soft-Q temperature and the env's kl_coef in the ref_logprob reward form"
    )
    kl_estimator: str = _f("k1", "per-token KL estimator the env logs: k1, k3 or full")
    learning_rate: float | None = _f(
        None, "Adam learning rate (default 1e-4/β: a parameter step moves Q = β·f by ∝ β)"
    )
    anneal_lr: bool = _f(True, "decay the learning rate linearly to 0 over the run")
    temperature: float = _f(
        1.0, "sampling temperature of the behaviour policy (the Bellman targets always use β)"
    )
    beta_gen: float = _f(
        1.0,
        "decoding sharpness: π ∝ π_ref·exp(β_gen·(Q − V)/β); 1 the "
        "learned policy, 0 the reference exactly",
    )
    lam: float = _f(
        0.95,
        "soft λ-return: 0 one-step soft Q-learning, 1 multi-step path "
        "consistency (Guo et al. 2021)",
    )
    tau: float = _f(0.1, "Polyak rate of the target network per gradient step (1: no copy)")
    double_q: bool = _f(False, "soft double Q: next-state value under the online policy")
    buffer_episodes: int = _f(1024, "replay buffer capacity in episodes (FIFO)")
    batch_size: int = _f(32, "episodes replayed per gradient step")
    gradient_steps: int = _f(8, "gradient steps after each collection round")
    max_grad_norm: float = _f(1.0, "gradient clipping norm")
    adam_eps: float = _f(1e-5, "Adam epsilon")

    def validate(self) -> None:
        """The shared checks, then soft-Q's own (β > 0, λ, τ, buffer and batch sizes)."""
        super().validate()
        positive_ints(self, "buffer_episodes", "batch_size", "gradient_steps")
        if not self.kl_coef > 0:
            raise ValueError(f"kl_coef (β) must be > 0 for soft Q-learning, got {self.kl_coef}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not self.beta_gen >= 0:
            raise ValueError(f"beta_gen must be >= 0, got {self.beta_gen}")
        if not 0 <= self.lam <= 1:
            raise ValueError(f"lam must be in [0, 1], got {self.lam}")
        if not 0 < self.tau <= 1:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")

    def env_kwargs(self) -> dict[str, Any]:
        """The ``gym.make_vec`` keyword arguments: the policy-independent reward form."""
        return {**super().env_kwargs(), "reward_form": "ref_logprob"}


# ---------------------------------------------------------------------- acting
class SoftQPolicy:
    """Decode ``π_gen ∝ π_ref·exp(β_gen·(Q − V)/β)`` in an RLHF environment.

    The logits are ``f_ref + β_gen·(log π_θ − log π_ref)``, divided by ``temperature``: the
    environment's own reference logits (kept up to date for its KL term, so free) plus the
    learned log-ratio. ``β_gen = 0`` gives the reference's logits unchanged, hence exactly the
    samples of :class:`~rlhf_gym.envs.policy.ReferencePolicy` with the same seed;
    ``β_gen = 1`` gives ``softmax(f_θ)``, the LM alone. It implements the
    :class:`~rlhf_gym.envs.policy.ActingPolicy` protocol and ``act``, and acts only in the
    environment it was built on (it reads that environment's reference).

    Args:
        model: the soft-Q agent's LM (``agent.policy``).
        env: the unwrapped :class:`~rlhf_gym.envs.rlhf_env.RLHFEnv` or vector env.
        beta_gen: ``≥ 0``.
        temperature: sampling temperature (> 0).
        seed: seed of the sampling generator.

    Example:
        >>> import gymnasium as gym
        >>> envs = gym.make_vec("RLHFToy-v0", num_envs=2)
        >>> from rlhf_gym.agents.models import make_policy
        >>> model = make_policy(envs.unwrapped)
        >>> policy = SoftQPolicy(model, envs.unwrapped, beta_gen=0.0, seed=0)
        >>> envs.unwrapped.set_policy(policy)
        >>> obs, _ = envs.reset(seed=0)
        >>> policy.act(obs).shape
        (2,)
    """

    def __init__(
        self,
        model: Any,
        env: Any,
        beta_gen: float = 1.0,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> None:
        if not beta_gen >= 0:
            raise ValueError(f"beta_gen must be >= 0, got {beta_gen}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.env = env
        rows = getattr(env, "num_envs", 1)  # a single RLHFEnv is one row
        self.lm = LMPolicy(model, num_envs=rows, temperature=1.0, pad_token_id=env.pad_token_id)
        self.beta_gen, self.temperature = float(beta_gen), float(temperature)
        self.generator = torch.Generator(device=env.device)
        if seed is not None:
            self.generator.manual_seed(seed)

    def reset(self) -> None:
        """Drop the LM's KV cache: call it whenever the weights change."""
        self.lm.reset()

    def action_logits(self, observation: dict[str, np.ndarray]) -> torch.Tensor:
        """``(f_ref + β_gen·(log π_θ − log π_ref)) / temperature`` at the current states."""
        ref = self.env.reference_logits  # (B, V): kept up to date by the env for its KL term
        own = self.lm.action_logits(observation).to(ref.device).float()  # (B, V)
        log_ratio = own.log_softmax(-1) - ref.log_softmax(-1)
        return (ref + self.beta_gen * log_ratio) / self.temperature

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """Sample one token per row (a scalar for an unbatched observation)."""
        tokens = sample_tokens(self.action_logits(observation), self.generator).cpu().numpy()
        return tokens[0] if np.ndim(observation["input_ids"]) == 1 else tokens


# ---------------------------------------------------------------------- replay
@dataclass
class Episode:
    """One finished episode, as replayed: token ids and per-token quantities."""

    prompt: list[int]
    actions: list[int]
    rewards: list[float]  # the env's ref_logprob-form rewards
    ref_logprobs: list[float]  # log π_ref(a_t|s_t) (info["ref_logprob"])
    ref_lse: list[float]  # logsumexp f_ref(s_t): the per-state Q baseline


@dataclass
class Batch:
    """Replayed episodes, padded: prompts left-padded to ``P``, responses right-padded to ``L``."""

    input_ids: torch.Tensor  # (n, P + L)
    attention_mask: torch.Tensor  # (n, P + L)
    response_mask: torch.Tensor  # (n, L)
    actions: torch.Tensor  # (n, L)
    rewards: torch.Tensor  # (n, L)
    ref_logprobs: torch.Tensor  # (n, L)
    ref_lse: torch.Tensor  # (n, L)


def make_batch(episodes: list[Episode], pad: int, device: torch.device) -> Batch:
    """Replayed episodes as one padded batch on ``device``."""
    prompts, actions = [e.prompt for e in episodes], [e.actions for e in episodes]
    per_token = [[e.rewards for e in episodes], [e.ref_logprobs for e in episodes]]
    ids, mask, values = pad_episodes(
        prompts, actions, pad, *per_token, [e.ref_lse for e in episodes]
    )
    resp, rew, ref_lp, lse = values.to(device)
    ids, mask = ids.to(device), mask.to(device)
    P = ids.shape[1] - resp.shape[1]
    return Batch(ids, mask, resp, ids[:, P:], rew, ref_lp, lse)


@dataclass
class Round:
    """One collection round: its episodes (for the buffer) and their summary."""

    episodes: list[Episode]
    stats: EpisodeStats

    @property
    def tokens(self) -> int:
        """Response tokens played (environment steps)."""
        return sum(len(e.actions) for e in self.episodes)


def soft_lambda_returns(
    rewards: torch.Tensor,
    values: torch.Tensor,
    logp: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    lam: float,
) -> torch.Tensor:
    """Soft λ-return targets over right-padded token sequences.

    ``y_t = r_t + (1 − λ)·V(s_{t+1}) + λ·(y_{t+1} − β·log π(a_{t+1}|s_{t+1}))``, and
    ``y_t = r_t`` at the last real token (the episode terminates there).

    Args:
        rewards, values, logp, mask: ``(B, L)``; ``values[:, t] = V(s_t)``,
            ``logp[:, t] = log π(a_t|s_t)``, ``mask`` 1 on real tokens.
        beta: the soft-Q temperature β.
        lam: λ in [0, 1].

    Returns:
        ``(B, L)`` targets, zero on padding.
    """
    L = rewards.shape[1]
    y = torch.zeros_like(rewards)
    for t in reversed(range(L)):
        if t + 1 < L:
            ahead = (1 - lam) * values[:, t + 1] + lam * (y[:, t + 1] - beta * logp[:, t + 1])
            ahead = ahead * mask[:, t + 1]
        else:
            ahead = torch.zeros_like(rewards[:, t])
        y[:, t] = (rewards[:, t] + ahead) * mask[:, t]
    return y


# ---------------------------------------------------------------------- the agent
class SoftQ:
    """Token-level soft Q-learning; ``train()`` runs ``config.num_updates`` collect/update/log
    rounds (the agent contract of :mod:`rlhf_gym.train`).

    Args:
        config: the settings.
        writer: a TensorBoard ``SummaryWriter``, or ``None`` to write nothing.
        env_kwargs: extra ``gym.make_vec`` arguments (a reward model path, a prompt file …).
    """

    agent_name = "qlearning"
    config_class = SoftQConfig

    def __init__(
        self, config: SoftQConfig, writer: Any = None, env_kwargs: dict[str, Any] | None = None
    ) -> None:
        self.cfg, self.writer = config, writer
        torch.manual_seed(config.seed)
        needed = config.env_kwargs()
        clash = {
            k: v
            for k, v in (env_kwargs or {}).items()
            if k in ("reward_form", "kl_coef") and v != needed[k]
        }
        if clash:
            raise ValueError(
                f"the soft-Q agent needs reward_form='ref_logprob' and kl_coef = β; "
                f"env_kwargs overrides {clash}"
            )
        self.envs = make_vector_env(config, env_kwargs)
        self.env = self.envs.unwrapped  # its public surface: reference_logits, pad_token_id, …
        self.device = self.env.device
        self.policy = trainable_policy(self.env)  # eval mode: dropout off while training too
        self.target = None if config.tau == 1 else copy.deepcopy(self.policy).requires_grad_(False)
        self.optimizer = torch.optim.Adam(
            self.policy.parameters(), lr=self.base_lr, eps=config.adam_eps
        )
        self.sampler = SoftQPolicy(
            self.policy, self.env, config.beta_gen, config.temperature, seed=config.seed
        )
        self.env.set_policy(self.sampler)  # the env logs the behaviour's KL
        self.buffer: deque[Episode] = deque(maxlen=config.buffer_episodes)
        self.replay_rng = torch.Generator().manual_seed(config.seed)
        self.update_idx, self.episodes_seen = 0, 0

    # ------------------------------------------------------------------ 1. collect
    @torch.no_grad()
    def collect(self) -> Round:
        """Play one episode in each of the ``num_envs`` rows with the behaviour policy."""
        cfg, B = self.cfg, self.cfg.num_envs
        self.sampler.reset()  # the weights changed since the last round: the KV cache is stale
        eps = [Episode([], [], [], [], []) for _ in range(B)]
        finals: list[dict[str, Any]] = [{} for _ in range(B)]
        ref_lse = np.zeros(B)

        def act(obs: dict[str, np.ndarray]) -> np.ndarray:
            # logsumexp f_ref(s_t), the Q baseline, read before the step moves the reference on
            ref_lse[:] = torch.logsumexp(self.env.reference_logits.float(), -1).cpu().numpy()
            return self.sampler.act(obs)

        seed = cfg.seed * 1_000_003 + self.update_idx * B
        for step in first_episodes(self.envs, act, seed):
            for i in step.rows:
                e = eps[i]
                if not e.actions:
                    e.prompt = real_tokens(step.obs, i)  # the state before the first action
                e.actions.append(int(step.actions[i]))
                e.rewards.append(float(step.rewards[i]))
                e.ref_logprobs.append(float(step.info["ref_logprob"][i]))
                e.ref_lse.append(float(ref_lse[i]))
            for i in step.finished:
                finals[i] = row_info(step.info, i)
        return Round(eps, EpisodeStats.from_infos(finals))

    # ------------------------------------------------------------------ 2. update
    def response_logits(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """``f(s_t)`` for every response token: ``(n, L, V)`` float32, one pass per sequence."""
        L = batch.actions.shape[1]
        pos = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=pos
        )
        return out.logits[:, -L - 1 : -1].float()  # column P − 1 + t predicts token t

    @torch.no_grad()
    def targets(self, batch: Batch, online: torch.Tensor) -> torch.Tensor:
        """Soft λ-return targets ``(n, L)`` from the target network (see the module docstring)."""
        cfg, beta = self.cfg, self.cfg.kl_coef
        f_bar = online if self.target is None else self.response_logits(self.target, batch)
        q_bar = beta * (f_bar - batch.ref_lse[..., None])  # (n, L, V)
        if cfg.double_q:
            logp_all = online.log_softmax(-1)  # the online policy picks …
            values = (logp_all.exp() * (q_bar - beta * logp_all)).sum(-1)  # … the target scores
        else:
            logp_all = f_bar.log_softmax(-1)
            values = beta * (f_bar.logsumexp(-1) - batch.ref_lse)  # (n, L)
        logp = logp_all.gather(2, batch.actions[..., None]).squeeze(2)  # (n, L)
        return soft_lambda_returns(batch.rewards, values, logp, batch.response_mask, beta, cfg.lam)

    def update(self, round_: Round) -> dict[str, float]:
        """Add the round's episodes to the replay buffer, then ``gradient_steps`` steps on
        replayed episodes; returns the mean losses."""
        cfg, beta = self.cfg, self.cfg.kl_coef
        lr = annealed_lr(self.base_lr, self.update_idx, cfg.num_updates, cfg.anneal_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.buffer.extend(round_.episodes)
        rows: list[dict[str, float]] = []
        for _ in range(cfg.gradient_steps):
            idx = torch.randint(len(self.buffer), (cfg.batch_size,), generator=self.replay_rng)
            replayed = [self.buffer[i] for i in idx.tolist()]
            batch = make_batch(replayed, self.env.pad_token_id, self.device)
            m = batch.response_mask
            logits = self.response_logits(self.policy, batch)  # (n, L, V)
            y = self.targets(batch, logits.detach())
            q = beta * (logits.gather(2, batch.actions[..., None]).squeeze(2) - batch.ref_lse)
            loss = 0.5 * masked_mean((q - y) ** 2, m)
            if not torch.isfinite(loss):
                continue  # NaN guard, as in PPO
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.polyak()
            with torch.no_grad():
                logp_all = logits.log_softmax(-1)
                entropy = -(logp_all.exp() * logp_all).sum(-1)  # (n, L)
                rows.append(
                    {
                        tags.TD_LOSS: loss.item(),
                        tags.Q_VALUES: masked_mean(q - beta * batch.ref_logprobs, m).item(),
                        tags.ENTROPY: masked_mean(entropy, m).item(),
                    }
                )
        out = {
            k: float(np.mean([r[k] for r in rows])) if rows else float("nan")
            for k in (tags.TD_LOSS, tags.Q_VALUES, tags.ENTROPY)
        }
        return {**out, tags.LEARNING_RATE: lr}

    @property
    def base_lr(self) -> float:
        """``learning_rate``, or by default ``1e-4/β``.

        Why scale with ``1/β``: Adam moves each parameter by about the learning rate whatever
        the loss's scale, so a step moves the logits ``f`` by about the same amount at every
        β, and the Q-values ``β·f`` by an amount proportional to β. Measured on the default
        task (one seed, 4,096 episodes): 1e-3 is right at β = 0.1 (3e-4 ends lower) and at β =
        1 it diverges (held-out J −2.2, TD loss rising to 6), where 1e-4 ends at J +0.22.
        """
        lr = self.cfg.learning_rate
        return 1e-4 / self.cfg.kl_coef if lr is None else lr

    @torch.no_grad()
    def polyak(self) -> None:
        """``θ̄ ← (1 − τ)·θ̄ + τ·θ`` (nothing to do when ``tau = 1``: the target is θ)."""
        if self.target is not None:
            torch._foreach_lerp_(
                list(self.target.parameters()), list(self.policy.parameters()), self.cfg.tau
            )

    # ------------------------------------------------------------------ 3. log
    def log(self, round_: Round, stats: dict[str, float], sps: float) -> dict[str, float]:
        """Add the round's objective scalars to the update's ``stats``; write TensorBoard."""
        cfg, beta = self.cfg, self.cfg.kl_coef
        stats = {
            **stats,
            **round_.stats.scalars(beta),
            tags.STEPS_PER_SECOND: sps,
            tags.EPISODES: float(self.episodes_seen),
            tags.BUFFER_EPISODES: float(len(self.buffer)),
        }
        if cfg.beta_gen > 0:
            stats[tags.TEMPERATURE] = beta * cfg.temperature / cfg.beta_gen
        logs.write_update(
            self.writer,
            stats,
            self.episodes_seen,
            round_.stats.samples,
            self.update_idx,
            cfg.num_updates,
        )
        return stats

    def train(self, callback: loop.Callback | None = None) -> dict[str, float]:
        """Run the remaining rounds (:func:`rlhf_gym.agents.loop.train`), calling
        ``callback(agent, stats)`` after each; return the last round's stats."""
        return loop.train(self, callback)

    def state_dict(self) -> dict[str, Any]:
        """Everything but the policy weights needed to continue exactly where training stopped:
        the target network, the optimizer, the replay buffer and the random states."""
        return {
            "target": None if self.target is None else self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "buffer": [asdict(e) for e in self.buffer],
            "update_idx": self.update_idx,
            "episodes_seen": self.episodes_seen,
            "sampler_rng": self.sampler.generator.get_state(),
            "replay_rng": self.replay_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "config": asdict(self.cfg),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        if self.target is not None:
            self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.buffer.clear()
        self.buffer.extend(Episode(**e) for e in state["buffer"])
        self.update_idx, self.episodes_seen = state["update_idx"], state["episodes_seen"]
        self.sampler.generator.set_state(state["sampler_rng"])
        self.replay_rng.set_state(state["replay_rng"])
        torch.set_rng_state(state["torch_rng"])
