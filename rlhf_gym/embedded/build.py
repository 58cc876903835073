"""Builds the embedded default models from the project's own synthetic corpus.

``gym.make("RLHF-v0")`` must work offline, so the package ships a tiny causal LM, its
tokenizer and one reward model per task, in Hugging Face format. This command produces them
from nothing but :mod:`rlhf_gym.embedded.corpus` (see ``docs/design.md``, "The embedded
default"):

1. generate the sentiment and harmless corpora (seeded);
2. train a byte-level BPE tokenizer on them (``<|endoftext|>`` is EOS and BOS, ``<|pad|>`` is
   PAD, distinct from EOS, so padding is never mistaken for the end of a response);
3. train one small GPT-2 on both corpora, each document followed by EOS;
4. for each task, sample pairs of continuations from that LM, label them with the gold
   labeler plus Bradley-Terry noise (the simulated person of ``rlhf-gym reward simulate``),
   train a reward model initialised from the LM with the Bradley-Terry trainer of ``rlhf-gym
   reward train`` (:func:`rlhf_gym.feedback.trainer.train_reward_model`), and rescale it to
   mean 0, std 1 on fresh LM samples;
5. write the prompt files and ``BUILD.json`` (seed, sizes, metrics, library versions).

Output layout (``<out>`` defaults to ``rlhf_gym/data/default``)::

    <out>/lm/                  GPT2LMHeadModel + tokenizer + generation_config (pure sampling)
    <out>/reward-sentiment/    GPT2ForSequenceClassification (1 label, the LM's sizes) + tokenizer
    <out>/reward-harmless/     idem
    <out>/prompts/{sentiment,harmless}-{train,eval}.txt   one prompt per line
    <out>/BUILD.json

Contracts the environment relies on: prompts have no trailing space and are encoded without
special tokens (the LM was trained without a BOS prefix); a response is the decoded
continuation (``tokenizer.decode(ids, skip_special_tokens=True)``, nearly always starting
with a space, see :mod:`rlhf_gym.embedded.corpus`); the reward model reads
``prompt + response`` as one string (its start cut if longer than ``n_positions``, as the
environment's scorer does); every dropout is 0 in the saved configs.

The build is deterministic: the same seed, library versions, thread count and machine give
a byte-identical output directory (checked for two full builds and in the tests for --mini).

Example:
    Full build (about 10 minutes on one CPU core), then a 10-second smoke build::

        python -m rlhf_gym.embedded
        python -m rlhf_gym.embedded --mini --out /tmp/rlhf-mini
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import math
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GenerationConfig,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from rlhf_gym.embedded.assistant import TASK as ASSISTANT_TASK
from rlhf_gym.embedded.assistant import make_assistant_corpus
from rlhf_gym.embedded.corpus import TASKS, TaskCorpus, make_task_corpus
from rlhf_gym.envs.gold import GOLD_LABELERS
from rlhf_gym.feedback.records import Preference
from rlhf_gym.feedback.simulate import bt_label
from rlhf_gym.feedback.trainer import (
    RewardTrainConfig,
    length_bucketed_batches,
    normalise_on,
    pad_right,
    save_model,
    score_texts,
    train_reward_model,
)

logger = logging.getLogger(__name__)

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "data" / "default"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
# One thread: on a shared 2-core machine, two OpenMP threads that spin-wait for each other
# while another process holds a core ran 15x slower per step (4.5 s against 0.28 s, measured
# on the 2-core build machine); alone, two threads are only ~1.5x faster than one.
DEFAULT_THREADS = 1


@dataclass(frozen=True)
class BuildConfig:
    """Sizes and schedules of one build; :data:`FULL` and :data:`MINI` are the two in use.

    Attributes:
        n_documents: Training documents per task.
        n_heldout: Held-out documents drawn per task (for the LM's held-out loss).
        n_train_prompts: RL training prompts per task.
        n_eval_prompts: Held-out evaluation prompts per task.
        n_extra_prompts: Further prompts per task, only for reward-model training pairs.
        vocab_size: Size of the BPE vocabulary, special tokens included.
        lm_layers: Transformer blocks of the LM.
        lm_heads: Attention heads of the LM.
        lm_embd: Width of the LM.
        n_positions: Context window of the LM and the reward models, in tokens.
        lm_steps: Optimiser steps of the LM.
        lm_batch: Documents per LM batch.
        lm_lr: Peak learning rate of the LM.
        max_new_tokens: Longest sampled continuation, in tokens.
        rm_init: ``"lm"``: each reward model starts from the LM's transformer (its sizes; the
            ``rm_layers``/``rm_heads``/``rm_embd`` below are then unused); ``"scratch"``: a
            fresh GPT-2 of those sizes.
        rm_layers: Transformer blocks of each reward model.
        rm_heads: Attention heads of each reward model.
        rm_embd: Width of each reward model.
        rm_samples_per_prompt: LM samples per prompt for the preference pairs.
        rm_steps: Optimiser steps of each reward model.
        rm_batch: Preference pairs per reward-model batch.
        rm_lr: Peak learning rate of the reward models.
        label_temperature: Bradley-Terry temperature of the simulated labeler: it prefers
            response a over b with probability ``sigmoid((gold_a - gold_b) / T)``.
        norm_samples_per_prompt: Samples per train prompt for the score normalisation.
        eval_samples_per_prompt: Samples per eval prompt for the held-out metrics.
    """

    n_documents: int
    n_heldout: int
    n_train_prompts: int
    n_eval_prompts: int
    n_extra_prompts: int
    vocab_size: int
    lm_layers: int
    lm_heads: int
    lm_embd: int
    n_positions: int
    lm_steps: int
    lm_batch: int
    lm_lr: float
    max_new_tokens: int
    rm_init: str
    rm_layers: int
    rm_heads: int
    rm_embd: int
    rm_samples_per_prompt: int
    rm_steps: int
    rm_batch: int
    rm_lr: float
    label_temperature: float
    norm_samples_per_prompt: int
    eval_samples_per_prompt: int


# Sizes chosen so that the full build takes about 10 minutes on one CPU core (measured:
# 0.18 s per LM step, ~0.15 s per reward-model step) and the output stays far below 20 MB.
FULL = BuildConfig(
    n_documents=24_000,  # per task: 1,600 steps of 64 documents see each about 2.1 times
    n_heldout=1_000,
    n_train_prompts=256,
    n_eval_prompts=128,
    n_extra_prompts=512,  # the harmless grammar has ~1,180 distinct requests in all
    vocab_size=1_024,  # the corpora have ~1,100 distinct words; frequent ones get one token
    lm_layers=4,
    lm_heads=4,
    lm_embd=128,
    n_positions=128,  # a prompt (<= 25 tokens) plus 64 new tokens fits with room to spare
    lm_steps=1_600,  # 2,000 steps gave a held-out loss lower by only 0.01 nats (measured)
    lm_batch=64,
    lm_lr=2e-3,  # small models tolerate a high rate; warmup and cosine decay keep it stable
    max_new_tokens=32,
    # Held-out accuracy vs gold (sentiment / harmless), through rlhf_gym.feedback's trainer
    # with a tenth of the prompts held out for early stopping: a fresh 2 x 96 GPT-2, 1,000
    # steps, 0.895 / 0.943; from the LM, 1,000 steps, 0.899 / 0.950; 2,000 steps: BUILD.json.
    # (Before, on the whole data with no held-out split, the fresh model gave 0.897 / 0.948;
    # 16 samples per prompt or a 3 x 128 model did not beat it: 749 held-out pairs: +-0.011.)
    rm_init="lm",
    rm_layers=2,  # rm_layers/heads/embd: only for rm_init="scratch"
    rm_heads=4,
    rm_embd=96,
    rm_samples_per_prompt=12,  # 66 pairs per prompt
    rm_steps=2_000,
    rm_batch=64,
    rm_lr=1e-3,
    label_temperature=0.1,  # a gold gap of 0.22 is judged right 90% of the time
    norm_samples_per_prompt=2,
    eval_samples_per_prompt=4,
)

# The whole pipeline with toy sizes, for tests: a few seconds.
MINI = BuildConfig(
    n_documents=300,
    n_heldout=40,
    n_train_prompts=16,
    n_eval_prompts=8,
    n_extra_prompts=8,
    vocab_size=300,  # the 256 bytes, 2 special tokens and 42 merges
    lm_layers=1,
    lm_heads=2,
    lm_embd=32,
    n_positions=64,
    lm_steps=30,
    lm_batch=16,
    lm_lr=3e-3,
    max_new_tokens=12,
    rm_init="scratch",
    rm_layers=1,
    rm_heads=2,
    rm_embd=16,
    rm_samples_per_prompt=4,
    rm_steps=20,
    rm_batch=16,
    rm_lr=3e-3,
    label_temperature=0.1,
    norm_samples_per_prompt=2,
    eval_samples_per_prompt=2,
)


@dataclass(frozen=True)
class Sample:
    """One sampled continuation.

    Attributes:
        prompt: The prompt text.
        response: The decoded continuation (special tokens skipped).
        ended: Whether the LM emitted EOS within ``max_new_tokens``.
    """

    prompt: str
    response: str
    ended: bool


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def deterministic_torch(threads: int) -> Iterator[None]:
    """Fixes the thread count and turns on deterministic algorithms, restoring both after.

    Args:
        threads: Intra-op threads. Float sums depend on how work is split, so a different
            count may change the last bits of the weights.
    """
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)


def _seed(seed: int) -> None:
    """Seeds every global generator; each stage reseeds torch with its own seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _stage_seed(seed: int, stage: str) -> int:
    """A reproducible seed per (build seed, stage), so stages do not share random draws."""
    return random.Random(f"rlhf-gym/build/{seed}/{stage}").getrandbits(63)


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def train_tokenizer(
    texts: Sequence[str], vocab_size: int, n_positions: int
) -> PreTrainedTokenizerFast:
    """Trains a byte-level BPE tokenizer (GPT-2 style: any text encodes, no UNK).

    Args:
        texts: Training texts.
        vocab_size: Vocabulary size including ``<|endoftext|>`` (id 0) and ``<|pad|>`` (id 1).
        n_positions: Recorded as ``model_max_length``.

    Returns:
        The tokenizer, with EOS = BOS = ``<|endoftext|>`` and PAD = ``<|pad|>``.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=n_positions,
        # "a ." must stay "a .": responses are compared as exact strings.
        clean_up_tokenization_spaces=False,
    )


def check_round_trip(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str]) -> None:
    """Raises ``ValueError`` unless decode(encode(text)) gives every text back exactly."""
    for text in texts:
        decoded = tokenizer.decode(tokenizer.encode(text), skip_special_tokens=True)
        if decoded != text:
            raise ValueError(f"tokenizer round trip failed: {text!r} -> {decoded!r}")
    pieces = ("This movie was", " great.")
    joined = "".join(
        tokenizer.decode(tokenizer.encode(piece), skip_special_tokens=True) for piece in pieces
    )
    if joined != "".join(pieces):
        raise ValueError(f"a continuation lost its leading space: {joined!r}")


# ---------------------------------------------------------------------------------------------
# Shared training helpers
# ---------------------------------------------------------------------------------------------


def _optimizer(
    model: torch.nn.Module, lr: float, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with 5% linear warmup then cosine decay to 10% of the peak rate."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _config_kwargs(tokenizer: PreTrainedTokenizerFast, n_positions: int) -> dict[str, object]:
    """Config fields shared by the LM and the reward models: vocabulary, special ids, no dropout."""
    return {
        "vocab_size": len(tokenizer),
        "n_positions": n_positions,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        # Dropout on makes the policy's log-probabilities random, a classic cause of negative KL
        # estimates (a policy in train mode scores the same tokens differently on every pass).
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "summary_first_dropout": 0.0,
    }


def _parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Language model
# ---------------------------------------------------------------------------------------------


def _lm_sequences(
    tokenizer: PreTrainedTokenizerFast, documents: Sequence[str], n_positions: int
) -> list[list[int]]:
    """Token ids of each document followed by EOS, cut to the context window."""
    encoded = tokenizer(
        list(documents), add_special_tokens=False, truncation=True, max_length=n_positions - 1
    )["input_ids"]
    return [ids + [tokenizer.eos_token_id] for ids in encoded]


def _lm_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    ids, mask = pad_right(sequences, pad_id)
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def train_lm(
    tokenizer: PreTrainedTokenizerFast, documents: Sequence[str], config: BuildConfig, seed: int
) -> tuple[GPT2LMHeadModel, float]:
    """Trains the causal LM on the documents (each followed by EOS, starting at position 0).

    Args:
        tokenizer: The trained tokenizer.
        documents: Training documents of all tasks.
        config: Build sizes.
        seed: Seed of this stage (initialisation and batch order).

    Returns:
        The model in eval mode, and the mean training loss over the last 10% of steps.
    """
    torch.manual_seed(seed)
    lm_config = GPT2Config(
        n_layer=config.lm_layers,
        n_head=config.lm_heads,
        n_embd=config.lm_embd,
        **_config_kwargs(tokenizer, config.n_positions),
    )
    model = GPT2LMHeadModel(lm_config)
    sequences = _lm_sequences(tokenizer, documents, config.n_positions)
    batches = length_bucketed_batches(
        [len(s) for s in sequences], config.lm_batch, random.Random(seed)
    )
    optimizer, scheduler = _optimizer(model, config.lm_lr, config.lm_steps)
    tail: list[float] = []
    model.train()
    for step in range(config.lm_steps):
        batch = _lm_batch([sequences[i] for i in next(batches)], tokenizer.pad_token_id)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= config.lm_steps * 0.9:
            tail.append(loss.item())
        if step % 200 == 0:
            logger.info("lm step %d/%d loss %.3f", step, config.lm_steps, loss.item())
    return model.eval(), sum(tail) / len(tail)


@torch.no_grad()
def lm_loss(
    model: GPT2LMHeadModel,
    tokenizer: PreTrainedTokenizerFast,
    documents: Sequence[str],
    n_positions: int,
) -> float:
    """Mean next-token negative log-likelihood (nats per token, EOS included)."""
    sequences = _lm_sequences(tokenizer, documents, n_positions)
    total, count = 0.0, 0
    for start in range(0, len(sequences), 128):
        batch = _lm_batch(sequences[start : start + 128], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        targets = batch["labels"][:, 1:]  # (B, T-1)
        total += F.cross_entropy(
            logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"
        ).item()
        count += int((targets != -100).sum())
    return total / count


def sampling_config(tokenizer: PreTrainedTokenizerFast, max_new_tokens: int) -> GenerationConfig:
    """Pure categorical sampling at temperature 1: no top-k, no top-p, no penalties.

    Any truncation of the distribution would make the sampled tokens disagree with the
    log-probabilities the KL is computed from, so the KL estimate could go negative (see the
    TRL documentation, "Training FAQ", on negative KL from top-k or min-length sampling).
    """
    return GenerationConfig(
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@torch.no_grad()
def sample_continuations(
    model: GPT2LMHeadModel,
    tokenizer: PreTrainedTokenizerFast,
    prompts: Sequence[str],
    n_per_prompt: int,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 256,
) -> list[Sample]:
    """Samples ``n_per_prompt`` continuations of each prompt (pure sampling, temperature 1).

    Args:
        model: The LM.
        tokenizer: Its tokenizer.
        prompts: Prompt texts, encoded without special tokens.
        n_per_prompt: Continuations per prompt; they are consecutive in the result.
        max_new_tokens: Longest continuation.
        seed: Seed of the sampling.
        batch_size: Sequences per ``generate`` call.

    Returns:
        One :class:`Sample` per continuation, in prompt order.
    """
    torch.manual_seed(seed)
    generation = sampling_config(tokenizer, max_new_tokens)
    queue = [p for p in prompts for _ in range(n_per_prompt)]
    samples: list[Sample] = []
    for start in range(0, len(queue), batch_size):
        chunk = queue[start : start + batch_size]
        encoded = [tokenizer.encode(p, add_special_tokens=False) for p in chunk]
        width = max(len(e) for e in encoded)
        # Left padding, so every row's continuation starts at column `width`.
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(e)) + e for e in encoded])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
        output = model.generate(input_ids=ids, attention_mask=mask, generation_config=generation)
        for prompt, row in zip(chunk, output[:, width:].tolist(), strict=True):
            ended = tokenizer.eos_token_id in row
            cut = row.index(tokenizer.eos_token_id) if ended else len(row)
            response = tokenizer.decode(row[:cut], skip_special_tokens=True)
            samples.append(Sample(prompt, response, ended))
    return samples


# ---------------------------------------------------------------------------------------------
# Reward models
# ---------------------------------------------------------------------------------------------


def label_pairs(
    samples: Sequence[Sample],
    n_per_prompt: int,
    gold: Callable[[str, str], float],
    temperature: float,
    rng: random.Random,
) -> list[Preference]:
    """Asks the simulated labeler to compare every pair of continuations of each prompt.

    Each judgment is :func:`rlhf_gym.feedback.simulate.bt_label` (the labeler of ``rlhf-gym
    reward simulate``): a over b with probability ``sigmoid((gold(a) - gold(b)) / T)``; exact
    ties are skipped, as a labeler with a "no preference" button would.

    Args:
        samples: Continuations, ``n_per_prompt`` consecutive ones per prompt.
        n_per_prompt: Group size.
        gold: The task's gold labeler.
        temperature: The noise temperature ``T``.
        rng: Random stream of the labeler.

    Returns:
        Hard-label preferences (the chosen response as A).
    """
    pairs = []
    for start in range(0, len(samples), n_per_prompt):
        group = samples[start : start + n_per_prompt]
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                a, b = group[i], group[j]
                rec = bt_label(a.prompt, a.response, b.response, gold, temperature, rng)
                if rec is not None:
                    pairs.append(rec)
    return pairs


def new_reward_model(
    tokenizer: PreTrainedTokenizerFast, config: BuildConfig, lm: GPT2LMHeadModel, seed: int
) -> GPT2ForSequenceClassification:
    """The reward model before training: the LM's transformer with a new score head
    (``rm_init="lm"``, as in the RLHF papers), or a fresh small GPT-2 (``"scratch"``)."""
    torch.manual_seed(seed)
    if config.rm_init == "lm":
        settings = {k: v for k, v in lm.config.to_dict().items() if k not in LABEL_KEYS}
        model = GPT2ForSequenceClassification(GPT2Config(**settings, num_labels=1))
        model.transformer.load_state_dict(lm.transformer.state_dict())
        return model
    rm_config = GPT2Config(
        n_layer=config.rm_layers,
        n_head=config.rm_heads,
        n_embd=config.rm_embd,
        num_labels=1,
        **_config_kwargs(tokenizer, config.n_positions),
    )
    return GPT2ForSequenceClassification(rm_config)


LABEL_KEYS = ("id2label", "label2id", "num_labels")


def reward_train_config(config: BuildConfig, seed: int) -> RewardTrainConfig:
    """The build's settings of the shared Bradley-Terry trainer."""
    return RewardTrainConfig(
        max_steps=config.rm_steps,
        batch_size=config.rm_batch,
        lr=config.rm_lr,
        weight_decay=0.01,
        max_length=config.n_positions,
        heldout=0.1,
        eval_every=max(1, config.rm_steps // 10),
        patience=4,
        seed=seed,
    )


def _pearson(x: Sequence[float], y: Sequence[float]) -> float:
    return float(
        np.corrcoef(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))[0, 1]
    )


