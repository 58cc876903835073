"""``RLHFToy-v0``: a four-token RLHF problem whose KL-regularised optimum is known exactly.

The vocabulary is ``<eos> good bad meh`` (ids 0-3). A prompt is one token, ``meh`` or
``bad``, drawn uniformly; responses have at most ``max_new_tokens = 3`` tokens. The reference
"language model" is a fixed Markov chain over the last token (:data:`REFERENCE_TABLE`) that
prefers ``bad`` after ``bad``. The score is rule-based: ``(#good − #bad) / 3`` over the
response words. Everything else (observation, KL estimators, reward forms, ``info``) is
exactly :class:`~rlhf_gym.envs.rlhf_env.RLHFEnv`: the toy is that environment with a tabular
reference and a rule as reward model.

With ``β = kl_coef``, the optimum of ``E[score] − β·KL(π ‖ π_ref)`` is (dynamic programming
over the finite prefix tree, :func:`solve`)::

    Q*(s, a) = score(s + a)              if s + a is final (EOS or 3 tokens)
             = V*(s + a)                 otherwise
    V*(s)    = β·log Σ_a π_ref(a|s)·exp(Q*(s, a)/β)      (max_a Q*(s, a) when β = 0)
    π*(a|s)  = π_ref(a|s)·exp((Q*(s, a) − V*(s))/β)

Example:
    >>> sol = solve(kl_coef=0.1)
    >>> round(sol.value, 4)  # the best achievable E[score] − 0.1·KL, averaged over prompts
    0.6287
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlhf_gym.envs.render import RENDER_MODES

VOCAB: tuple[str, ...] = ("<eos>", "good", "bad", "meh")
EOS, GOOD, BAD, MEH = range(4)
PROMPTS: tuple[str, ...] = ("meh", "bad")
MAX_NEW_TOKENS = 3

# π_ref(next | last token); rows: last token good, bad, meh (EOS never precedes a token).
REFERENCE_TABLE: dict[int, tuple[float, ...]] = {
    GOOD: (0.3, 0.4, 0.2, 0.1),
    BAD: (0.2, 0.1, 0.5, 0.2),
    MEH: (0.1, 0.2, 0.4, 0.3),
}


def ref_logprobs(prefix: tuple[int, ...]) -> np.ndarray:
    """``log π_ref(· | prefix)`` over the 4 tokens."""
    return np.log(np.asarray(REFERENCE_TABLE[prefix[-1]], dtype=np.float64))


def score(prompt: str, response: str) -> float:
    """The rule-based reward: ``(#good − #bad) / 3`` over the response's words."""
    words = response.split()
    return (words.count("good") - words.count("bad")) / MAX_NEW_TOKENS


@dataclass
class ToySolution:
    """The exact KL-regularised optimum: ``q[s]`` and ``policy[s]`` are arrays over tokens."""

    kl_coef: float
    q: dict[tuple[int, ...], np.ndarray]
    v: dict[tuple[int, ...], float]
    policy: dict[tuple[int, ...], np.ndarray]

    @property
    def value(self) -> float:
        """Optimal objective averaged over the (uniform) prompts."""
        return float(np.mean([self.v[(PROMPTS_IDS[p],)] for p in PROMPTS]))


PROMPTS_IDS = {word: VOCAB.index(word) for word in PROMPTS}


def solve(kl_coef: float) -> ToySolution:
    """Dynamic programming over every prefix (prompt token + up to 3 response tokens)."""
    beta = float(kl_coef)
    sol = ToySolution(beta, {}, {}, {})

    def visit(prefix: tuple[int, ...]) -> float:
        q = np.empty(len(VOCAB))
        for a in range(len(VOCAB)):
            nxt = prefix + (a,)
            if a == EOS or len(nxt) - 1 >= MAX_NEW_TOKENS:
                q[a] = score("", " ".join(VOCAB[t] for t in nxt[1:] if t != EOS))
            else:
                q[a] = visit(nxt)
        logp = ref_logprobs(prefix)
        if beta == 0:
            v = float(q.max())
            pi = (q == q.max()).astype(float) / (q == q.max()).sum()
        else:
            z = logp + q / beta
            v = beta * float(np.logaddexp.reduce(z))
            pi = np.exp(logp + (q - v) / beta)
        sol.q[prefix], sol.v[prefix], sol.policy[prefix] = q, v, pi
        return v

    for word in PROMPTS:
        visit((PROMPTS_IDS[word],))
    return sol


class ToyReference:
    """The tabular reference, in the shape the environment expects of a reference model."""

    vocab_size = len(VOCAB)

    def incremental(self, num_rows: int, pad_token_id: int) -> _ToyRows:
        """``num_rows`` rows over the table (a :class:`~rlhf_gym.envs.lm.ReferenceRows`)."""
        return _ToyRows(num_rows)


class _ToyRows:
    """:class:`~rlhf_gym.envs.lm.IncrementalLM`'s interface over the table."""

    device = torch.device("cpu")

    def __init__(self, num_rows: int) -> None:
        self.prefixes: list[tuple[int, ...]] = [(MEH,)] * num_rows
        self.logits = torch.zeros(num_rows, len(VOCAB))

    def start(self, rows: Any, sequences: Any) -> None:
        for r, seq in zip(rows, sequences, strict=True):
            self._set(r, tuple(int(t) for t in seq))

    def advance(self, tokens: Any, active: Any) -> None:
        for r in np.flatnonzero(np.asarray(active)):
            self._set(r, self.prefixes[r] + (int(tokens[r]),))

    def next_token_logits(self, sequences: Any, starts: Any) -> list[torch.Tensor]:
        """``log π_ref`` before each token of ``sequence[start:]``, ``(len − start, 4)``."""
        out = []
        for seq, start in zip(sequences, starts, strict=True):
            seq = tuple(int(t) for t in seq)
            rows = [ref_logprobs(seq[:t]) for t in range(start, len(seq))]
            out.append(torch.from_numpy(np.stack(rows)).float())
        return out

    def _set(self, row: int, prefix: tuple[int, ...]) -> None:
        self.prefixes[row] = prefix
        self.logits[row] = torch.from_numpy(ref_logprobs(prefix)).float()


def toy_tokenizer() -> Any:
    """A real Hugging Face tokenizer over the four words (plus a pad token, id 4)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate((*VOCAB, "<pad>"))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


def _toy_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    from rlhf_gym.envs.rewards import FunctionReward

    fixed = dict(
        model=ToyReference(),
        tokenizer=toy_tokenizer(),
        reward_model=FunctionReward(score),
        prompts=list(PROMPTS),
        gold="none",
        max_new_tokens=MAX_NEW_TOKENS,
        max_prompt_tokens=1,
        device="cpu",
        dtype="float32",
    )
    clash = sorted(set(kwargs) & set(fixed))
    if clash:
        raise ValueError(
            f"RLHFToy-v0 fixes {clash}; it accepts kl_coef, kl_estimator, "
            "reward_form, kl_target, kl_horizon, reference_pass, policy and render_mode"
        )
    return {"kl_coef": 0.1, **kwargs, **fixed}


def make_toy_env(render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    """Entry point of ``RLHFToy-v0`` (``kl_coef`` defaults to 0.1; ``render_mode`` ``None``,
    ``"ansi"`` or ``"rgb_array"``, drawn as :class:`~rlhf_gym.envs.rlhf_env.RLHFEnv` draws)."""
    from rlhf_gym.envs.rlhf_env import RLHFEnv

    return RLHFEnv(render_mode=render_mode, **_toy_kwargs(kwargs))


# gym.make reads an entry point's metadata to offer "rgb_array_list" (RenderCollection) and
# "human" (HumanRendering) on top of "rgb_array"; a function has none unless it is given one.
make_toy_env.metadata = {"render_modes": list(RENDER_MODES), "render_fps": 4}  # type: ignore


def make_toy_vector_env(num_envs: int = 1, **kwargs: Any) -> gym.vector.VectorEnv:
    """Vector entry point of ``RLHFToy-v0`` (``render()`` gives one frame per row)."""
    from rlhf_gym.envs.rlhf_env import RLHFVectorEnv

    return RLHFVectorEnv(num_envs=num_envs, **_toy_kwargs(kwargs))
