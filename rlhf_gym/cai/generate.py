"""The model that Constitutional AI prompts: sampling replies, critiques and revisions, and the
probabilities of the options (A) and (B).

One class, :class:`PromptedLM`, serves the embedded default and any Hugging Face causal LM by
name or path. A model whose tokenizer has a chat template is prompted through it (each request
a user turn, each reply an assistant turn); a base model gets the text formats of
:mod:`rlhf_gym.cai.formats`, and a generated field ends at the first newline or EOS.

Sampling is pure categorical sampling at ``temperature`` (no top-k, no top-p), seeded; prompts
longer than the model's window keep their last tokens (counted in :attr:`PromptedLM.truncated`).

The soft label of a comparison (:meth:`PromptedLM.option_probs`): the prompt ends with
``"The answer is:"``; the two continuations ``" (A)"`` and ``" (B)"`` are tokenised, and at the
first token where they differ the model's two probabilities, renormalised to sum to one, are
the probabilities of (A) and (B). One forward pass per comparison, any tokenizer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rlhf_gym.cai import formats
from rlhf_gym.cai.constitution import Constitution, Principle
from rlhf_gym.envs.lm import (
    from_pretrained,
    prepare_frozen,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
    transformers_errors_only,
)
from rlhf_gym.envs.rewards import model_window
from rlhf_gym.envs.rlhf_env import BUILTIN_MODELS

CHAT_MODES = ("auto", "yes", "no")


@dataclass
class PromptedLM:
    """A causal LM and its tokenizer, prompted as a chat model or as a base model.

    Attributes:
        model: The Hugging Face causal LM (eval mode, frozen).
        tokenizer: Its tokenizer.
        chat: Whether prompts go through the tokenizer's chat template.
        truncated: Prompts that lost their first tokens to the model's window so far.
        calls: Generated sequences and scored comparisons so far (the cost in model calls).
    """

    model: Any
    tokenizer: Any
    chat: bool
    truncated: int = 0
    calls: dict[str, int] = field(default_factory=lambda: {"generations": 0, "comparisons": 0})

    @classmethod
    def load(
        cls,
        name_or_path: str,
        *,
        what: str = "--model",
        device: str = "auto",
        dtype: str = "float32",
        chat: str = "auto",
    ) -> PromptedLM:
        """Loads a model by built-in name (``default``, ``assistant``), directory or hub name.

        Args:
            chat: ``auto`` (a chat model when the tokenizer has a chat template), ``yes``, ``no``.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if chat not in CHAT_MODES:
            raise ValueError(f"--chat must be one of {', '.join(CHAT_MODES)}; got {chat!r}")
        path = resolve_model_path(name_or_path, what, BUILTIN_MODELS)
        dev = resolve_device(device)
        tokenizer = from_pretrained(AutoTokenizer, path, what, BUILTIN_MODELS)
        model = from_pretrained(AutoModelForCausalLM, path, what, BUILTIN_MODELS)
        model = prepare_frozen(model, dev, resolve_dtype(dtype, dev))
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if chat == "yes" and not has_template:
            raise ValueError(
                f"--chat yes: the tokenizer of {what}={name_or_path!r} has no chat template"
            )
        return cls(model, tokenizer, chat=has_template if chat == "auto" else chat == "yes")

    # ------------------------------------------------------------------ prompts
    def _render(self, messages: list[dict[str, str]], reply_prefix: str = "") -> str:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return text + reply_prefix

    def reply_prompt(self, prompt: str) -> str:
        """The text after which the model writes its reply to ``prompt``."""
        if self.chat:
            return self._render([{"role": "user", "content": formats.request_text(prompt)}])
        return prompt

    def _dialogue(self, prompt: str, response: str) -> list[dict[str, str]]:
        return [
            {"role": "user", "content": formats.request_text(prompt)},
            {"role": "assistant", "content": response.strip()},
        ]

    def critique_prompt(
        self, prompt: str, response: str, principle: Principle, few_shot: str = ""
    ) -> str:
        """The text after which the model writes its critique of ``response``."""
        if self.chat:
            messages = self._dialogue(prompt, response)
            messages.append({"role": "user", "content": few_shot + principle.critique_request})
            return self._render(messages)
        return few_shot + formats.critique_prompt(prompt, response, principle)

    def revision_prompt(
        self, prompt: str, response: str, principle: Principle, critique: str, few_shot: str = ""
    ) -> str:
        """The text after which the model writes its revision."""
        if self.chat:
            messages = self._dialogue(prompt, response)
            messages += [
                {"role": "user", "content": few_shot + principle.critique_request},
                {"role": "assistant", "content": critique.strip()},
                {"role": "user", "content": principle.revision_request},
            ]
            return self._render(messages)
        return few_shot + formats.revision_prompt(prompt, response, principle, critique)

    def comparison_prompt(
        self, prompt: str, question: str, first: str, second: str, few_shot: str = ""
    ) -> str:
        """The text ending with ``"The answer is:"`` after which (A) or (B) follows."""
        body = formats.comparison_prompt(prompt, question, first, second)
        if self.chat:
            user = few_shot + body[: -len(formats.ANSWER)].rstrip()
            return self._render([{"role": "user", "content": user}], formats.ANSWER)
        return few_shot + body

    # ------------------------------------------------------------------ model calls
    def _encoded_inputs(self, texts: Sequence[str], room: int) -> list[list[int]]:
        window = model_window(self.model, self.tokenizer) - room
        if window < 1:
            raise ValueError(
                f"the model's window ({window + room} tokens) leaves no room for "
                f"{room} new tokens; lower --max-new-tokens"
            )
        out = []
        for text in texts:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) > window:
                self.truncated += 1
                ids = ids[-window:]
            out.append(ids)
        return out

    def _left_padded(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
        dev = self.model.device
        return ids.to(dev), mask.to(dev)

    def _stop_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        stop = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        if not self.chat:
            newline = self.tokenizer("\n", add_special_tokens=False)["input_ids"]
            if len(newline) == 1:
                stop.append(newline[0])
        return [s for s in stop if s is not None]

    @torch.no_grad()
    def generate(
        self,
        texts: Sequence[str],
        *,
        max_new_tokens: int,
        temperature: float,
        batch_size: int = 32,
    ) -> list[str]:
        """One sampled continuation per text, cut at the first newline for a base model.

        The global torch generator is the source of randomness: seed it once per command.
        """
        outputs: list[str] = []
        stop = self._stop_ids()
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(texts), batch_size):
            seqs = self._encoded_inputs(texts[start : start + batch_size], max_new_tokens)
            ids, mask = self._left_padded(seqs)
            sampling: dict[str, Any] = (
                {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
                if temperature > 0
                else {"do_sample": False}
            )
            with transformers_errors_only():  # a one-time "pass an attention_mask" warning
                out = self.model.generate(  # that does not apply: the mask is passed
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=stop,
                    pad_token_id=pad if pad is not None else stop[0],
                    **sampling,
                )
            for row in out[:, ids.shape[1] :].tolist():
                cut = next((i for i, t in enumerate(row) if t in stop), len(row))
                text = self.tokenizer.decode(row[:cut], skip_special_tokens=True)
                outputs.append(text.split("\n", 1)[0] if not self.chat else text)
        self.calls["generations"] += len(texts)
        return outputs

    def _option_tokens(self, text: str) -> tuple[list[int], int, int]:
        """The ids shared by ``text + " (A)"`` and ``text + " (B)"``, and the first ids where
        they differ."""
        a, b = (
            self.tokenizer(text + o, add_special_tokens=False)["input_ids"] for o in formats.OPTIONS
        )
        i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        if i is None or i >= len(a) or i >= len(b):
            raise ValueError("the tokenizer writes ' (A)' and ' (B)' the same way")
        return a[:i], a[i], b[i]

    @torch.no_grad()
    def option_probs(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """``(N, 2)`` probabilities of (A) and (B) after each text, renormalised over the two."""
        rows: list[list[float]] = []
        for start in range(0, len(texts), batch_size):
            parts = [self._option_tokens(t) for t in texts[start : start + batch_size]]
            window = model_window(self.model, self.tokenizer)
            seqs = []
            for prefix, _, _ in parts:
                if len(prefix) > window:
                    self.truncated += 1
                    prefix = prefix[-window:]
                seqs.append(prefix)
            ids, mask = self._left_padded(seqs)
            # left padding: positions count from each row's first real token, as in generate
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions)
            logits = logits.logits[:, -1, :].float()
            logp = torch.log_softmax(logits, dim=-1)
            for row, (_, ta, tb) in enumerate(parts):
                pair = torch.stack([logp[row, ta], logp[row, tb]])
                rows.append(torch.softmax(pair, dim=0).tolist())
        self.calls["comparisons"] += len(texts)
        return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


def draw_principles(constitution: Constitution, n: int, rng: random.Random) -> list[Principle]:
    """``n`` principles drawn uniformly at random, with replacement."""
    return [rng.choice(constitution.principles) for _ in range(n)]


def seed_everything(seed: int) -> random.Random:
    """Seeds torch's global generator (sampling) and returns the Python stream for principles
    and the order of options."""
    torch.manual_seed(seed)
    return random.Random(f"rlhf-gym/cai/{seed}")