def pairwise_accuracy(
    scores: Sequence[float], gold: Sequence[float], group: int
) -> tuple[float, int]:
    """Fraction of within-prompt pairs that the scores order as the gold does (gold ties skipped).

    Returns:
        The accuracy and the number of pairs compared.
    """
    right, total = 0, 0
    for start in range(0, len(scores), group):
        for i in range(start, start + group):
            for j in range(i + 1, start + group):
                if gold[i] == gold[j]:
                    continue
                total += 1
                right += (scores[i] - scores[j]) * (gold[i] - gold[j]) > 0
    return right / max(1, total), total


# ---------------------------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------------------------


def _sample_stats(samples: Sequence[Sample], gold: Sequence[float]) -> dict[str, float]:
    return {
        "eos_fraction": sum(s.ended for s in samples) / len(samples),
        "gold_mean": float(np.mean(gold)),
        "gold_std": float(np.std(gold)),
        "gold_positive_fraction": sum(g > 0.05 for g in gold) / len(gold),
        "gold_negative_fraction": sum(g < -0.05 for g in gold) / len(gold),
    }


def _preference_pairs(
    task: str,
    lm: GPT2LMHeadModel,
    tokenizer: PreTrainedTokenizerFast,
    corpus: TaskCorpus,
    config: BuildConfig,
    seed: int,
) -> list[Preference]:
    """Samples continuations of the train and extra prompts and has them labeled in pairs."""
    k = config.rm_samples_per_prompt
    samples = sample_continuations(
        lm,
        tokenizer,
        corpus.train_prompts + corpus.extra_prompts,
        k,
        config.max_new_tokens,
        _stage_seed(seed, f"{task}/pairs"),
    )
    labeler = random.Random(_stage_seed(seed, f"{task}/labels"))
    return label_pairs(samples, k, GOLD_LABELERS[task], config.label_temperature, labeler)


