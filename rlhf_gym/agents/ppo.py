"""Token-level PPO for causal language models, acting through the RLHF vector environment.

The loop reads top to bottom, one function per phase:

1. :meth:`PPO.collect`: ``B`` episodes from ``gym.make_vec(env_id, num_envs=B)``. The policy
   samples with its own KV cache (:class:`~rlhf_gym.envs.policy.LMPolicy`) and hands the env the
   very logits it sampled from, so the env's KL term costs no second policy forward pass. The
   env returns per-token rewards ``score·[done] − β·KL_t`` (the layout of every PPO-RLHF code
   base: Ziegler et al. 2019, the "N implementation details of RLHF" reproduction, TRL).
2. :meth:`PPO.update`: one forward pass per sequence (not per token) recomputes log-probs and
   values; GAE (γ = 1, λ = 0.95), whitened advantages, clipped policy and value losses,
   ``ppo_epochs × num_minibatches`` Adam steps (eps 1e-5) with gradient clipping, a ratio
   threshold that skips runaway minibatches, and a NaN guard.
3. :meth:`PPO.log`: TensorBoard scalars named in :mod:`rlhf_gym.agents.tags`.

Details that keep the KL honest (field notes): pure categorical sampling at ``temperature``
with ``logits / temperature`` for every log-probability, dropout off (the models stay in eval
mode while training), pad distinct from EOS, masks on every forward pass. Test invariant: the
first minibatch of the first epoch has ratio exactly 1, approx-KL 0 and clip fraction 0.

Example:
    >>> from rlhf_gym.agents.ppo import PPO, PPOConfig
    >>> agent = PPO(PPOConfig(env_id="RLHFToy-v0", num_envs=8, total_episodes=16))
    >>> stats = agent.train()
    >>> sorted(stats)[:2]
    ['charts/episodes', 'charts/skipped_minibatches']
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import rlhf_gym  # noqa: F401  (registers the ids)
from rlhf_gym.agents import tags
from rlhf_gym.agents.common import config_field as _f
from rlhf_gym.agents.common import gae, masked_mean, model_env_kwargs, whiten
from rlhf_gym.envs.policy import LMPolicy


@dataclass
class PPOConfig:
    """Every knob of :class:`PPO`; the ``rlhf-gym train`` options are generated from it."""

    env_id: str = _f("RLHF-v0", "registered environment id")
    model: str = _f("default", "policy initialisation and reference: a name or path")
    seed: int = _f(0, "seed of prompts, sampling and minibatch order")
    total_episodes: int = _f(4096, "episodes (responses) to train on")
    num_envs: int = _f(64, "episodes per rollout (the vector env's batch size B)")
    learning_rate: float = _f(1e-4, "Adam learning rate (tiny default LM; 1e-5 for GPT-2-small)")
    temperature: float = _f(1.0, "sampling temperature, used for every log-probability")
    ppo_epochs: int = _f(4, "passes over each rollout")
    num_minibatches: int = _f(4, "minibatches per epoch")
    gamma: float = _f(1.0, "discount (1: the score is all that matters at the end)")
    lam: float = _f(0.95, "GAE lambda")
    clip_range: float = _f(0.2, "PPO policy ratio clip")
    clip_range_value: float = _f(0.2, "value clip around the rollout's values")
    vf_coef: float = _f(0.1, "value loss coefficient")
    max_grad_norm: float = _f(1.0, "gradient clipping norm")
    adam_eps: float = _f(1e-5, "Adam epsilon (N implementation details: 1e-5)")
    whiten_advantages: bool = _f(True, "whiten advantages over the rollout")
    ratio_threshold: float = _f(10.0, "skip a minibatch whose mean ratio exceeds this (TRL)")
    missing_eos_penalty: float = _f(0.0, "subtracted from the score of a response with no EOS")
    critic: str = _f("value_head", "'value_head' (zero-init, on the policy) or 'reward_model'")
    kl_coef: float = _f(0.05, "KL coefficient β (initial β when kl_target is set)")
    kl_estimator: str = _f("k1", "per-token KL estimator in the env: k1, k3 or full")
    kl_target: float = _f(0.0, "adaptive KL target in nats per sequence (0: fixed β)")
    kl_horizon: int = _f(10_000, "adaptive KL horizon in episodes")
    max_new_tokens: int = _f(32, "response length limit")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N or mps")
    dtype: str = _f("float32", "model dtype: float32, bfloat16 or float16")
    checkpoint_every: int = _f(25, "updates between checkpoints (0: only at the end)")

    def __post_init__(self) -> None:
        for name in ("total_episodes", "num_envs", "ppo_epochs", "num_minibatches"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.num_envs % self.num_minibatches:
            raise ValueError(
                f"num_envs={self.num_envs} must be divisible by "
                f"num_minibatches={self.num_minibatches}"
            )
        if self.critic not in ("value_head", "reward_model"):
            raise ValueError(f"critic={self.critic!r} is not one of ['value_head', 'reward_model']")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @property
    def num_updates(self) -> int:
        return max(1, self.total_episodes // self.num_envs)

    @property
    def minibatch_size(self) -> int:
        return self.num_envs // self.num_minibatches

    def env_kwargs(self) -> dict[str, Any]:
        """The ``gym.make_vec`` keyword arguments this config implies."""
        kw: dict[str, Any] = dict(kl_coef=self.kl_coef, kl_estimator=self.kl_estimator)
        if self.kl_target > 0:
            kw.update(kl_target=self.kl_target, kl_horizon=self.kl_horizon)
        return {**kw, **model_env_kwargs(self)}


@dataclass
class Rollout:
    """``B`` finished episodes, padded: prompts left-padded to ``P``, responses right-padded."""

    input_ids: torch.Tensor  # (B, P + L) prompt then response
    attention_mask: torch.Tensor  # (B, P + L)
    response_mask: torch.Tensor  # (B, L) 1 on response tokens
    logprobs: torch.Tensor  # (B, L) log π at sampling time (tempered)
    rewards: torch.Tensor  # (B, L) the env's per-token rewards
    scores: np.ndarray  # (B,)
    kls: np.ndarray  # (B,) per-sequence KL
    gold: np.ndarray | None
    texts: list[tuple[str, str, float]]  # (prompt, response, score)
    kl_coef: float


class ValueHead(nn.Module):
    """A scalar per position on the policy's last hidden state, zero-initialised (values 0)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h).squeeze(-1)


