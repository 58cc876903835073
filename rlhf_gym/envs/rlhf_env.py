"""``RLHF-v0``: RLHF as a Gymnasium environment, and its native vector version."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlhf_gym.envs._engine import REFERENCE_PASSES, Engine, Info, Prompt, Scoring, check_kl_coef
from rlhf_gym.envs.gold import GOLD_LABELERS
from rlhf_gym.envs.kl import AdaptiveKLController
from rlhf_gym.envs.lm import (
    DATA_DIR,
    ReferenceRows,
    from_pretrained,
    prepare_frozen,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
)
from rlhf_gym.envs.policy import ActingPolicy
from rlhf_gym.envs.prompts import load_prompts
from rlhf_gym.envs.render import (
    RENDER_MODES,
    RenderTally,
    ansi_text,
    blank_frame,
    check_render_mode,
    draw_frame,
    header_text,
)
from rlhf_gym.envs.rewards import HFRewardModel, RewardModel, as_reward_model
from rlhf_gym.envs.static_lm import make_incremental

BUILTIN_MODELS = {"default": DATA_DIR / "lm", "assistant": DATA_DIR / "assistant"}
"""Built-in model names. ``"default"`` means the task's own embedded model (``TASKS``)."""
TASKS: dict[str, dict[str, str]] = {
    "sentiment": {
        "prompts": "sentiment", "reward_model": "sentiment", "gold": "sentiment", "model": "default"
    },
    "harmless": {
        "prompts": "harmless", "reward_model": "harmless", "gold": "harmless", "model": "default"
    },
    "helpful_harmless": {
        "prompts": "helpful_harmless",
        "reward_model": "helpful_harmless",
        "gold": "helpful_harmless",
        "model": "assistant",
    },
}  # fmt: skip
"""Each task's defaults: prompt set, reward model, gold labeler and embedded model."""


def task_model(model: Any, task: str) -> Any:
    """``model``, with ``"default"`` read as the task's embedded model (``"assistant"`` for
    ``helpful_harmless``, whose tokenizer its reward model shares)."""
    if isinstance(model, str) and model == "default" and task in TASKS:
        return TASKS[task]["model"]
    return model


