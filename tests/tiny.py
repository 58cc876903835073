"""Tiny Hugging Face models built in-process for tests (random weights, a real tokenizer)."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

TEXT = [
    "the movie was great and the acting was fine .",
    "i did not like the plot , it was slow and boring .",
    "a wonderful film with a terrible ending !",
    "Q: how do i fix my bike ? A: check the chain first , please .",
] * 4


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of a few hundred tokens with distinct EOS and PAD."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TEXT, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<|pad|>",
    )


def save_tiny_lm(path: Path, arch: str = "gpt2", seed: int = 0) -> Path:
    """Save a random tiny causal LM and its tokenizer to ``path``; return ``path``."""
    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(tok),
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if arch == "gpt2":
        cfg = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=128, **common)
        model = GPT2LMHeadModel(cfg)
    else:
        cfg = LlamaConfig(
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            hidden_size=32,
            intermediate_size=64,
            max_position_embeddings=128,
            **common,
        )
        model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def save_tiny_reward_model(path: Path, num_labels: int = 1, seed: int = 1) -> Path:
    """Save a random tiny sequence classifier (GPT-2 body) and its tokenizer to ``path``."""
    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=16,
        n_positions=128,
        vocab_size=len(tok),
        num_labels=num_labels,
        pad_token_id=tok.pad_token_id,
    )
    if num_labels == 2:
        cfg.id2label, cfg.label2id = {0: "NEGATIVE", 1: "POSITIVE"}, {"NEGATIVE": 0, "POSITIVE": 1}
    GPT2ForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""A minimal chat template (role markers, one turn per line), as chat models ship one."""


def save_tiny_chat_lm(path: Path) -> Path:
    """A random tiny Llama whose tokenizer has :data:`CHAT_TEMPLATE`: a "chat model"."""
    save_tiny_lm(path, arch="llama", seed=2)
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(path)
    return path