def _texts(samples: Sequence[Sample]) -> list[str]:
    """What a reward model reads: ``prompt + response``."""
    return [s.prompt + s.response for s in samples]


def _evaluate_reward_model(
    task: str,
    model: GPT2ForSequenceClassification,
    tokenizer: PreTrainedTokenizerFast,
    samples: Sequence[Sample],
    group: int,
) -> dict[str, object]:
    """Held-out metrics against the noise-free gold, and a few examples."""
    gold = [GOLD_LABELERS[task](s.prompt, s.response) for s in samples]
    scores = score_texts(model, tokenizer, _texts(samples)).tolist()
    accuracy, n_pairs = pairwise_accuracy(scores, gold, group)
    examples = list(zip(samples, gold, scores, strict=True))[::group][:8]
    return {
        "heldout_pairwise_accuracy_vs_gold": accuracy,
        "heldout_pairs": n_pairs,
        "heldout_gold_correlation": _pearson(scores, gold),
        "lm_samples": _sample_stats(samples, gold),
        "examples": [
            {"prompt": s.prompt, "response": s.response, "ended": s.ended, "gold": g, "score": r}
            for s, g, r in examples
        ],
    }


def _build_reward_model(
    task: str,
    lm: GPT2LMHeadModel,
    tokenizer: PreTrainedTokenizerFast,
    corpus: TaskCorpus,
    config: BuildConfig,
    seed: int,
) -> tuple[GPT2ForSequenceClassification, dict[str, object]]:
    """Samples, labels, trains, normalises and evaluates the reward model of one task.

    Training is :func:`rlhf_gym.feedback.trainer.train_reward_model` (the trainer of ``rlhf-gym
    reward train``), with a tenth of the prompts held out for early stopping. Normalisation
    uses fresh samples on the train prompts (the reference policy's distribution, where RL
    starts); evaluation uses samples on the held-out eval prompts.
    """
    pairs = _preference_pairs(task, lm, tokenizer, corpus, config, seed)
    rm_seed = _stage_seed(seed, f"{task}/rm")
    model = new_reward_model(tokenizer, config, lm, rm_seed)
    result = train_reward_model(
        model, tokenizer, pairs, reward_train_config(config, rm_seed), log=logger.info
    )

    def samples(prompts: list[str], n: int, stage: str) -> list[Sample]:
        stage_seed = _stage_seed(seed, f"{task}/{stage}")
        return sample_continuations(lm, tokenizer, prompts, n, config.max_new_tokens, stage_seed)

    reference = _texts(samples(corpus.train_prompts, config.norm_samples_per_prompt, "norm"))
    mean, std, _ = normalise_on(model, tokenizer, reference)
    after = score_texts(model, tokenizer, reference)
    m = config.eval_samples_per_prompt
    evaluation = _evaluate_reward_model(
        task, model, tokenizer, samples(corpus.eval_prompts, m, "eval"), m
    )
    return model, {
        "parameters": _parameter_count(model),
        "pairs": len(pairs),
        "train_pairs": result.train_pairs,
        "steps": result.steps,
        "kept_step": result.best_step,
        "train_accuracy_vs_noisy_labels": result.train_accuracy,
        "heldout_accuracy_vs_noisy_labels": result.heldout.get("accuracy"),
        "normalisation": {
            "removed_mean": mean,
            "removed_std": std,
            "mean_after": float(after.mean()),
            "std_after": float(after.std()),
        },
    } | evaluation