class _Surface:
    """What agents, wrappers and commands may read of an RLHF environment, single or vector.

    One definition serves :class:`RLHFEnv` and :class:`RLHFVectorEnv`, so the two cannot drift.
    Everything else (the ``_engine`` that runs the episodes) is private to
    :mod:`rlhf_gym.envs`: a test fails if code outside it reads a private attribute.
    """

    _engine: Engine

    @property
    def tokenizer(self) -> Any:
        """The policy tokenizer (decodes observations and actions)."""
        return self._engine.tokenizer

    @property
    def reference_model(self) -> torch.nn.Module:
        """The frozen reference (a Hugging Face causal LM); copy it to get a trainable policy.

        Raises:
            AttributeError: the reference is not a network (the toy's is a table).
        """
        model = getattr(self._engine.reference, "model", None)
        if model is None:
            raise AttributeError(
                "this environment's reference is not a neural network (the toy's "
                "is a table: see rlhf_gym.envs.toy)"
            )
        return model

    @property
    def reference_logits(self) -> torch.Tensor:
        """The reference's next-token logits at every row's current state, ``(B, V)`` float32.

        Kept up to date by ``reset`` and ``step`` (the KL term needs them), so reading them is
        free; treat them as read-only. A vector row whose episode has just ended keeps the
        logits of its last state until the next step resets it (next-step autoreset).
        With ``reference_pass="deferred"`` the reference does not follow the steps: a
        ``RuntimeError`` (the reference's log-probabilities come in the last step's ``info``).
        """
        if self._engine.deferred:
            raise RuntimeError(
                "reference_logits: with reference_pass='deferred' the reference reads each "
                "response once it has ended, so there are no per-step logits; read "
                "info['ref_logprobs'] at the last step, or use reference_pass='per_step'"
            )
        logits = self._engine.reference.logits
        if logits is None:
            raise RuntimeError("reference_logits is defined after reset()")
        return logits

    @property
    def device(self) -> torch.device:
        """The device the reference runs on (put an agent's models there)."""
        return self._engine.reference.device

    @property
    def reward_model(self) -> RewardModel:
        """The reward model that scores finished responses."""
        assert self._engine.scoring.reward_model is not None
        return self._engine.scoring.reward_model

    @property
    def vocab_size(self) -> int:
        """``V``: the number of token ids (the action space is ``Discrete(V)``)."""
        return self._engine.V

    @property
    def eos_token_id(self) -> int:
        """The token that ends a response."""
        return self._engine.eos

    @property
    def pad_token_id(self) -> int:
        """The id that pads observations (never EOS; only ``attention_mask`` is the truth)."""
        return self._engine.pad

    @property
    def max_new_tokens(self) -> int:
        """The response limit: an episode ends after this many tokens if no EOS came first."""
        return self._engine.max_new

    @property
    def max_prompt_tokens(self) -> int:
        """Prompts keep at most their last ``max_prompt_tokens`` tokens."""
        return self._engine.max_prompt

    @property
    def prompts(self) -> tuple[str, ...]:
        """The prompt pool as text (a truncated prompt as the model sees it)."""
        return tuple(p.text for p in self._engine.prompts)

    @property
    def num_prompts(self) -> int:
        """The size of the prompt pool (``reset(options={"prompt_index": k})`` takes
        ``0 <= k < num_prompts``)."""
        return len(self._engine.prompts)

    @property
    def reward_form(self) -> str:
        """``"kl"`` or ``"ref_logprob"`` (see the Rewards section)."""
        return self._engine.scoring.reward_form

    @property
    def kl_coef(self) -> float:
        """The β in force: the adaptive controller's current value, or the fixed ``kl_coef``."""
        return self._engine.scoring.coef

    @property
    def kl_target(self) -> float | None:
        """The adaptive controller's target KL in nats per sequence, ``None`` for a fixed β."""
        controller = self._engine.scoring.kl_controller
        return None if controller is None else controller.target

    def set_kl_coef(self, value: float) -> None:
        """Set the β in force: the adaptive controller's current value (how a resumed run
        continues where it stopped), or the fixed β."""
        value = check_kl_coef(value)
        scoring = self._engine.scoring
        if scoring.kl_controller is not None:
            scoring.kl_controller.value = value
        else:
            scoring.kl_coef = value

    @property
    def policy(self) -> ActingPolicy | None:
        """The attached acting policy, or ``None`` (then the KL term takes ``π = π_ref``)."""
        return self._engine.policy

    def set_policy(self, policy: ActingPolicy | None) -> None:
        """Attach the acting policy whose distribution the KL term uses (``None`` detaches).

        A vector environment's policy answers for all ``B`` rows at once.
        """
        self._engine.policy = check_policy(policy)


