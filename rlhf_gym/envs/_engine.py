"""The engine that :class:`~rlhf_gym.envs.rlhf_env.RLHFEnv` and its vector version share.

Private: nothing outside :mod:`rlhf_gym.envs` imports this module or reads an environment's
``_engine``; agents and commands use the environments' public surface instead (a test enforces
it, see ``docs/design.md``, "Layering").

:class:`Engine` runs ``B`` episodes side by side. Every model call (reference forward, acting
policy, reward model) is made once per step for all rows; a single environment is the case
``B = 1``. Keeping one engine is what makes the vector environment give the same results as
``B`` single environments: the arithmetic per row is the same code.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rlhf_gym.envs.kl import KL_ESTIMATORS, AdaptiveKLController, estimate_kl, sampled_kl
from rlhf_gym.envs.lm import ReferenceRows
from rlhf_gym.envs.policy import ActingPolicy
from rlhf_gym.envs.rewards import FunctionReward, RewardModel, callable_name, score_responses

REWARD_FORMS: tuple[str, ...] = ("kl", "ref_logprob")
REFERENCE_PASSES: tuple[str, ...] = ("per_step", "deferred")


@dataclass(frozen=True)
class Prompt:
    """A prompt as text and as the token ids the episode starts from."""

    text: str
    ids: tuple[int, ...]
    truncated: bool


def check_kl_coef(value: Any) -> float:
    """``value`` as a float if it is a finite number ``>= 0``; else a ``ValueError`` naming it.

    A NumPy number is fine; a bool is not a coefficient, and ``inf`` would turn a KL of 0 into
    a NaN reward.
    """
    if not (
        isinstance(value, numbers.Real)
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(value)
        and value >= 0
    ):
        raise ValueError(f"kl_coef must be a number >= 0 (finite, not a bool), got {value!r}")
    return float(value)


@dataclass
class Scoring:
    """What turns tokens into rewards (validated once, shared by all rows)."""

    reward_model: RewardModel | None  # set once loaded (validation runs before loading)
    gold: Callable[[str, str], float] | None
    kl_coef: float
    kl_estimator: str
    reward_form: str
    kl_controller: AdaptiveKLController | None

    def __post_init__(self) -> None:
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"kl_estimator={self.kl_estimator!r} is not one of {list(KL_ESTIMATORS)}"
            )
        if self.reward_form not in REWARD_FORMS:
            raise ValueError(f"reward_form={self.reward_form!r} is not one of {list(REWARD_FORMS)}")
        check_kl_coef(self.kl_coef)

    @property
    def coef(self) -> float:
        """The β in force: the adaptive controller's current value, or the fixed ``kl_coef``."""
        return self.kl_controller.value if self.kl_controller else float(self.kl_coef)


class Info:
    """The ``info`` of ``B`` rows in Gymnasium's vector layout: one array per key, and a mask
    ``"_key"`` of the rows that have it. :meth:`row` gives one row as a plain dict."""

    def __init__(self, num_rows: int) -> None:
        self.n = num_rows
        self.values: dict[str, np.ndarray] = {}
        self.masks: dict[str, np.ndarray] = {}

    def put(self, key: str, rows: np.ndarray, values: Any) -> None:
        """Set ``key`` for ``rows`` (``values``: one per row, or one for all)."""
        if key not in self.values:
            text = isinstance(values, str) or (
                not np.isscalar(values) and len(values) and isinstance(values[0], str)
            )
            dtype = object if text else np.asarray(values).dtype
            self.values[key] = (
                np.zeros(self.n, dtype) if not text else np.full(self.n, None, object)
            )
            self.masks[key] = np.zeros(self.n, dtype=bool)
        self.values[key][rows] = values
        self.masks[key][rows] = True

    def merge(self, other: Info) -> Info:
        """Copy every key ``other`` holds for its rows into this info; return ``self``."""
        for key, mask in other.masks.items():
            rows = np.flatnonzero(mask)
            self.put(key, rows, other.values[key][rows])
        return self

    def vector(self) -> dict[str, Any]:
        """The Gymnasium vector layout: ``{key: (B,) array, "_key": (B,) bool mask}``."""
        out: dict[str, Any] = {}
        for key, values in self.values.items():
            out[key], out[f"_{key}"] = values, self.masks[key]
        return out

    def row(self, i: int) -> dict[str, Any]:
        return {
            key: (v[i].item() if isinstance(v[i], np.generic) else v[i])
            for key, v in self.values.items()
            if self.masks[key][i]
        }