def _save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, path: Path) -> None:
    """Saves in Hugging Face format (safetensors), readable by transformers 4.46+ and 5."""
    save_model(model, tokenizer, path)


def _write_prompts(out_dir: Path, corpora: dict[str, TaskCorpus]) -> None:
    prompts_dir = out_dir / "prompts"
    prompts_dir.mkdir(parents=True, exist_ok=True)
    for task, corpus in corpora.items():
        for split, prompts in (("train", corpus.train_prompts), ("eval", corpus.eval_prompts)):
            (prompts_dir / f"{task}-{split}.txt").write_text(
                "\n".join(prompts) + "\n", encoding="utf-8"
            )


def _corpus_metrics(corpus: TaskCorpus) -> dict[str, int]:
    return {
        "documents": len(corpus.documents),
        "distinct_documents": len(set(corpus.documents)),
        "heldout_documents": len(corpus.heldout),
        "train_prompts": len(corpus.train_prompts),
        "eval_prompts": len(corpus.eval_prompts),
        "extra_prompts": len(corpus.extra_prompts),
    }


def _versions() -> dict[str, str]:
    names = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "vaderSentiment")
    return {"python": sys.version.split()[0]} | {n: importlib.metadata.version(n) for n in names}


def _clear(out_dir: Path, names: Sequence[str]) -> None:
    """Removes what a previous build wrote, so no stale file survives."""
    for name in names:
        shutil.rmtree(out_dir / name, ignore_errors=True)


