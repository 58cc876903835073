"""The embedded default: the build command, its determinism, and the shipped artefacts."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)

from rlhf_gym.embedded import build as build_default
from rlhf_gym.embedded.corpus import TASKS, make_task_corpus

MODEL_DIRS = ("lm", "reward-sentiment", "reward-harmless", "assistant", "reward-helpful_harmless")
PROMPT_FILES = tuple(f"{task}-{split}.txt" for task in TASKS for split in ("train", "eval"))


@pytest.fixture(scope="module")
def mini_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mini-a")
    assert build_default.main(["--mini", "--out", str(out), "--seed", "0"]) == 0
    return out


def _assert_no_dropout(model: PreTrainedModel) -> None:
    config = model.config
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.0, 0.0, 0.0)


def _check_build_dir(out: Path, *, min_vocab: int) -> None:
    """Everything loads with the Auto classes and follows the documented contracts."""
    tokenizer = AutoTokenizer.from_pretrained(out / "lm")
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.bos_token_id == tokenizer.eos_token_id
    assert len(tokenizer) >= min_vocab
    text = "Q: Naïve café? A: It depends 🙂  on\tyou."  # byte-level: any text round-trips
    assert tokenizer.decode(tokenizer.encode(text), skip_special_tokens=True) == text

    lm = AutoModelForCausalLM.from_pretrained(out / "lm")
    _assert_no_dropout(lm)
    assert lm.config.pad_token_id == tokenizer.pad_token_id
    assert lm.config.eos_token_id == tokenizer.eos_token_id
    assert lm.generation_config.top_k in (0, None) and lm.generation_config.top_p in (1.0, None)
    for task in TASKS:
        rm = AutoModelForSequenceClassification.from_pretrained(out / f"reward-{task}")
        _assert_no_dropout(rm)
        assert rm.config.num_labels == 1
        assert rm.config.pad_token_id == tokenizer.pad_token_id
        batch = tokenizer(["This movie was great.", "Q: Hi? A: Hello."], padding=True)
        scores = rm(**{k: torch.tensor(v) for k, v in batch.items()}).logits
        assert scores.shape == (2, 1) and torch.isfinite(scores).all()
    for name in PROMPT_FILES + ("helpful_harmless-train.txt", "helpful_harmless-eval.txt"):
        prompts = (out / "prompts" / name).read_text(encoding="utf-8").splitlines()
        assert prompts and all(p and p == p.strip() for p in prompts)
    # the assistant family: its own tokenizer, shared by its reward model
    assistant_tok = AutoTokenizer.from_pretrained(out / "assistant")
    assert assistant_tok.pad_token_id != assistant_tok.eos_token_id
    assistant = AutoModelForCausalLM.from_pretrained(out / "assistant")
    _assert_no_dropout(assistant)
    rm = AutoModelForSequenceClassification.from_pretrained(out / "reward-helpful_harmless")
    assert rm.config.num_labels == 1 and rm.config.vocab_size == assistant.config.vocab_size
    for name in build_default.TOKENIZER_FILES:
        assert (out / "reward-helpful_harmless" / name).read_bytes() == (
            out / "assistant" / name
        ).read_bytes()


def _continue(out: Path, prompt: str) -> str:
    tokenizer = AutoTokenizer.from_pretrained(out / "lm")
    lm = AutoModelForCausalLM.from_pretrained(out / "lm")
    ids = torch.tensor([tokenizer.encode(prompt)])
    torch.manual_seed(0)
    output = lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids))
    return tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)


def test_mini_build_produces_loadable_models(mini_build: Path) -> None:
    _check_build_dir(mini_build, min_vocab=256)
    metrics = json.loads((mini_build / "BUILD.json").read_text(encoding="utf-8"))
    assert metrics["mini"] is True and metrics["seed"] == 0
    for task in TASKS:
        normalisation = metrics["reward_models"][task]["normalisation"]
        assert normalisation["mean_after"] == pytest.approx(0.0, abs=1e-4)
        assert normalisation["std_after"] == pytest.approx(1.0, abs=1e-4)
    train = (mini_build / "prompts" / "sentiment-train.txt").read_text().splitlines()
    assert not set(train) & set(
        (mini_build / "prompts" / "sentiment-eval.txt").read_text().splitlines()
    )
    assert isinstance(_continue(mini_build, train[0]), str)


def test_two_mini_builds_are_byte_identical(mini_build: Path, tmp_path: Path) -> None:
    build_default.build(tmp_path, mini=True, seed=0)
    for name in MODEL_DIRS:
        for file in ("model.safetensors", "tokenizer.json", "config.json"):
            assert (tmp_path / name / file).read_bytes() == (mini_build / name / file).read_bytes()
    assert (tmp_path / "BUILD.json").read_bytes() == (mini_build / "BUILD.json").read_bytes()


@pytest.mark.parametrize("rm_init", ["scratch", "lm"])
def test_rebuilding_only_the_reward_models_gives_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rm_init: str
) -> None:
    """``--reward-only`` (the LM loaded from disk) writes what a full build writes."""
    monkeypatch.setattr(build_default, "MINI", replace(build_default.MINI, rm_init=rm_init))
    full, out = tmp_path / "full", tmp_path / "again"
    build_default.build(full, mini=True, seed=0)
    shutil.copytree(full, out)
    for task in ("sentiment", "harmless"):
        shutil.rmtree(out / f"reward-{task}")
    build_default.build(out, mini=True, seed=0, reward_only=True)
    for file in sorted(p.relative_to(full) for p in full.rglob("*") if p.is_file()):
        assert (out / file).read_bytes() == (full / file).read_bytes(), file
    with pytest.raises(ValueError, match="seed=0; asked for mini=True, seed=1"):
        build_default.build(out, mini=True, seed=1, reward_only=True)


def test_rebuilding_only_the_assistant_keeps_the_rest_and_gives_the_same_bytes(
    mini_build: Path, tmp_path: Path
) -> None:
    """``--assistant-only`` leaves the sentiment and harmless files alone and writes the
    assistant family as a full build does."""
    out = tmp_path / "again"
    shutil.copytree(mini_build, out)
    for name in ("assistant", "reward-helpful_harmless"):
        shutil.rmtree(out / name)
    (out / "prompts" / "helpful_harmless-eval.txt").unlink()
    kept = {p: p.stat().st_mtime_ns for p in (out / "lm").rglob("*") if p.is_file()}
    build_default.build(out, mini=True, seed=0, assistant_only=True)
    assert {p: p.stat().st_mtime_ns for p in (out / "lm").rglob("*") if p.is_file()} == kept
    for file in sorted(p.relative_to(mini_build) for p in mini_build.rglob("*") if p.is_file()):
        assert (out / file).read_bytes() == (mini_build / file).read_bytes(), file


def test_build_leaves_torch_settings_as_it_found_them(tmp_path: Path) -> None:
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    build_default.build(tmp_path, mini=True, seed=1, threads=1)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_corpus_prompt_splits_are_disjoint_and_seeded() -> None:
    for task in TASKS:
        a = make_task_corpus(task, n_documents=20, n_heldout=5, seed=3, n_extra_prompts=10)
        b = make_task_corpus(task, n_documents=20, n_heldout=5, seed=3, n_extra_prompts=10)
        assert a == b
        splits = (a.train_prompts, a.eval_prompts, a.extra_prompts)
        assert sum(map(len, splits)) == len(set().union(*splits)) == 256 + 128 + 10
        assert not set(a.heldout) & set(a.documents)
    assert make_task_corpus("sentiment", n_documents=5, n_heldout=0, seed=4).documents != (
        make_task_corpus("sentiment", n_documents=5, n_heldout=0, seed=3).documents
    )


def test_shipped_default_loads_and_writes_text() -> None:
    out = build_default.DEFAULT_DIR
    _check_build_dir(out, min_vocab=1000)
    prompt = (out / "prompts" / "sentiment-eval.txt").read_text(encoding="utf-8").splitlines()[0]
    response = _continue(out, prompt)
    assert response.startswith(" ") and any(c.isalpha() for c in response)
    metrics = json.loads((out / "BUILD.json").read_text(encoding="utf-8"))
    assert metrics["mini"] is False
    # The quality bar the shipped models were built to: a useful proxy, a mostly ending LM.
    sentiment = metrics["reward_models"]["sentiment"]
    assert sentiment["heldout_pairwise_accuracy_vs_gold"] > 0.75
    assert sentiment["lm_samples"]["eos_fraction"] > 0.75
    assert sentiment["lm_samples"]["gold_positive_fraction"] > 0.2
    assert sentiment["lm_samples"]["gold_negative_fraction"] > 0.2
    assistant = metrics["assistant"]
    assert assistant["reward_model"]["heldout_pairwise_accuracy_vs_gold"] > 0.75
    assert assistant["reward_model"]["lm_samples"]["eos_fraction"] > 0.75
