"""LoRA through ``peft``: one copy of the weights serves the policy and the frozen reference.

With ``lora_r > 0`` an agent trains low-rank adapters (Hu et al. 2021) on a frozen base model
instead of every weight. The reference ``π_ref`` is then the *same* base model with the
adapter switched off (``peft``'s ``disable_adapter()``), as in TRL's PPO/DPO/GRPO trainers and
verl: no second copy of the weights, and no Adam state for the frozen ones. What this costs is
an extra forward pass through the shared weights for the reference, which the environment runs
anyway.

The environment does not know about ``peft`` (:mod:`rlhf_gym.envs` never imports it): it takes
any *reference object* with ``incremental(num_rows, pad_token_id)`` as its ``model=``
(:class:`rlhf_gym.envs.lm.ReferenceRows`). :class:`AdapterOffReference` is such an object: its
rows are an ordinary :class:`~rlhf_gym.envs.lm.IncrementalLM` over a module that runs the
shared model inside ``disable_adapter()``.

Checkpoints keep only the adapter (``adapter_config.json`` and ``adapter_model.safetensors``,
plus the tokenizer). ``gym.make("RLHF-v0", model=DIR)``, ``rlhf-gym eval --policy DIR`` and
``AutoModelForCausalLM.from_pretrained(DIR)`` load such a directory through transformers' own
``peft`` integration (the base model is read from ``base_model_name_or_path``);
:func:`merge_adapter` writes a standalone model with the adapter folded into the weights.

Example:
    >>> from transformers import AutoModelForCausalLM
    >>> from rlhf_gym.envs.lm import DATA_DIR
    >>> base = AutoModelForCausalLM.from_pretrained(DATA_DIR / "lm")
    >>> peft_model = wrap(base, r=4, alpha=8.0, target_modules="all-linear")
    >>> trainable_parameters(peft_model)
    32768
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf_gym.envs.lm import IncrementalLM, cache_argument

TARGET_HELP = "all-linear (every linear layer but the output head) or comma-separated names"


def _peft() -> Any:
    try:
        import peft
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("LoRA (lora_r > 0) needs peft: pip install 'rlhf-gym[lora]'") from e
    return peft


def wrap(model: nn.Module, r: int, alpha: float, target_modules: str) -> Any:
    """``model`` with LoRA adapters of rank ``r`` (a ``peft`` ``PeftModel``); only they train.

    Args:
        model: a Hugging Face causal LM (its weights are frozen here; dropout stays off).
        r: the adapters' rank (> 0).
        alpha: LoRA's scaling numerator (the update is scaled by ``alpha / r``).
        target_modules: ``"all-linear"`` or comma-separated module names (suffixes such as
            ``c_attn,c_proj`` for GPT-2 or ``q_proj,v_proj`` for Llama).

    Raises:
        ValueError: a target module the model does not have (the message lists those it has).
    """
    peft = _peft()
    targets: str | list[str] = target_modules
    if target_modules != "all-linear":
        targets = [t.strip() for t in target_modules.split(",") if t.strip()]
        if not targets:
            raise ValueError(f"lora_target_modules is empty; use {TARGET_HELP}")
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,  # dropout makes log-probabilities random (see docs/design.md)
        target_modules=targets,
        fan_in_fan_out=_has_conv1d(model),  # GPT-2 stores its linear layers transposed
        task_type="CAUSAL_LM",
    )
    model.requires_grad_(False)
    try:
        with _peft_quietly():
            wrapped = peft.get_peft_model(model, config)
    except ValueError as e:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if _linear(m)})
        raise ValueError(
            f"lora_target_modules={target_modules!r} does not fit this "
            f"{model.config.model_type} model ({str(e).splitlines()[0]}); its linear layers "
            f"are named {names}: use {TARGET_HELP}"
        ) from e
    wrapped.eval()  # dropout off, also while training
    return wrapped


@contextlib.contextmanager
def _peft_quietly() -> Iterator[None]:
    """peft reads a property transformers 5 deprecated (``is_gradient_checkpointing``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        yield


def _linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _has_conv1d(model: nn.Module) -> bool:
    return any(type(m).__name__ == "Conv1D" for m in model.modules())


def trainable_parameters(model: nn.Module) -> int:
    """How many parameters ``model`` trains (``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class _AdapterOff(nn.Module):
    """The shared model's forward pass with its adapter switched off (the reference)."""

    def __init__(self, peft_model: Any) -> None:
        super().__init__()
        self.peft_model = peft_model
        base = peft_model.get_base_model()
        self.config = base.config
        self.cache_name = cache_argument(base)

    def forward(self, *args: Any, cache: Any = None, **kwargs: Any) -> Any:
        """The base model's outputs; ``cache`` is the KV cache (whatever transformers names it)."""
        kwargs[self.cache_name] = cache
        with self.peft_model.disable_adapter():
            return self.peft_model.get_base_model()(*args, **kwargs)


class AdapterOffReference:
    """A reference object for the environment's ``model=``: the policy's own weights, adapter off.

    Args:
        peft_model: the ``PeftModel`` the agent trains (:func:`wrap`).
    """

    def __init__(self, peft_model: Any) -> None:
        self.peft_model = peft_model
        self.module = _AdapterOff(peft_model)

    @property
    def vocab_size(self) -> int:
        """The output dimension of the shared model."""
        return int(self.peft_model.get_base_model().get_output_embeddings().weight.shape[0])

    def incremental(self, num_rows: int, pad_token_id: int) -> IncrementalLM:
        """``num_rows`` KV-cached rows of the reference (the environment calls this)."""
        return IncrementalLM(self.module, num_rows, pad_token_id)


def load_adapter_weights(peft_model: Any, directory: str | Path) -> None:
    """Load a saved adapter's weights into ``peft_model`` (same rank and targets), in place."""
    peft = _peft()
    from safetensors.torch import load_file

    directory = Path(directory)
    saved = adapter_config(directory)
    mine = peft_model.peft_config["default"]
    if saved.get("r") != mine.r or set(saved.get("target_modules") or []) != set(
        mine.target_modules or []
    ):
        raise ValueError(
            f"{directory}: the checkpoint's adapter (r={saved.get('r')}, "
            f"targets {sorted(saved.get('target_modules') or [])}) differs from this run's "
            f"(r={mine.r}, targets {sorted(mine.target_modules or [])})"
        )
    weights = load_file(str(directory / "adapter_model.safetensors"))
    result = peft.set_peft_model_state_dict(peft_model, weights)
    if result.unexpected_keys:
        raise ValueError(
            f"{directory}: adapter weights that do not fit this model: {result.unexpected_keys[:3]}"
        )


def adapter_config(directory: str | Path) -> dict[str, Any]:
    """The adapter's ``adapter_config.json``; a ``ValueError`` naming the file if it is not a
    JSON object."""
    path = Path(directory) / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a valid adapter config ({e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a valid adapter config (not a JSON object)")
    return config


def is_adapter(directory: str | Path) -> bool:
    """Whether ``directory`` holds a ``peft`` adapter rather than a whole model."""
    return (Path(directory) / "adapter_config.json").is_file()


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Fold the adapter in ``adapter_dir`` into its base model; save a standalone model (and the
    tokenizer) to ``out_dir``, loadable without ``peft``. Returns ``out_dir``."""
    peft = _peft()
    from transformers import AutoTokenizer

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if not adapter_dir.is_dir():
        raise FileNotFoundError(f"{adapter_dir}: no such directory")
    if not is_adapter(adapter_dir):
        raise ValueError(f"{adapter_dir}: no adapter_config.json; not a LoRA adapter directory")
    adapter_config(adapter_dir)  # a clear error for a corrupt config before peft reads it
    from safetensors import SafetensorError

    try:
        with _peft_quietly():
            model = peft.AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir))
    except (OSError, ValueError, SafetensorError) as e:
        lines = str(e).strip().splitlines()
        raise ValueError(
            f"{adapter_dir}: the adapter or its base model could not be loaded "
            f"({type(e).__name__}: {lines[0] if lines else ''})"
        ) from e
    merged = model.merge_and_unload()
    merged.save_pretrained(str(out_dir))
    if (adapter_dir / "tokenizer_config.json").is_file():
        AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(out_dir))
    return out_dir


def as_float32(peft_model: Any) -> None:
    """Keep the adapter's weights in float32 whatever the base model's dtype (mixed precision:
    bf16 frozen weights, fp32 trainable ones)."""
    for p in peft_model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