CLASSIC_DIRS = ("lm", "reward-sentiment", "reward-harmless", "prompts")
ASSISTANT_DIRS = ("assistant", f"reward-{ASSISTANT_TASK}")


class _Stopwatch:
    """Times the stages of a build; each lap is the time since the previous lap or the start."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._clock = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Records and logs the seconds since the previous lap under ``stage``."""
        self.timings[stage] = round(time.perf_counter() - self._clock, 1)
        logger.info("%s done in %.1f s", stage, self.timings[stage])
        self._clock = time.perf_counter()


def _make_corpora(config: BuildConfig, seed: int) -> dict[str, TaskCorpus]:
    """Generates the corpus of every task, in the order of :data:`TASKS`."""
    return {task: make_task_corpus(task, seed=seed, **_corpus_sizes(config)) for task in TASKS}


def _corpus_sizes(config: BuildConfig) -> dict[str, int]:
    """The corpus generators' size arguments, from a build config."""
    return {
        name: getattr(config, name)
        for name in (
            "n_documents",
            "n_heldout",
            "n_train_prompts",
            "n_eval_prompts",
            "n_extra_prompts",
        )
    }


def _documents(corpora: dict[str, TaskCorpus]) -> list[str]:
    """The training documents of all tasks, task after task."""
    return [d for c in corpora.values() for d in c.documents]


