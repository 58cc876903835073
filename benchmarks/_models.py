"""Models the benchmarks build locally (no hub): a GPT-2-small-sized random model."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from rlhf_gym.envs.lm import DATA_DIR


def gpt2_small_random(out: Path) -> str:
    """Save GPT-2 small's body (12 layers, 768 wide, 12 heads, 1024 positions) with random
    weights and the embedded tokenizer (its vocabulary, not GPT-2's 50,257) to ``out``."""
    tok = AutoTokenizer.from_pretrained(DATA_DIR / "lm")
    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=12,
        n_head=12,
        n_embd=768,
        n_positions=1024,
        vocab_size=len(tok),
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    GPT2LMHeadModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)