class Engine:
    """``B`` RLHF episodes, advanced together (see the environment docstring for semantics).

    Args:
        num_rows: ``B``.
        reference: the frozen reference's rows (:class:`~rlhf_gym.envs.lm.ReferenceRows`).
        tokenizer: decodes responses (``decode(ids, skip_special_tokens=True)``).
        prompts: the prompt pool, already encoded.
        scoring: the reward definition.
        vocab_size, eos_token_id, pad_token_id, max_new_tokens, max_prompt_tokens: sizes.
        policy: the acting policy (``action_logits``), or ``None``.
        reference_pass: ``"per_step"`` (the reference decodes along, every step's reward
            carries its KL) or ``"deferred"`` (one reference pass over each finished
            response; the KL arrives at the last step: see the environment docstring).
    """

    def __init__(
        self,
        num_rows: int,
        reference: ReferenceRows,
        tokenizer: Any,
        prompts: Sequence[Prompt],
        scoring: Scoring,
        vocab_size: int,
        eos_token_id: int,
        pad_token_id: int,
        max_new_tokens: int,
        max_prompt_tokens: int,
        policy: ActingPolicy | None = None,
        reference_pass: str = "per_step",
    ) -> None:
        self.B, self.V = num_rows, vocab_size
        self.reference, self.tokenizer, self.prompts, self.scoring = (
            reference,
            tokenizer,
            prompts,
            scoring,
        )
        self.eos, self.pad = eos_token_id, pad_token_id
        self.max_new, self.max_prompt = max_new_tokens, max_prompt_tokens
        self.T = max_prompt_tokens + max_new_tokens
        self.policy = policy
        self.ids = np.full((num_rows, self.T), pad_token_id, dtype=np.int64)  # (B, T)
        self.mask = np.zeros((num_rows, self.T), dtype=np.int64)  # (B, T)
        self.prompt_of = np.zeros(num_rows, dtype=np.int64)  # prompt index per row
        self.prompt_len = np.zeros(num_rows, dtype=np.int64)
        self.length = np.zeros(num_rows, dtype=np.int64)  # real tokens so far, per row
        self.kl_sum = np.zeros(num_rows, dtype=np.float64)
        self.live = np.zeros(num_rows, dtype=bool)  # started and not yet finished
        self._warned_no_policy = False
        if reference_pass not in REFERENCE_PASSES:
            raise ValueError(
                f"reference_pass={reference_pass!r} is not one of {list(REFERENCE_PASSES)}"
            )
        self.deferred = reference_pass == "deferred"
        if self.deferred and not callable(getattr(reference, "next_token_logits", None)):
            raise ValueError(
                "reference_pass='deferred' needs a reference with next_token_logits() "
                f"(one pass over whole sequences); {type(reference).__name__} has none"
            )
        # Deferred pass: what the acting policy gave at each response step, kept for the KL at
        # the end: log π(a_t) (k1, k3), or the whole log π(·|s_t) (full; allocated on use).
        self.policy_logp_a = np.zeros((num_rows, max_new_tokens), dtype=np.float64)
        self.policy_logp: torch.Tensor | None = None  # (B, max_new, V)
        self.has_policy = np.zeros(num_rows, dtype=bool)  # a policy was attached all along

    # ------------------------------------------------------------------ reset
    def reset_rows(
        self,
        rows: Sequence[int],
        rngs: Sequence[np.random.Generator],
        prompt_index: Sequence[int] | None = None,
    ) -> Info:
        """Start a new episode in each of ``rows``, drawing its prompt with its own rng.

        ``prompt_index`` (one per row) picks the prompts instead; the rngs are drawn from all
        the same, so the random stream does not depend on it.
        """
        if prompt_index is not None:
            prompt_index = list(prompt_index)
            if len(prompt_index) != len(rows) or not all(
                isinstance(k, (int, np.integer)) and 0 <= k < len(self.prompts)
                for k in prompt_index
            ):
                raise ValueError(
                    f"options['prompt_index'] must give {len(rows)} integer(s) in "
                    f"[0, {len(self.prompts)}); got {prompt_index!r}"
                )
        for j, (r, rng) in enumerate(zip(rows, rngs, strict=True)):
            k = int(rng.integers(len(self.prompts)))
            if prompt_index is not None:
                k = int(prompt_index[j])
            p = self.prompts[k]
            n = len(p.ids)
            self.ids[r], self.mask[r] = self.pad, 0
            self.ids[r, :n], self.mask[r, :n] = p.ids, 1
            self.prompt_of[r], self.prompt_len[r], self.length[r] = k, n, n
            self.kl_sum[r], self.live[r] = 0.0, True
        if self.deferred:  # the reference reads each response once it has ended
            self.has_policy[list(rows)] = True
        else:
            self.reference.start(list(rows), [self.prompts[self.prompt_of[r]].ids for r in rows])
        info, rows = Info(self.B), np.asarray(rows)
        chosen = [self.prompts[k] for k in self.prompt_of[rows]]
        info.put("prompt_text", rows, [p.text for p in chosen])
        info.put("prompt_truncated", rows, np.array([p.truncated for p in chosen]))
        return info

    def observation(self, row: int | None = None) -> dict[str, np.ndarray]:
        """Copies of the ``(B, T)`` arrays, or of one row's ``(T,)`` arrays."""
        if row is None:
            return {"input_ids": self.ids.copy(), "attention_mask": self.mask.copy()}
        return {"input_ids": self.ids[row].copy(), "attention_mask": self.mask[row].copy()}

    # ------------------------------------------------------------------ step
    def policy_logprobs(self) -> torch.Tensor | None:
        """``log π(·|s)`` of the attached policy for every row, ``(B, V)``, or ``None``."""
        if self.policy is None:
            if not self._warned_no_policy:
                warnings.warn(
                    "rlhf-gym: no acting policy is attached, so the environment cannot see "
                    "π(·|s) and takes π = π_ref: the KL term is 0. Attach one with "
                    "env.unwrapped.set_policy(...) (see rlhf_gym.envs.policy), or use "
                    "reward_form='ref_logprob', which needs no policy.",
                    stacklevel=4,
                )
                self._warned_no_policy = True
            return None
        logits = self.policy.action_logits(self.observation())
        logits = torch.as_tensor(logits, device=self.reference.device).float()
        if logits.shape != (self.B, self.V):
            raise ValueError(
                f"the attached policy's action_logits returned shape {tuple(logits.shape)}; "
                f"expected (num_envs, vocab) = ({self.B}, {self.V})"
            )
        # -inf is a probability of 0 (top-k masks, np.log(0)); NaN and +inf are no logits,
        # and a row of -inf only is no distribution: they would make the KL NaN.
        bad = torch.isnan(logits) | (logits == float("inf"))
        bad_rows = (bad.any(dim=1) | (logits == float("-inf")).all(dim=1)).nonzero()
        if bad_rows.numel():
            r = int(bad_rows[0, 0])
            what = "NaN or +inf" if bool(bad[r].any()) else "only -inf (no token possible)"
            raise ValueError(
                f"the attached policy ({type(self.policy).__name__}) returned {what} logits for "
                f"row {r}: action_logits must be the (finite, or -inf) logits the action was "
                "sampled from"
            )
        return logits.log_softmax(dim=-1)

    def step_rows(
        self, rows: np.ndarray, actions: np.ndarray, policy_logp: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray, Info]:
        """Apply ``actions[rows]``; return rewards and terminations ``(B,)`` and the info.

        Rows outside ``rows`` get reward 0 and ``terminated=False``.
        """
        if self.deferred:
            return self._step_deferred(rows, actions, policy_logp)
        dev = self.reference.device
        rows_t = torch.as_tensor(rows, device=dev)
        acts = torch.as_tensor(actions[rows], device=dev)
        ref_logp = self.reference.logits[rows_t].log_softmax(dim=-1)  # (n, V)
        ref_lp_a = ref_logp.gather(1, acts[:, None])[:, 0]  # (n,)
        if policy_logp is None:
            kl = torch.zeros_like(ref_lp_a)  # π taken to be π_ref (documented, warned once)
        else:  # in float64: k3's exp(log π_ref − log π) overflows float32 from a ratio of e^88
            kl = estimate_kl(
                self.scoring.kl_estimator,
                policy_logp[rows_t].double(),
                ref_logp.double(),
                acts,
            )
        kl_np, ref_lp_np = kl.double().cpu().numpy(), ref_lp_a.double().cpu().numpy()
        self._check_finite(rows, actions, kl_np, ref_lp_np, policy_logp)
        coef = self.scoring.coef

        finished = self._append(rows, actions)
        done_rows = rows[finished]
        self.kl_sum[rows] += kl_np

        rewards = np.zeros(self.B, dtype=np.float64)
        terminated = np.zeros(self.B, dtype=bool)
        if self.scoring.reward_form == "kl":
            rewards[rows] = 0.0 - coef * kl_np  # 0.0 - … avoids printing -0.0
        else:
            rewards[rows] = coef * ref_lp_np
        info = Info(self.B)
        info.put("kl", rows, kl_np)
        info.put("ref_logprob", rows, ref_lp_np)
        info.put("kl_coef", rows, np.full(len(rows), coef))
        info.put("reward_form", rows, self.scoring.reward_form)
        if done_rows.size:
            self._finish(done_rows, rewards, info)
            terminated[done_rows] = True
        overflow = np.flatnonzero(~np.isfinite(rewards[rows]))
        if overflow.size:  # β·KL or β·log π_ref beyond float64 (a β near 1e308)
            j = int(overflow[0])
            raise ValueError(
                f"the reward of row {int(rows[j])} overflowed to {rewards[rows[j]]} "
                f"(kl_coef={coef}, kl={kl_np[j]}, ref_logprob={ref_lp_np[j]}); use a smaller "
                "kl_coef"
            )
        going = np.zeros(self.B, dtype=bool)
        going[rows[~finished]] = True
        if going.any():
            self.reference.advance(
                self.ids[np.arange(self.B), np.maximum(self.length - 1, 0)], going
            )
        return rewards, terminated, info

    def release(self, rows: np.ndarray) -> None:
        """Finished ``rows`` that stay finished (no autoreset): the per-step reference drops
        them from its decode batch when it can (``IncrementalLM.release``)."""
        release = getattr(self.reference, "release", None)
        if rows.size and not self.deferred and release is not None:
            release(rows)

    def _append(self, rows: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Append ``actions[rows]`` to the rows; which of them ended (EOS or the length limit)."""
        pos = self.length[rows]
        self.ids[rows, pos], self.mask[rows, pos] = actions[rows], 1
        self.length[rows] += 1
        finished = (actions[rows] == self.eos) | (
            self.length[rows] - self.prompt_len[rows] >= self.max_new
        )
        self.live[rows[finished]] = False
        return finished

    def _step_deferred(
        self, rows: np.ndarray, actions: np.ndarray, policy_logp: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray, Info]:
        """:meth:`step_rows` with the reference deferred: keep what the policy gave, append the
        tokens; the rows that end get their KL, reward and per-token arrays (:meth:`_settle`)."""
        t = self.length[rows] - self.prompt_len[rows]  # the response step of each row
        if policy_logp is None:
            self.has_policy[rows] = False  # π = π_ref at this step: the whole KL counts as 0
        elif self.scoring.kl_estimator == "full":
            if self.policy_logp is None:
                self.policy_logp = policy_logp.new_zeros((self.B, self.max_new, self.V))
            idx = torch.as_tensor(rows, device=policy_logp.device)
            self.policy_logp[idx, torch.as_tensor(t, device=policy_logp.device)] = policy_logp[idx]
        else:
            acts = torch.as_tensor(actions[rows], device=policy_logp.device)
            lp = policy_logp[torch.as_tensor(rows, device=policy_logp.device), acts]
            self.policy_logp_a[rows, t] = lp.double().cpu().numpy()
        done_rows = rows[self._append(rows, actions)]
        rewards = np.zeros(self.B, dtype=np.float64)
        terminated = np.zeros(self.B, dtype=bool)
        coef = self.scoring.coef
        info = Info(self.B)
        info.put("kl_coef", rows, np.full(len(rows), coef))
        info.put("reward_form", rows, self.scoring.reward_form)
        if done_rows.size:
            self._settle(done_rows, rewards, info, coef)
            self._finish(done_rows, rewards, info)
            terminated[done_rows] = True
        return rewards, terminated, info

    def _settle(self, rows: np.ndarray, rewards: np.ndarray, info: Info, coef: float) -> None:
        """The deferred reference pass over the finished ``rows``: per-token KL and log π_ref,
        the KL sum and the last step's KL part of the reward (the same return as per step)."""
        start, end = self.prompt_len[rows], self.length[rows]
        ref = self.reference.next_token_logits(  # type: ignore[attr-defined]
            [self.ids[r, : end[j]] for j, r in enumerate(rows)], start.tolist()
        )  # one (L_r, V) tensor of log π_ref(·|s_t) per row
        kls, ref_lps, dists = [], [], []
        for j, r in enumerate(rows):
            L = int(end[j] - start[j])
            ref_logp = ref[j].float().log_softmax(-1)  # (L, V)
            acts = torch.as_tensor(self.ids[r, start[j] : end[j]], device=ref_logp.device)
            ref_lp_a = ref_logp.gather(1, acts[:, None])[:, 0].double()
            if not self.has_policy[r]:
                kl = torch.zeros_like(ref_lp_a)
            elif self.scoring.kl_estimator == "full":
                assert self.policy_logp is not None
                pol = self.policy_logp[r, :L].to(ref_logp.device)
                kl = estimate_kl("full", pol.double(), ref_logp.double(), acts)
            else:
                lp_a = torch.as_tensor(self.policy_logp_a[r, :L], device=ref_logp.device)
                kl = sampled_kl(self.scoring.kl_estimator, lp_a, ref_lp_a)
            kl_np, ref_lp_np = kl.double().cpu().numpy(), ref_lp_a.cpu().numpy()
            self._check_finite(
                np.full(L, r), np.zeros(0), kl_np, ref_lp_np, None, self.ids[r, start[j] :]
            )
            self.kl_sum[r] = float(kl_np.sum())
            if self.scoring.reward_form == "kl":
                rewards[r] = 0.0 - coef * self.kl_sum[r]
            else:
                rewards[r] = coef * float(ref_lp_np.sum())
            kls.append(kl_np)
            ref_lps.append(ref_lp_np)
            dists.append(ref_logp)
        info.put("kl_per_token", rows, _objects(kls))
        info.put("ref_logprob_per_token", rows, _objects(ref_lps))
        info.put("ref_logprobs", rows, _objects(dists))

    def _finish(self, rows: np.ndarray, rewards: np.ndarray, info: Info) -> None:
        """Score the finished rows (one batched reward-model call) and update the KL control."""
        prompts = [self.prompts[self.prompt_of[r]].text for r in rows]
        responses = [self.response_text(r) for r in rows]
        # The one place scores enter: one finite number per response, else a RewardModelError
        # naming the model, the value and the prompt (never a NaN in info, rewards or stats).
        assert self.scoring.reward_model is not None
        scores = score_responses(self.scoring.reward_model, prompts, responses)
        rewards[rows] += scores
        info.put("score", rows, scores)
        info.put("response_text", rows, responses)
        info.put("prompt_text", rows, prompts)
        info.put("kl_sum", rows, self.kl_sum[rows])
        info.put("response_length", rows, self.length[rows] - self.prompt_len[rows])
        if self.scoring.gold is not None:
            gold_fn = self.scoring.gold
            gold = score_responses(
                FunctionReward(gold_fn, role="gold labeler"),
                prompts,
                responses,
                name=callable_name(gold_fn),
                role="gold labeler",
            )
            info.put("gold_score", rows, gold)
        if self.scoring.kl_controller is not None:
            for r in rows:
                self.scoring.kl_controller.update(float(self.kl_sum[r]))

    def _check_finite(
        self,
        rows: np.ndarray,
        actions: np.ndarray,
        kl: np.ndarray,
        ref_lp: np.ndarray,
        policy_logp: torch.Tensor | None,
        tokens: np.ndarray | None = None,
    ) -> None:
        """A clear error instead of an infinite or NaN KL / ``ref_logprob`` reaching a reward.

        Only a broken contract gets here: the action has probability 0 (or below e^-700)
        under the logits the policy handed over, so it was not sampled from them, or the
        reference gives it probability 0. ``tokens[j]`` is entry ``j``'s action when the
        entries are one row's steps (the deferred pass) rather than rows.
        """
        bad = ~(np.isfinite(kl) & np.isfinite(ref_lp))
        if not bad.any():
            return
        j = int(np.flatnonzero(bad)[0])
        r = int(rows[j])
        a = int(tokens[j]) if tokens is not None else int(actions[rows[j]])
        if not np.isfinite(ref_lp[j]):
            raise ValueError(
                f"the reference gives token {a} (row {r}) probability 0 (log π_ref = {ref_lp[j]}): "
                "its reward and KL would be infinite"
            )
        lp = float(policy_logp[r, a]) if policy_logp is not None else float("nan")
        raise ValueError(
            f"the {self.scoring.kl_estimator} KL estimate of row {r} is {kl[j]}: the attached "
            f"policy ({type(self.policy).__name__}) gives token {a} log π = {lp:.4g} against "
            f"log π_ref = {ref_lp[j]:.4g}; action_logits must be the logits the action was "
            "sampled from (with the same temperature)"
        )

    def response_text(self, row: int) -> str:
        """The decoded response of ``row`` so far (a final EOS left out)."""
        ids = self.ids[row, self.prompt_len[row] : self.length[row]].tolist()
        if ids and ids[-1] == self.eos:
            ids = ids[:-1]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def check_actions(self, actions: Any, rows: np.ndarray) -> np.ndarray:
        """Validate a batch of token ids; return them as an int64 ``(B,)`` array."""
        arr = np.asarray(actions)
        if arr.shape != (self.B,) or not (
            np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.bool_)
        ):
            raise ValueError(
                f"actions must be {self.B} integer token id(s) in [0, {self.V}) "
                f"(Discrete({self.V}) per env); got {actions!r}"
            )
        bad = rows[(arr[rows] < 0) | (arr[rows] >= self.V)]
        if bad.size:
            raise ValueError(
                f"action {int(arr[bad[0]])} is out of range: token ids are in [0, {self.V}) "
                f"(Discrete({self.V}))"
            )
        return arr.astype(np.int64)


def _objects(items: list[Any]) -> np.ndarray:
    """A 1-D object array holding ``items`` as they are (arrays of different lengths)."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out