def _build_tokenizer(
    corpora: dict[str, TaskCorpus], config: BuildConfig
) -> PreTrainedTokenizerFast:
    """Trains the tokenizer on all training documents and checks it on held-out ones."""
    tokenizer = train_tokenizer(_documents(corpora), config.vocab_size, config.n_positions)
    check_round_trip(tokenizer, [d for c in corpora.values() for d in c.heldout[:50]])
    return tokenizer


def _build_lm(
    tokenizer: PreTrainedTokenizerFast,
    corpora: dict[str, TaskCorpus],
    config: BuildConfig,
    seed: int,
    out_dir: Path,
) -> tuple[GPT2LMHeadModel, dict[str, object]]:
    """Trains the LM, saves it to ``out_dir / "lm"`` and measures its held-out loss per task.

    Returns:
        The LM, and its metrics for ``BUILD.json``.
    """
    lm, lm_train_loss = train_lm(tokenizer, _documents(corpora), config, _stage_seed(seed, "lm"))
    lm.generation_config = sampling_config(tokenizer, config.max_new_tokens)
    _save(lm, tokenizer, out_dir / "lm")
    heldout_loss = {
        t: lm_loss(lm, tokenizer, c.heldout, config.n_positions) for t, c in corpora.items()
    }
    return lm, {
        "parameters": _parameter_count(lm),
        "train_loss_last_10pct": lm_train_loss,
        "heldout_loss": heldout_loss,
    }


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
"""The tokenizer's files. A tokenizer saved after use keeps its last truncation settings (and,
once loaded from disk, loading options), so each reward model gets a copy of the LM's files:
the same tokenizer, the same bytes whether or not the LM was built in the same run."""


def _build_reward_models(
    lm: GPT2LMHeadModel,
    tokenizer: PreTrainedTokenizerFast,
    corpora: dict[str, TaskCorpus],
    config: BuildConfig,
    seed: int,
    out_dir: Path,
    stopwatch: _Stopwatch,
) -> dict[str, object]:
    """Builds and saves the reward model of each task to ``out_dir / "reward-<task>"``.

    Returns:
        The metrics of each reward model, by task.
    """
    reward_metrics: dict[str, object] = {}
    for task, corpus in corpora.items():
        model, reward_metrics[task] = _build_reward_model(task, lm, tokenizer, corpus, config, seed)
        _save(model, tokenizer, out_dir / f"reward-{task}")
        for name in TOKENIZER_FILES:  # the LM's files, not the tokenizer's state after use
            shutil.copyfile(out_dir / "lm" / name, out_dir / f"reward-{task}" / name)
        stopwatch.lap(f"reward_{task}")
    return reward_metrics