class RLHFEnv(_Surface, gym.Env):
    """RLHF as a Markov decision process over tokens.

    ## Description
    A causal language model writes a response to a prompt, one token per step. The state is
    the prompt plus the tokens so far, the action is the next token, and the reward is a reward
    model's score of the finished response minus a KL penalty that keeps the acting policy close
    to a frozen copy of the initial model (the *reference*) — the set-up of Ziegler et al.
    (2019) and Ouyang et al. (2022), as an ordinary ``gymnasium.Env``.

    ## Action Space
    ``Discrete(V)``: a token id, ``V`` the model's vocabulary (its output dimension).

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (T,), int64), attention_mask=Box(0, 1, (T,), int64))`` with
    ``T = max_prompt_tokens + max_new_tokens``. The real tokens (prompt, then response) come
    first, right-padded; ``attention_mask`` is 1 on real tokens. Padding uses the tokenizer's
    pad id when it is a valid id distinct from EOS, else the smallest id that is not EOS; only
    the mask tells padding from tokens.

    ## Rewards
    With ``β = kl_coef`` and ``[done]`` 1 at the last step only:

    * ``reward_form="kl"`` (default): ``r_t = score·[done] − β·KL_t``, ``KL_t`` the estimate of
      ``KL(π(·|s_t) ‖ π_ref(·|s_t))`` by ``kl_estimator``: ``"k1"`` (``log π(a) − log π_ref(a)``),
      ``"k3"`` (``(r−1) − log r``, ``r = π_ref(a)/π(a)``) or ``"full"`` (exact over the
      vocabulary). ``π`` comes from the attached acting policy (``set_policy``; see
      :mod:`rlhf_gym.envs.policy`). **With no policy attached** the environment cannot see ``π``
      and takes ``π = π_ref``: ``KL_t = 0`` and a warning is issued once.
    * ``reward_form="ref_logprob"``: ``r_t = score·[done] + β·log π_ref(a_t|s_t)``, independent of
      the acting policy: the reward for off-policy / soft-Q learners, whose entropy regulariser
      of the same ``β`` turns it into the KL-regularised objective.
    * ``kl_coef=0``: the plain score.

    ``reference_pass="deferred"`` computes the same rewards' *return* with one reference
    forward pass over each finished response instead of a reference decode step per token:
    every step but the last has reward 0, and the last
    ``r_T = score − β·Σ_t KL_t`` (``"kl"``) or ``score + β·Σ_t log π_ref(a_t|s_t)``
    (``"ref_logprob"``); the per-token terms come in that step's ``info`` (below), so an agent
    can rebuild the per-step rewards exactly (PPO does). With ``kl_target`` the whole KL part
    uses the β in force at the last step (per step, each step's β). For agents that need the
    reward (or ``reference_logits``) at each step, keep the default ``"per_step"``.

    ``kl_target`` switches on the adaptive KL controller of Ziegler et al. (``β`` moves after
    each episode so that the per-sequence KL approaches ``kl_target`` nats, over ``kl_horizon``
    episodes); ``info["kl_coef"]`` is the ``β`` in force.

    ## Info
    Every step: ``kl`` (this step's KL estimate, before the coefficient), ``ref_logprob``
    (``log π_ref`` of the chosen token), ``kl_coef``, ``reward_form``. Last step also: ``score``
    (reward model), ``response_text``, ``prompt_text``, ``kl_sum`` (``Σ_t kl`` of the episode),
    ``response_length``, and ``gold_score`` when the task has a gold labeler. ``reset`` returns
    ``prompt_text`` and ``prompt_truncated``. With ``reference_pass="deferred"`` steps carry
    only ``kl_coef`` and ``reward_form``, and the last step adds ``kl_per_token`` and
    ``ref_logprob_per_token`` (float64 arrays, one entry per response token: the per-step
    ``kl`` and ``ref_logprob``) and ``ref_logprobs`` (a ``(L, V)`` float32 tensor:
    ``log π_ref(·|s_t)`` at each response state, on the env's device).

    ## Starting State
    A prompt drawn uniformly from ``prompts`` with ``self.np_random``, or the one that
    ``reset(options={"prompt_index": k})`` names (a sequence of ``B`` indices for the vector
    environment; evaluation uses this to visit every held-out prompt). A prompt longer than
    ``max_prompt_tokens`` tokens keeps its last ``max_prompt_tokens`` tokens (left truncation,
    so the text next to the response survives) and ``info["prompt_truncated"]`` is ``True``.

    ## Episode End
    ``terminated=True`` when the action is EOS or ``max_new_tokens`` tokens were generated: the
    response is final and scored then. ``truncated`` is always ``False`` (a time-limit
    truncation would make SB3 bootstrap a value on top of the score).

    ## Arguments
    ``gym.make("RLHF-v0", ...)`` takes names, paths and numbers only:

    * ``model``: ``"default"`` (the embedded tiny LM), a local directory or a Hugging Face hub
      name of a causal LM; its tokenizer defines the action space. The environment keeps it as
      the frozen reference. The class constructor also takes a loaded model (then pass
      ``tokenizer``) or a reference object with ``incremental(num_rows, pad_token_id)``.
    * ``task``: ``"sentiment"`` (default: steer review continuations to positive sentiment) or
      ``"harmless"``; sets the defaults of ``prompts``, ``reward_model`` and ``gold``.
    * ``reward_model``: ``"sentiment"``/``"harmless"`` (embedded), or a directory or hub name of a
      sequence classifier (scores ``prompt + response`` text). The constructor also takes any
      object with ``score(prompts, responses)`` or a function ``fn(prompt, response) -> float``.
    * ``reward_label``: which logit of a multi-label classifier is the score (default: the
      label named like "positive", else the last).
    * ``prompts``: a built-in set (``sentiment``, ``sentiment-eval``, ``harmless``,
      ``harmless-eval``), a ``.txt`` (one per line) or ``.jsonl`` path, or (constructor) a list.
    * ``gold``: ``"sentiment"``, ``"harmless"`` or ``"none"``; (constructor) a function.
    * ``kl_coef`` (0.05), ``kl_estimator`` (``"k1"``), ``reward_form`` (``"kl"``), ``kl_target``
      (``None``: fixed β), ``kl_horizon`` (10,000 episodes), ``reference_pass``
      (``"per_step"`` or ``"deferred"``, see Rewards).
    * ``max_new_tokens`` (32), ``max_prompt_tokens`` (32).
    * ``device`` (``"auto"``: CUDA when present), ``dtype`` (``"float32"``, ``"bfloat16"``,
      ``"float16"`` or ``"auto"``).
    * ``cuda_graphs`` (``False``): on a CUDA device, the reference's decode step runs on a static
      KV cache replayed as a CUDA graph (:mod:`rlhf_gym.envs.static_lm`; same logits), which
      removes most of a small model's kernel-launch time; no effect on the CPU.
    * ``policy`` (constructor only): the acting policy.
    * ``render_mode``: ``None``, ``"ansi"`` or ``"rgb_array"`` (see Rendering).

    ## Rendering
    ``render()`` never touches the random state or the episode. With ``render_mode="ansi"`` it
    returns the prompt, ``│``, and the response so far. With ``render_mode="rgb_array"`` it
    returns a ``(360, 640, 3)`` uint8 image (the same shape every frame): a header line with the
    id, the step, the last reward, the reward so far and, once the episode has ended, the
    score; below it the prompt (grey) and the response so far (amber), word-wrapped, the last
    lines kept when they do not fit. ``gymnasium.wrappers.RecordVideo`` (needs ``moviepy``)
    thus shows a response being written token by token. With no render mode it returns
    ``None``.

    ## Vectorized environment
    ``gym.make_vec("RLHF-v0", num_envs=B)`` builds :class:`RLHFVectorEnv`, which makes every
    model call once per step for all ``B`` sequences, keeps KV caches, and follows Gymnasium's
    next-step autoreset. Seeded with ``seed``, sub-environment ``i`` matches a single
    environment seeded with ``seed + i``. With ``autoreset_mode="disabled"`` (Gymnasium's
    ``AutoresetMode.DISABLED``) a finished row stays finished until
    ``reset(options={"reset_mask": mask})`` restarts it, and costs nothing meanwhile: no idle
    row decodes a throwaway episode while a batch waits for its longest response.

    ## Example
        >>> import gymnasium as gym, rlhf_gym
        >>> env = gym.make("RLHF-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs["input_ids"].shape
        (64,)

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        self.render_mode = check_render_mode(render_mode)
        self._engine = build_engine(1, **kwargs)
        self.observation_space, self.action_space = make_spaces(self._engine)
        self._row = np.array([0])
        self._render_tally = RenderTally(1)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode on a prompt drawn with ``seed`` (or ``options["prompt_index"]``)."""
        super().reset(seed=seed)
        index = _prompt_index(options, 1)
        info = self._engine.reset_rows([0], [self.np_random], index)
        self._render_tally.reset(self._row)
        return self._engine.observation(0), info.row(0)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        """Append the token ``action``; see the class docstring for rewards and ``info``."""
        ep = self._engine
        if not ep.live[0]:
            raise RuntimeError(
                "step() called before reset()"
                if ep.length[0] == 0
                else "step() called after the episode ended (terminated=True); call reset() first"
            )
        actions = ep.check_actions(np.asarray([_as_token(action, ep.V)]), self._row)
        logp = ep.policy_logprobs()
        rewards, terminated, info = ep.step_rows(self._row, actions, logp)
        self._render_tally.step(self._row, rewards, info.vector())
        return ep.observation(0), float(rewards[0]), bool(terminated[0]), False, info.row(0)

    def render(self) -> str | np.ndarray | None:
        """The episode so far (see Rendering): with ``render_mode="ansi"`` the prompt, ``│``
        and the response; with ``"rgb_array"`` a ``(360, 640, 3)`` uint8 image of the prompt,
        the response and the rewards; with no render mode ``None``."""
        return _render_row(self, 0)