class PPO:
    """Token-level PPO; ``train()`` runs ``config.num_updates`` collect/update/log cycles."""

    agent_name = "ppo"

    def __init__(
        self, config: PPOConfig, writer: Any = None, env_kwargs: dict[str, Any] | None = None
    ) -> None:
        """``writer``: a TensorBoard ``SummaryWriter`` or ``None``; ``env_kwargs``: extra
        ``gym.make_vec`` arguments (a reward model path, a prompt file …)."""
        self.cfg, self.writer = config, writer
        torch.manual_seed(config.seed)
        kwargs = {**config.env_kwargs(), **(env_kwargs or {})}
        self.envs = gym.make_vec(config.env_id, num_envs=config.num_envs, **kwargs)
        self.core = self.envs.unwrapped.episodes
        self.device = self.core.reference.device
        self.policy = make_policy(self.core).to(self.device)
        self.policy.eval()  # dropout off, also while training (field notes)
        self.policy.requires_grad_(True)
        self.critic = make_critic(config.critic, self.policy, self.core).to(self.device)
        params = [*self.policy.parameters(), *self.critic.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=config.learning_rate, eps=config.adam_eps)
        self.sampler = LMPolicy(
            self.policy,
            config.num_envs,
            config.temperature,
            pad_token_id=self.core.pad,
            seed=config.seed,
        )
        self.envs.unwrapped.set_policy(self.sampler)  # the env reads the logits we sampled from
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.update_idx, self.episodes_seen = 0, 0

    # ------------------------------------------------------------------ 1. collect
    @torch.no_grad()
    def collect(self) -> Rollout:
        cfg, B = self.cfg, self.cfg.num_envs
        self.sampler.reset()  # the weights changed since the last rollout: its KV cache is stale
        obs, _ = self.envs.reset(seed=cfg.seed * 1_000_003 + self.update_idx * B)
        prompts = [obs["input_ids"][i, : obs["attention_mask"][i].sum()].tolist() for i in range(B)]
        acts: list[list[int]] = [[] for _ in range(B)]
        logps: list[list[float]] = [[] for _ in range(B)]
        rews: list[list[float]] = [[] for _ in range(B)]
        done = np.zeros(B, dtype=bool)
        scores, kls, gold = np.zeros(B), np.zeros(B), np.full(B, np.nan)
        texts: list[tuple[str, str, float]] = [("", "", 0.0)] * B
        while not done.all():
            logits = self.sampler.action_logits(obs)  # (B, V), already / temperature
            actions = self.sampler.act(obs)
            logp = logits.log_softmax(-1).gather(
                1, torch.as_tensor(actions, device=logits.device)[:, None]
            )
            obs, reward, term, _, info = self.envs.step(actions)
            for i in np.flatnonzero(~done):
                acts[i].append(int(actions[i]))
                logps[i].append(float(logp[i, 0]))
                rews[i].append(float(reward[i]))
                if term[i]:
                    scores[i], kls[i] = info["score"][i], info["kl_sum"][i]
                    if "gold_score" in info:
                        gold[i] = info["gold_score"][i]
                    texts[i] = (
                        str(info["prompt_text"][i]),
                        str(info["response_text"][i]),
                        float(scores[i]),
                    )
            done |= term
        if cfg.missing_eos_penalty:
            for i in range(B):
                if acts[i][-1] != self.core.eos:
                    rews[i][-1] -= cfg.missing_eos_penalty
        return self._pad(
            prompts, acts, logps, rews, scores, kls, None if np.isnan(gold).all() else gold, texts
        )

    def _pad(self, prompts, acts, logps, rews, scores, kls, gold, texts) -> Rollout:
        B, P, L = len(prompts), max(map(len, prompts)), max(map(len, acts))
        ids = torch.full((B, P + L), self.core.pad, dtype=torch.long)
        mask = torch.zeros((B, P + L), dtype=torch.long)
        resp_mask, logp, rew = (torch.zeros(B, L) for _ in range(3))
        for i in range(B):
            p, n = len(prompts[i]), len(acts[i])
            ids[i, P - p : P], mask[i, P - p : P] = torch.tensor(prompts[i]), 1
            ids[i, P : P + n], mask[i, P : P + n] = torch.tensor(acts[i]), 1
            resp_mask[i, :n], logp[i, :n], rew[i, :n] = (
                1,
                torch.tensor(logps[i]),
                torch.tensor(rews[i], dtype=torch.float32),
            )
        dev = self.device
        return Rollout(
            ids.to(dev),
            mask.to(dev),
            resp_mask.to(dev),
            logp.to(dev),
            rew.to(dev),
            scores,
            kls,
            gold,
            texts,
            float(self.core.scoring.coef),
        )

    # ------------------------------------------------------------------ 2. update
    def forward(self, ids: torch.Tensor, mask: torch.Tensor, L: int) -> tuple[torch.Tensor, ...]:
        """Log-probs of the response tokens, entropies and values: ``(n, L)`` each.

        One forward pass per sequence; the logits at column ``P − 1 + t`` predict response
        token ``t`` (the prompt is left-padded to ``P``, so every response starts at ``P``).
        """
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.policy(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            output_hidden_states=self.critic.on_policy,
        )
        P = ids.shape[1] - L
        logits = out.logits[:, P - 1 : -1].float() / self.cfg.temperature  # (n, L, V)
        logp_all = logits.log_softmax(-1)
        logp = logp_all.gather(2, ids[:, P:, None]).squeeze(2)  # (n, L)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        hidden = out.hidden_states[-1] if self.critic.on_policy else None
        values = self.critic(ids, mask, pos, hidden)[:, P - 1 : -1].float()  # (n, L)
        return logp, entropy, values

    def update(self, ro: Rollout) -> dict[str, float]:
        cfg = self.cfg
        B, L = ro.response_mask.shape
        m = ro.response_mask
        order = [torch.randperm(B, generator=self.shuffle) for _ in range(cfg.ppo_epochs)]
        mb = cfg.minibatch_size
        # Old log-probs and values, minibatched exactly like epoch 0 so that its first
        # minibatch reproduces them bit for bit (ratio exactly 1).
        old_logp, old_values = (
            torch.zeros(B, L, device=self.device),
            torch.zeros(B, L, device=self.device),
        )
        with torch.no_grad():
            for k in range(0, B, mb):
                idx = order[0][k : k + mb].to(self.device)
                lp, _, v = self.forward(ro.input_ids[idx], ro.attention_mask[idx], L)
                old_logp[idx], old_values[idx] = lp, v
            adv, returns = gae(ro.rewards, old_values * m, m, cfg.gamma, cfg.lam)
            if cfg.whiten_advantages:
                adv = whiten(adv, m)
        stats: dict[str, list[float]] = {
            k: []
            for k in (
                tags.POLICY_LOSS,
                tags.VALUE_LOSS,
                tags.APPROX_KL,
                tags.CLIPFRAC,
                tags.ENTROPY,
                tags.RATIO,
            )
        }
        skipped, first = 0, None
        for epoch in range(cfg.ppo_epochs):
            for k in range(0, B, mb):
                idx = order[epoch][k : k + mb].to(self.device)
                mm = m[idx]
                logp, entropy, values = self.forward(ro.input_ids[idx], ro.attention_mask[idx], L)
                log_ratio = (logp - old_logp[idx]) * mm
                ratio = log_ratio.exp()
                a = adv[idx]
                pg_loss = masked_mean(
                    torch.max(-a * ratio, -a * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)),
                    mm,
                )
                v_clip = old_values[idx] + (values - old_values[idx]).clamp(
                    -cfg.clip_range_value, cfg.clip_range_value
                )
                vf_loss = 0.5 * masked_mean(
                    torch.max((values - returns[idx]) ** 2, (v_clip - returns[idx]) ** 2), mm
                )
                loss = pg_loss + cfg.vf_coef * vf_loss
                with torch.no_grad():
                    row = {
                        tags.POLICY_LOSS: pg_loss.item(),
                        tags.VALUE_LOSS: vf_loss.item(),
                        tags.APPROX_KL: masked_mean(0.5 * log_ratio**2, mm).item(),
                        tags.CLIPFRAC: masked_mean(
                            ((ratio - 1).abs() > cfg.clip_range).float(), mm
                        ).item(),
                        tags.ENTROPY: masked_mean(entropy, mm).item(),
                        tags.RATIO: masked_mean(ratio, mm).item(),
                    }
                if first is None:
                    first = dict(row)
                if not torch.isfinite(loss) or row[tags.RATIO] > cfg.ratio_threshold:
                    skipped += 1  # NaN guard / runaway batch (TRL's ratio_threshold)
                    continue
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(
                    [*self.policy.parameters(), *self.critic.parameters()], cfg.max_grad_norm
                )
                self.optimizer.step()
                if epoch == cfg.ppo_epochs - 1:
                    for key, value in row.items():
                        stats[key].append(value)
        out = {k: float(np.mean(v)) if v else float("nan") for k, v in stats.items()}
        out[tags.SKIPPED] = float(skipped)
        out[tags.LOGPROB_MISMATCH] = masked_mean((ro.logprobs - old_logp).abs(), m).item()
        self.first_minibatch = first  # for the ratio-1 invariant test
        return out

    # ------------------------------------------------------------------ 3. log
    def log(self, ro: Rollout, stats: dict[str, float], sps: float) -> dict[str, float]:
        stats = {
            **stats,
            tags.SCORES: float(np.mean(ro.scores)),
            tags.KL: float(np.mean(ro.kls)),
            tags.RLHF_REWARD: float(np.mean(ro.scores - ro.kl_coef * ro.kls)),
            tags.KL_COEF: ro.kl_coef,
            tags.RESPONSE_LENGTH: float(ro.response_mask.sum(1).mean()),
            tags.STEPS_PER_SECOND: sps,
            tags.EPISODES: float(self.episodes_seen),
        }
        if ro.gold is not None:
            stats[tags.GOLD_SCORES] = float(np.nanmean(ro.gold))
        if self.writer is not None:
            for key, value in stats.items():
                self.writer.add_scalar(key, value, self.episodes_seen)
            if self.update_idx % 10 == 1 or self.update_idx == self.cfg.num_updates:
                rows = "\n".join(f"| {p} | {r} | {s:+.2f} |" for p, r, s in ro.texts[:8])
                self.writer.add_text(
                    tags.SAMPLES,
                    "| prompt | response | score |\n|---|---|---|\n" + rows.replace("\n\n", " "),
                    self.episodes_seen,
                )
        return stats

    def train(
        self, callback: Callable[[PPO, dict[str, float]], None] | None = None
    ) -> dict[str, float]:
        """Run the remaining updates, calling ``callback(agent, stats)`` after each.

        Returns the last update's stats.
        """
        if self.writer is not None and self.update_idx == 0:
            table = "\n".join(f"|{k}|{v}|" for k, v in asdict(self.cfg).items())
            self.writer.add_text(tags.HYPERPARAMETERS, "|param|value|\n|-|-|\n" + table)
        stats: dict[str, float] = {}
        while self.update_idx < self.cfg.num_updates:
            start = time.perf_counter()
            ro = self.collect()
            update_stats = self.update(ro)
            self.update_idx += 1
            self.episodes_seen += self.cfg.num_envs
            tokens = float(ro.response_mask.sum())
            stats = self.log(ro, update_stats, tokens / (time.perf_counter() - start))
            if callback is not None:
                callback(self, stats)
        return stats

    def state_dict(self) -> dict[str, Any]:
        """Everything but the policy weights needed to continue exactly where training stopped."""
        return {
            "critic": self.critic.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "update_idx": self.update_idx,
            "episodes_seen": self.episodes_seen,
            "sampler_rng": self.sampler.generator.get_state(),
            "shuffle_rng": self.shuffle.get_state(),
            "torch_rng": torch.get_rng_state(),
            "kl_coef": self.core.scoring.coef,
            "config": asdict(self.cfg),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.update_idx, self.episodes_seen = state["update_idx"], state["episodes_seen"]
        self.sampler.generator.set_state(state["sampler_rng"])
        self.shuffle.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        if self.core.scoring.kl_controller is not None:
            self.core.scoring.kl_controller.value = state["kl_coef"]


# ---------------------------------------------------------------------- models
def make_policy(core: Any) -> nn.Module:
    """A trainable copy of the env's reference model.

    The toy preset's reference is a table, not a network: its policy is then a fresh one-layer
    GPT-2 over the same 4 tokens (random start, so the KL starts high and training pulls it in).
    """
    model = getattr(core.reference, "model", None)
    if model is not None:
        policy = copy.deepcopy(model)
        policy = policy.float() if model.dtype == torch.float16 else policy
        return policy.requires_grad_(True)  # the reference is frozen; its copy must not be
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=core.V,
        n_positions=max(8, core.T),
        n_layer=1,
        n_head=2,
        n_embd=32,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        eos_token_id=core.eos,
        bos_token_id=core.eos,
        pad_token_id=core.pad,
    )
    return GPT2LMHeadModel(cfg)