def _tokenizer_metrics(tokenizer: PreTrainedTokenizerFast) -> dict[str, object]:
    return {
        "vocab_size": len(tokenizer),
        "eos_id": tokenizer.eos_token_id,
        "pad_id": tokenizer.pad_token_id,
    }


def build(
    out_dir: Path,
    *,
    mini: bool = False,
    seed: int = 0,
    threads: int = DEFAULT_THREADS,
    reward_only: bool = False,
    assistant_only: bool = False,
) -> dict[str, object]:
    """Builds the tokenizer, the LM and both reward models, then the assistant, into ``out_dir``.

    Args:
        out_dir: Output directory (created; earlier build outputs in it are replaced).
        mini: Toy sizes for tests (seconds instead of minutes).
        seed: Seed of the whole build.
        threads: Torch intra-op threads (part of what makes the bytes reproducible).
        reward_only: Keep the tokenizer and LM already in ``out_dir`` (built with the same
            seed and sizes) and rebuild only the reward models of the sentiment and harmless
            tasks (and the assistant family). Every stage has its own seed, so the output is
            the same as a full build's.
        assistant_only: Keep everything of the sentiment and harmless tasks already in
            ``out_dir`` and rebuild only the assistant family (:func:`build_assistant`).

    Returns:
        The metrics, as also written to ``out_dir / "BUILD.json"``.
    """
    config = MINI if mini else FULL
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = _previous_build(out_dir, mini, seed) if reward_only or assistant_only else None
    if previous is None:
        _clear(out_dir, CLASSIC_DIRS)
    (out_dir / "BUILD.json").unlink(missing_ok=True)
    _clear(out_dir, ASSISTANT_DIRS)
    stopwatch = _Stopwatch()
    with deterministic_torch(threads):
        _seed(seed)
        if assistant_only:
            assert previous is not None
            classic = {k: previous[k] for k in ("corpus", "tokenizer", "lm", "reward_models")}
        else:
            corpora = _make_corpora(config, seed)  # own seeded streams: no global draws
            if previous is None:
                tokenizer = _build_tokenizer(corpora, config)
                stopwatch.lap("corpus_and_tokenizer")
                lm, lm_metrics = _build_lm(tokenizer, corpora, config, seed, out_dir)
            else:
                tokenizer = PreTrainedTokenizerFast.from_pretrained(out_dir / "lm")
                lm = GPT2LMHeadModel.from_pretrained(out_dir / "lm").eval()
                lm_metrics = previous["lm"]
            stopwatch.lap("lm")
            reward_metrics = _build_reward_models(
                lm, tokenizer, corpora, config, seed, out_dir, stopwatch
            )
            classic = {
                "corpus": {task: _corpus_metrics(c) for task, c in corpora.items()},
                "tokenizer": _tokenizer_metrics(tokenizer),
                "lm": lm_metrics,
                "reward_models": reward_metrics,
            }
            _write_prompts(out_dir, corpora)
        assistant = build_assistant(config, seed, out_dir, stopwatch)

    metrics: dict[str, object] = {
        "seed": seed,
        "mini": mini,
        "threads": threads,
        "config": asdict(config),
        **classic,
        "assistant": assistant,
        "versions": _versions(),
    }
    # Timings vary from run to run, so they are returned and printed but not written: the
    # whole output directory is then reproducible, not only the weights.
    (out_dir / "BUILD.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics | {"timings_s": stopwatch.timings}


# ---------------------------------------------------------------------------------------------
# The assistant: the helpful-harmless task and Constitutional AI in miniature
# ---------------------------------------------------------------------------------------------


def assistant_config(config: BuildConfig) -> BuildConfig:
    """The assistant family's sizes: the LM's, with a window for critique-and-revision
    demonstrations (a dialogue, two requests, a critique and a revision: up to 220 tokens)."""
    if config == MINI:
        return replace(MINI, n_positions=128, max_new_tokens=16)
    return replace(
        config,
        n_documents=30_000,  # 15,000 dialogues, 9,000 critique-and-revision, 6,000 comparisons
        n_positions=256,
        lm_steps=2_000,  # 64 documents a step: each document seen about 4.3 times
        max_new_tokens=48,  # the longest replies of the corpus are about 44 tokens
        rm_steps=1_000,
        rm_samples_per_prompt=8,  # 28 pairs per prompt, 21,500 pairs in all
    )


def build_assistant(
    config: BuildConfig, seed: int, out_dir: Path, stopwatch: _Stopwatch
) -> dict[str, object]:
    """Builds the assistant family into ``out_dir``: its own tokenizer and LM
    (``assistant/``), the helpful-harmless reward model (``reward-helpful_harmless/``) and
    prompts (``prompts/helpful_harmless-{train,eval}.txt``).

    The assistant is a second small LM trained only on :mod:`rlhf_gym.embedded.assistant`'s
    corpus: helpful-harmless dialogues and demonstrations of the critique, revision and
    comparison formats of :mod:`rlhf_gym.cai.formats` (judged by the gold labeler). It is the
    embedded model of ``RLHFHelpfulHarmless-v0`` and of ``rlhf-gym cai``. The sentiment and
    harmless models are not touched, so their figures stay what they were.

    Returns:
        Its metrics for ``BUILD.json``.
    """
    acfg = assistant_config(config)
    corpus = make_assistant_corpus(seed=seed, **_corpus_sizes(acfg))
    tokenizer = train_tokenizer(corpus.documents, acfg.vocab_size, acfg.n_positions)
    check_round_trip(tokenizer, corpus.heldout[:50])
    stopwatch.lap("assistant_corpus_and_tokenizer")
    lm, train_loss = train_lm(tokenizer, corpus.documents, acfg, _stage_seed(seed, "assistant/lm"))
    lm.generation_config = sampling_config(tokenizer, acfg.max_new_tokens)
    _save(lm, tokenizer, out_dir / "assistant")
    heldout_loss = lm_loss(lm, tokenizer, corpus.heldout, acfg.n_positions)
    stopwatch.lap("assistant_lm")
    model, rm_metrics = _build_reward_model(ASSISTANT_TASK, lm, tokenizer, corpus, acfg, seed)
    _save(model, tokenizer, out_dir / f"reward-{ASSISTANT_TASK}")
    for name in TOKENIZER_FILES:
        shutil.copyfile(out_dir / "assistant" / name, out_dir / f"reward-{ASSISTANT_TASK}" / name)
    stopwatch.lap(f"reward_{ASSISTANT_TASK}")
    _write_prompts(out_dir, {ASSISTANT_TASK: corpus})
    return {
        "config": asdict(acfg),
        "corpus": _corpus_metrics(corpus) | {"kinds": dict(corpus.counts)},
        "tokenizer": _tokenizer_metrics(tokenizer),
        "lm": {
            "parameters": _parameter_count(lm),
            "train_loss_last_10pct": train_loss,
            "heldout_loss": heldout_loss,
        },
        "reward_model": rm_metrics,
    }


def _previous_build(out_dir: Path, mini: bool, seed: int) -> dict[str, Any]:
    """The BUILD.json of the build in ``out_dir``, checked to match ``mini`` and ``seed``."""
    path = out_dir / "BUILD.json"
    if not path.is_file() or not (out_dir / "lm").is_dir():
        raise FileNotFoundError(
            f"--reward-only / --assistant-only need a finished build in {out_dir}: no {path}"
        )
    previous = json.loads(path.read_text(encoding="utf-8"))
    if previous.get("mini") != mini or previous.get("seed") != seed:
        raise ValueError(
            f"--reward-only: the build in {out_dir} has mini={previous.get('mini')}, "
            f"seed={previous.get('seed')}; asked for mini={mini}, seed={seed}"
        )
    return previous


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rlhf_gym.embedded",
        description="Build the embedded default LM, tokenizer and reward models offline.",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_DIR, help=f"output directory (default: {DEFAULT_DIR})"
    )
    parser.add_argument("--mini", action="store_true", help="toy sizes for a smoke test (seconds)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole build (default: 0)")
    parser.add_argument(
        "--reward-only",
        action="store_true",
        help="keep the tokenizer and LM of the build in --out; rebuild the reward models",
    )
    parser.add_argument(
        "--assistant-only",
        action="store_true",
        help="keep the sentiment and harmless models of the build in --out; rebuild the "
        "assistant (LM of the helpful-harmless task and Constitutional AI) and its reward model",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"torch threads; changing it may change the bytes (default: {DEFAULT_THREADS})",
    )
    args = parser.parse_args(argv)
    # checked here, before build() clears anything in --out
    if args.threads < 1:
        parser.error(f"argument --threads: must be at least 1, got {args.threads}")
    if args.seed < 0:
        parser.error(f"argument --seed: must be an integer >= 0, got {args.seed}")
    out = args.out.expanduser()
    if out.exists() and not out.is_dir():
        parser.error(f"argument --out: {str(args.out)!r} is a file; expected a directory")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        parser.error(f"argument --out: {str(parent)!r} is a file, not a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bars
    started = time.perf_counter()
    metrics = build(
        args.out,
        mini=args.mini,
        seed=args.seed,
        threads=args.threads,
        reward_only=args.reward_only,
        assistant_only=args.assistant_only,
    )
    summary = {
        "out": str(args.out),
        "seconds": round(time.perf_counter() - started, 1),
        "timings_s": metrics["timings_s"],
        "lm_heldout_loss": metrics["lm"]["heldout_loss"],  # type: ignore[index]
        "reward_models": {
            task: {k: v for k, v in m.items() if k not in ("examples",)}
            for task, m in metrics["reward_models"].items()  # type: ignore[union-attr]
        },
        "assistant": {
            "lm_heldout_loss": metrics["assistant"]["lm"]["heldout_loss"],  # type: ignore[index]
            "reward_model": {
                k: v
                for k, v in metrics["assistant"]["reward_model"].items()  # type: ignore[index]
                if k != "examples"
            },
        },
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