class RLHFVectorEnv(_Surface, VectorEnv):
    """``B`` RLHF episodes in one process, every model call batched (see :class:`RLHFEnv`).

    ``autoreset_mode`` (a :class:`gymnasium.vector.AutoresetMode` or its value):

    * ``NEXT_STEP`` (Gymnasium 1.x default): the step after a sub-environment terminates
      resets it, ignores its action, and returns its first observation with reward 0.
    * ``DISABLED``: a terminated sub-environment is not reset by ``step``. Until
      ``reset(options={"reset_mask": mask})`` restarts it (the other rows untouched), each step
      ignores its action and returns its last observation again, reward 0 and
      ``terminated=True``; no model runs for it, and an :class:`~rlhf_gym.envs.policy.LMPolicy`
      drops it from its decode batch (Gymnasium leaves stepping a finished sub-environment
      undefined in this mode; here it is a no-op). Collecting "one episode per row" this way
      never decodes throwaway episodes in rows that finished early.

    ``render_mode`` (``None``, ``"ansi"`` or ``"rgb_array"``) is that of :class:`RLHFEnv`;
    ``render()`` returns a tuple with one frame per sub-environment, as Gymnasium's vector
    environments do (``None`` with no render mode).
    """

    metadata = {
        "autoreset_mode": AutoresetMode.NEXT_STEP,
        "render_modes": list(RENDER_MODES),
        "render_fps": 4,
    }

    def __init__(
        self,
        num_envs: int = 1,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        **kwargs: Any,
    ) -> None:
        if not (isinstance(num_envs, int) and num_envs >= 1):
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.render_mode = check_render_mode(render_mode)
        self.autoreset_mode = check_autoreset_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.num_envs = num_envs
        self._engine = build_engine(num_envs, **kwargs)
        self.single_observation_space, self.single_action_space = make_spaces(self._engine)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rngs: list[np.random.Generator] = []
        self._needs_reset = np.ones(num_envs, dtype=bool)
        self._all = np.arange(num_envs)
        self._render_tally = RenderTally(num_envs)

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset every row, or the rows of ``options["reset_mask"]`` (a ``(B,)`` bool array;
        the others keep their episodes). ``seed=s`` seeds row ``i`` with ``s + i``; no seed
        continues each row's random stream. ``options["prompt_index"]`` gives one prompt index
        per row reset."""
        mask = _reset_mask(options, self.num_envs)
        if mask is not None:
            return self._reset_some(np.flatnonzero(mask), seed, options)
        if seed is None and self._rngs:
            pass  # like gym.Env.reset: no seed continues each sub-environment's random stream
        elif seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset(seed=...) got {len(seeds)} seeds for {self.num_envs} envs")
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seeds[0])
        index = _prompt_index(options, self.num_envs)
        info = self._engine.reset_rows(list(self._all), self._rngs, index)
        self._render_tally.reset(self._all)
        self._needs_reset[:] = False
        return self._engine.observation(), info.vector()

    def _reset_some(
        self, rows: np.ndarray, seed: Any, options: dict
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``reset`` of the rows in ``options["reset_mask"]`` only."""
        if not self._rngs:
            raise RuntimeError("reset(options={'reset_mask': ...}) before a full reset()")
        if seed is not None:
            seeds = (
                [int(seed) + int(i) for i in rows]
                if isinstance(seed, (int, np.integer))
                else [list(seed)[i] for i in rows]
            )
            for i, s in zip(rows, seeds, strict=True):
                self._rngs[i] = seeding.np_random(s)[0]
        index = _prompt_index(options, len(rows))
        info = self._engine.reset_rows(list(rows), [self._rngs[i] for i in rows], index)
        self._render_tally.reset(rows)
        self._needs_reset[rows] = False
        return self._engine.observation(), info.vector()

    def step(self, actions: Any) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Append one token per row (rows that terminated last step are reset instead, or,
        with ``autoreset_mode`` DISABLED, left as they are: see the class docstring)."""
        ep = self._engine
        if not self._rngs:
            raise RuntimeError("step() called before reset()")
        going = self._all[~self._needs_reset]
        resetting = self._all[self._needs_reset]
        if self.autoreset_mode == AutoresetMode.DISABLED:
            return self._step_disabled(actions, going)
        actions = ep.check_actions(actions, going)
        logp = ep.policy_logprobs() if going.size else None
        info = Info(self.num_envs)
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        if resetting.size:
            info.merge(ep.reset_rows(list(resetting), [self._rngs[i] for i in resetting]))
            self._render_tally.reset(resetting)
        if going.size:
            rewards, terminated, step_info = ep.step_rows(going, actions, logp)
            info.merge(step_info)
            self._render_tally.step(going, rewards, step_info.vector())
        self._needs_reset = terminated.copy()
        truncated = np.zeros(self.num_envs, dtype=bool)
        return ep.observation(), rewards, terminated, truncated, info.vector()

    def _step_disabled(
        self, actions: Any, going: np.ndarray
    ) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
        """``step`` without autoreset: the finished rows are left out of every model call."""
        ep = self._engine
        actions = ep.check_actions(actions, going)
        rewards = np.zeros(self.num_envs)
        terminated = self._needs_reset.copy()  # finished rows stay finished
        info = Info(self.num_envs)
        if going.size:
            logp = ep.policy_logprobs()
            rewards, ended, step_info = ep.step_rows(going, actions, logp)
            info.merge(step_info)
            self._render_tally.step(going, rewards, step_info.vector())
            terminated |= ended
            ep.release(np.flatnonzero(ended))
        self._needs_reset = terminated.copy()
        truncated = np.zeros(self.num_envs, dtype=bool)
        return ep.observation(), rewards, terminated, truncated, info.vector()

    def render(self) -> tuple[str | np.ndarray, ...] | None:
        """One frame per sub-environment, as :meth:`RLHFEnv.render` draws it; ``None`` with no
        render mode."""
        if self.render_mode is None:
            return None
        return tuple(_render_row(self, i) for i in range(self.num_envs))


def _render_row(env: RLHFEnv | RLHFVectorEnv, row: int) -> str | np.ndarray | None:
    """Row ``row`` of ``env`` in ``env.render_mode``; reads the episode, changes nothing."""
    ep, mode = env._engine, env.render_mode
    if mode is None:
        return None
    started = ep.length[row] > 0
    prompt = ep.prompts[ep.prompt_of[row]].text if started else ""
    response = ep.response_text(row) if started else ""
    if mode == "ansi":
        return ansi_text(prompt, response)
    title = env.spec.id if env.spec is not None else type(env).__name__
    if ep.B > 1:
        title = f"{title} [{row}]"
    if not started:
        return blank_frame(title)
    tally = env._render_tally
    header = header_text(
        title,
        int(ep.length[row] - ep.prompt_len[row]),
        ep.max_new,
        float(tally.last_reward[row]),
        float(tally.total[row]),
        float(tally.score[row]),
    )
    return draw_frame(header, prompt, response, ended=not ep.live[row])


# ---------------------------------------------------------------------- construction helpers
def make_spaces(ep: Engine) -> tuple[spaces.Dict, spaces.Discrete]:
    """The single observation and action spaces of an engine's rows."""
    obs = spaces.Dict(
        {
            "input_ids": spaces.Box(0, ep.V - 1, shape=(ep.T,), dtype=np.int64),
            "attention_mask": spaces.Box(0, 1, shape=(ep.T,), dtype=np.int64),
        }
    )
    return obs, spaces.Discrete(ep.V)