class Critic(nn.Module):
    """Per-position values: a zero-initialised head on the policy, or a reward-model copy."""

    def __init__(self, head: nn.Module, body: nn.Module | None) -> None:
        super().__init__()
        self.head, self.body = head, body
        self.on_policy = body is None

    def forward(self, ids, mask, pos, policy_hidden):  # noqa: ANN001 - internal
        h = (
            policy_hidden
            if self.body is None
            else self.body(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
        )
        return self.head(h.float()).reshape(h.shape[:2])


def make_critic(kind: str, policy: nn.Module, core: Any) -> Critic:
    if kind == "value_head":
        return Critic(ValueHead(policy.config.hidden_size), None)
    rm = getattr(core.scoring.reward_model, "model", None)
    if rm is None or not hasattr(rm, "score"):
        raise ValueError(
            "critic='reward_model' needs a Hugging Face sequence-classifier reward "
            "model with a `score` head (the built-in ones qualify)"
        )
    if rm.config.vocab_size != core.V:
        raise ValueError(
            f"critic='reward_model': the reward model's vocabulary "
            f"({rm.config.vocab_size}) differs from the policy's ({core.V}); a "
            "token-level critic needs the same tokenizer"
        )
    rm = copy.deepcopy(rm).float()
    rm.requires_grad_(True)
    return Critic(rm.score, rm.base_model)