def check_autoreset_mode(mode: Any) -> AutoresetMode:
    """``mode`` as an :class:`AutoresetMode` (NEXT_STEP or DISABLED), or a ``ValueError``."""
    allowed = (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED)
    for m in allowed:
        if mode == m or (
            isinstance(mode, str) and mode.lower().replace("_", "") == m.value.lower()
        ):
            return m
    raise ValueError(
        f"autoreset_mode={mode!r} is not one of {[m.value for m in allowed]} "
        "(AutoresetMode.NEXT_STEP or AutoresetMode.DISABLED)"
    )


def _reset_mask(options: dict[str, Any] | None, n: int) -> np.ndarray | None:
    """``options["reset_mask"]``: a ``(n,)`` bool array with at least one True, or ``None``."""
    if not options or "reset_mask" not in options:
        return None
    mask = options["reset_mask"]
    ok = isinstance(mask, np.ndarray) and mask.dtype == np.bool_ and mask.shape == (n,)
    if not (ok and mask.any()):
        raise ValueError(
            f"options['reset_mask'] must be a numpy bool array of shape ({n},) with at least one "
            f"True; got {mask!r}"
        )
    return mask


def _prompt_index(options: dict[str, Any] | None, n: int) -> list[int] | None:
    """``options={"prompt_index": k}`` (one env) or a sequence of ``n`` indices (vector env)."""
    if not options or "prompt_index" not in options:
        return None
    index = options["prompt_index"]
    return [index] if np.ndim(index) == 0 and n == 1 else list(np.atleast_1d(index))


def check_policy(policy: Any) -> ActingPolicy | None:
    """Accept ``None`` or an :class:`~rlhf_gym.envs.policy.ActingPolicy`; else a clear error."""
    if policy is not None and not callable(getattr(policy, "action_logits", None)):
        raise ValueError(
            "policy must have a method action_logits(observation) -> (B, V) logits "
            f"(see rlhf_gym.envs.policy.ActingPolicy); got {type(policy).__name__}"
        )
    return policy


def _as_token(action: Any, vocab: int) -> int:
    """Accept an int, a NumPy integer or a size-1 integer array (what samplers return)."""
    arr = np.asarray(action)
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"action must be one integer token id in [0, {vocab}) (Discrete({vocab})); "
            f"got {action!r} of type {type(action).__name__}"
        )
    return int(arr.reshape(()))


def build_engine(
    num_rows: int,
    *,
    model: Any = "default",
    tokenizer: Any = None,
    task: str = "sentiment",
    reward_model: Any = None,
    reward_label: int | str | None = None,
    prompts: Any = None,
    gold: str | Callable[[str, str], float] | None = None,
    kl_coef: float = 0.05,
    kl_estimator: str = "k1",
    reward_form: str = "kl",
    kl_target: float | None = None,
    kl_horizon: int = 10_000,
    reference_pass: str = "per_step",
    max_new_tokens: int = 32,
    max_prompt_tokens: int = 32,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    cuda_graphs: bool = False,
    policy: Any = None,
) -> Engine:
    """Validate the arguments (documented on :class:`RLHFEnv`) and build the engine.

    Cheap checks run first, so a bad number fails before any model is loaded.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {list(TASKS)}")
    for name, value in (
        ("max_new_tokens", max_new_tokens),
        ("max_prompt_tokens", max_prompt_tokens),
    ):
        if not (isinstance(value, (int, np.integer)) and value >= 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    scoring = Scoring(None, None, kl_coef, kl_estimator, reward_form, None)  # validates early
    if reference_pass not in REFERENCE_PASSES:
        raise ValueError(
            f"reference_pass={reference_pass!r} is not one of {list(REFERENCE_PASSES)}"
        )
    if not isinstance(cuda_graphs, (bool, np.bool_)):
        raise ValueError(f"cuda_graphs must be True or False, got {cuda_graphs!r}")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    defaults = TASKS[task]

    ref_model, tokenizer = _load_policy_model(task_model(model, task), tokenizer, dev, dt)
    vocab, eos = _vocab_and_eos(ref_model, tokenizer)
    pad = _obs_pad_id(tokenizer, vocab, eos)
    context = max_prompt_tokens + max_new_tokens
    reference = _reference_rows(ref_model, num_rows, pad, context, bool(cuda_graphs))

    reward = reward_model if reward_model is not None else defaults["reward_model"]
    if isinstance(reward, str):
        reward = HFRewardModel.load(reward, dev, dt, label=reward_label)
    scoring.reward_model = as_reward_model(reward)
    scoring.gold = _gold(gold if gold is not None else defaults["gold"])
    if kl_target is not None:
        scoring.kl_controller = AdaptiveKLController(float(kl_coef), float(kl_target), kl_horizon)

    texts = load_prompts(prompts if prompts is not None else defaults["prompts"])
    encoded = [_encode_prompt(t, tokenizer, max_prompt_tokens) for t in texts]
    sizes = dict(vocab_size=vocab, eos_token_id=eos, pad_token_id=pad)
    return Engine(
        num_rows,
        reference,
        tokenizer,
        encoded,
        scoring,
        **sizes,
        max_new_tokens=int(max_new_tokens),
        max_prompt_tokens=int(max_prompt_tokens),
        policy=check_policy(policy),
        reference_pass=reference_pass,
    )


def _reference_rows(
    model: Any, num_rows: int, pad: int, context: int, cuda_graphs: bool = False
) -> ReferenceRows:
    """The reference's ``B`` rows: a reference object's own, or KV-cached rows of an LM (on a
    static cache replayed as a CUDA graph with ``cuda_graphs`` on a CUDA device)."""
    if hasattr(model, "incremental"):
        return model.incremental(num_rows, pad)
    _check_context(model, context)
    return make_incremental(model, num_rows, pad, cuda_graphs)


def load_reference(
    model: Any = "default",
    task: str = "sentiment",
    tokenizer: Any = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
) -> tuple[Any, Any]:
    """The frozen model and tokenizer that ``gym.make(..., model=model)`` loads as its reference.

    The same code path and errors as the environment's; for an agent that builds its reference
    itself (LoRA's adapter-disabled reference, :mod:`rlhf_gym.agents.lora`).
    """
    dev = resolve_device(device)
    return _load_policy_model(task_model(model, task), tokenizer, dev, resolve_dtype(dtype, dev))


def _load_policy_model(model: Any, tokenizer: Any, dev: torch.device, dt: torch.dtype) -> tuple:
    if isinstance(model, str):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model_path(model, "model", BUILTIN_MODELS)
        loaded = from_pretrained(AutoModelForCausalLM, path, "model", BUILTIN_MODELS)
        if tokenizer is None:
            tokenizer = from_pretrained(AutoTokenizer, path, "model", BUILTIN_MODELS)
        return prepare_frozen(loaded, dev, dt), tokenizer
    if tokenizer is None:
        raise ValueError("a model object needs its tokenizer: pass tokenizer=... as well")
    if isinstance(model, torch.nn.Module):
        return prepare_frozen(model, dev, dt), tokenizer
    if hasattr(model, "incremental"):
        return model, tokenizer
    raise ValueError(
        "model must be a name or path of a Hugging Face causal LM, a loaded causal LM, or a "
        f"reference object with incremental(num_rows, pad_token_id); got {type(model).__name__}"
    )


def _vocab_and_eos(model: Any, tokenizer: Any) -> tuple[int, int]:
    if hasattr(model, "incremental"):
        vocab = int(model.vocab_size)
    else:
        vocab = int(model.get_output_embeddings().weight.shape[0])
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id: episodes could never end with EOS")
    if not 0 <= eos < vocab:
        raise ValueError(f"eos_token_id {eos} is outside the model's vocabulary of {vocab}")
    return vocab, int(eos)


def _obs_pad_id(tokenizer: Any, vocab: int, eos: int) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None and 0 <= pad < vocab and pad != eos:
        return int(pad)
    return 0 if eos != 0 else 1


def _check_context(model: Any, needed: int) -> None:
    cfg = model.config
    window = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    if window is not None and needed > window:
        raise ValueError(
            f"max_prompt_tokens + max_new_tokens = {needed} exceeds the model's context window "
            f"of {window} tokens"
        )


def _encode_prompt(text: str, tokenizer: Any, max_tokens: int) -> Prompt:
    ids = list(tokenizer(text)["input_ids"])
    if not ids:  # an empty prompt: the model still needs one token to condition on
        start = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        ids = [start]
    truncated = len(ids) > max_tokens
    ids = ids[-max_tokens:]
    shown = tokenizer.decode(ids, skip_special_tokens=True) if truncated else text
    return Prompt(shown, tuple(int(i) for i in ids), truncated)


def _gold(gold: str | Callable[[str, str], float] | None) -> Callable[[str, str], float] | None:
    if gold is None or gold == "none":
        return None
    if callable(gold):
        return gold
    if gold not in GOLD_LABELERS:
        raise ValueError(f"gold={gold!r} is not one of {[*GOLD_LABELERS, 'none']} or a function")
    return GOLD_LABELERS[gold]
