"""Preference data, the Bradley-Terry trainer, normalisation, the simulated labeler and
``rlhf-gym reward`` (the labeling page has its own tests)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from rlhf_gym.cli import main
from rlhf_gym.envs.rewards import HFRewardModel
from rlhf_gym.feedback.metrics import expected_calibration_error, preference_metrics
from rlhf_gym.feedback.records import (
    Preference,
    PreferenceFormatError,
    read_preferences,
    split_hh,
    write_preferences,
)
from rlhf_gym.feedback.simulate import bt_label
from rlhf_gym.feedback.trainer import (
    RewardTrainConfig,
    bradley_terry_loss,
    ensure_pad_token,
    load_base,
    normalise,
    save_model,
    score_texts,
    train_reward_model,
)
from tests.tiny import tiny_tokenizer


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ readers
def test_our_format_hard_soft_margin_and_meta_round_trip(tmp_path):
    rows = [
        {"prompt": "P1", "chosen": " yes", "rejected": " no", "margin": 2, "annotator": "ann"},
        {"prompt": "P2", "response_a": " a", "response_b": " b", "p_a": 0.25},
    ]
    data = read_preferences(write_jsonl(tmp_path / "p.jsonl", rows))
    first, second = data.records
    assert (first.response_a, first.response_b, first.p_a, first.margin) == (" yes", " no", 1, 2)
    assert first.meta == {"annotator": "ann"}
    assert (second.p_a, second.is_hard) == (0.25, False)
    assert data.report.format == "jsonl" and data.report.records == 2
    write_preferences(data.records, tmp_path / "again.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert lines == rows


def test_hard_label_with_p_a_zero_is_written_with_the_winner_as_chosen(tmp_path):
    write_preferences([Preference("P", " a", " b", 0.0)], tmp_path / "x.jsonl")
    row = json.loads((tmp_path / "x.jsonl").read_text())
    assert (row["chosen"], row["rejected"]) == (" b", " a")


def test_hh_rlhf_prompt_is_the_shared_prefix_up_to_the_last_assistant_turn(tmp_path):
    chosen = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Help me\n\nAssistant: Sure, here."
    rejected = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Help me\n\nAssistant: No."
    data = read_preferences(
        write_jsonl(tmp_path / "hh.jsonl", [{"chosen": chosen, "rejected": rejected}])
    )
    rec = data.records[0]
    assert data.report.format == "hh"
    assert rec.prompt == "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Help me\n\nAssistant:"
    assert (rec.response_a, rec.response_b) == (" Sure, here.", " No.")
    # responses that begin alike still cut at the assistant turn, not mid-word
    assert split_hh("\n\nHuman: x\n\nAssistant: Sure.", "\n\nHuman: x\n\nAssistant: Sun.")[1:] == (
        " Sure.",
        " Sun.",
    )


def test_best_of_k_expands_to_the_best_against_each_other_sample(tmp_path):
    rows = [
        {
            "query": "Q",
            "sample0": " a",
            "sample1": " b",
            "sample2": " c",
            "sample3": " b",
            "best": 1,
        },
        {"prompt": "R", "responses": [" x", " y"], "best": 0},
    ]
    data = read_preferences(write_jsonl(tmp_path / "bok.jsonl", rows))
    assert data.report.format == "best_of_k"
    pairs = [(r.prompt, r.response_a, r.response_b) for r in data.records]
    # sample3 equals the best: no pair with itself
    assert pairs == [("Q", " b", " a"), ("Q", " b", " c"), ("R", " x", " y")]


def test_duplicates_empty_and_identical_responses_are_dropped_and_reported(tmp_path):
    rows = [
        {"prompt": "P", "chosen": " a", "rejected": " b"},
        {"prompt": "P", "chosen": " b", "rejected": " a"},  # the same pair, other way round
        {"prompt": "P", "chosen": "   ", "rejected": " b"},
        {"prompt": "P", "chosen": " c", "rejected": " c"},
        {"prompt": "Q", "chosen": " a", "rejected": " b"},
    ]
    data = read_preferences(write_jsonl(tmp_path / "p.jsonl", rows))
    report = data.report
    assert (report.duplicates, report.empty, report.identical) == ([2], [3], [4])
    assert len(data.records) == 2 and report.dropped == 3
    assert "1 duplicates (lines 2)" in report.summary()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "bad.jsonl:2: not valid JSON"),
        ('["a list"]', "bad.jsonl:2: expected a JSON object"),
        ('{"prompt": "P", "chosen": " a"}', "bad.jsonl:2: field 'rejected' is missing"),
        ('{"prompt": "P", "chosen": 3, "rejected": " b"}', "field 'chosen' must be a string"),
        (
            '{"prompt": "P", "response_a": " a", "response_b": " b", "p_a": 1.5}',
            "bad.jsonl:2: field 'p_a' must be a number in [0, 1], got 1.5",
        ),
        ('{"prompt": "P", "response_a": " a", "response_b": " b"}', "field 'p_a' is missing"),
        (
            '{"prompt": "P", "chosen": " a", "rejected": " b", "margin": -1}',
            "field 'margin' must be a number in [0, inf]",
        ),
    ],
)
def test_a_malformed_line_names_the_file_the_line_and_the_field(tmp_path, line, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "P", "chosen": " a", "rejected": " b"}\n' + line + "\n")
    with pytest.raises(PreferenceFormatError) as e:
        read_preferences(path)
    assert expected in str(e.value)


def test_best_of_k_with_a_bad_index_names_the_field(tmp_path):
    path = write_jsonl(
        tmp_path / "b.jsonl", [{"prompt": "P", "responses": [" a", " b"], "best": 2}]
    )
    with pytest.raises(PreferenceFormatError, match=r"b.jsonl:1: field 'best' must be an index"):
        read_preferences(path)


def test_missing_file_unknown_format_and_unrecognised_keys(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_preferences(tmp_path / "nope.jsonl")
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": "x"}])
    with pytest.raises(ValueError, match="format must be one of auto, jsonl, hh, best_of_k"):
        read_preferences(path, format="csv")
    with pytest.raises(PreferenceFormatError, match=r"cannot tell the format from the keys"):
        read_preferences(path)


# ------------------------------------------------------------------------------ losses
def test_bradley_terry_loss_hand_computed_values():
    r_a, r_b = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.5])
    hard = bradley_terry_loss(r_a, r_b, torch.tensor([1.0, 1.0]))
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(1.0))) / 2
    assert hard.item() == pytest.approx(expected, rel=1e-6)
    # margin: -log σ(d - m); p_a = 0 flips the pair
    m = bradley_terry_loss(r_a[:1], r_b[:1], torch.tensor([1.0]), torch.tensor([0.5]))
    assert m.item() == pytest.approx(math.log1p(math.exp(-0.5)), rel=1e-6)
    flipped = bradley_terry_loss(r_a[:1], r_b[:1], torch.tensor([0.0]))
    assert flipped.item() == pytest.approx(math.log1p(math.exp(1.0)), rel=1e-6)
    # soft: cross-entropy against p = 0.7 at d = 1
    soft = bradley_terry_loss(r_a[:1], r_b[:1], torch.tensor([0.7]))
    ce = -(0.7 * math.log(1 / (1 + math.exp(-1))) + 0.3 * math.log(1 / (1 + math.exp(1))))
    assert soft.item() == pytest.approx(ce, rel=1e-6)
    # centering adds c * (r_a + r_b)^2
    centred = bradley_terry_loss(r_a[:1], r_b[:1], torch.tensor([1.0]), center=0.01)
    assert centred.item() - bradley_terry_loss(r_a[:1], r_b[:1], torch.tensor([1.0])).item() == (
        pytest.approx(0.01 * 9.0, rel=1e-5)
    )


def test_metrics_accuracy_margin_and_calibration():
    recs = [
        Preference("", "a", "b", 1.0),
        Preference("", "a", "c", 1.0),
        Preference("", "a", "d", 0.5),
    ]
    m = preference_metrics(np.array([2.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0]), recs)
    assert m["accuracy"] == 0.5 and m["decided_pairs"] == 2
    assert m["mean_margin"] == pytest.approx((2.0 - 1.0 + 0.0) / 3)
    assert expected_calibration_error(np.array([0.75, 0.75]), np.array([1.0, 0.0])) == 0.25


# ------------------------------------------------------------------------------ simulated labeler
def test_bt_label_prefers_a_with_the_bradley_terry_probability():
    gold = {" a": 0.3, " b": 0.2}
    rng = random.Random(0)
    recs = [bt_label("P", " a", " b", lambda p, r: gold[r], 0.1, rng) for _ in range(4000)]
    share = sum(r.response_a == " a" for r in recs) / len(recs)
    assert share == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.02)
    soft = bt_label("P", " a", " b", lambda p, r: gold[r], 0.1, rng, soft=True)
    assert soft.p_a == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert bt_label("P", " a", " a", lambda p, r: 0.0, 0.1, rng) is None  # a gold tie


# ------------------------------------------------------------------------------ model plumbing
def test_ensure_pad_token_adds_a_pad_distinct_from_eos():
    tok = tiny_tokenizer()
    tok.pad_token = tok.eos_token  # the GPT-2 habit that stops reward models learning
    model = GPT2ForSequenceClassification(
        GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=len(tok) - 1, num_labels=1)
    )
    assert ensure_pad_token(model, tok)
    assert tok.pad_token_id != tok.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.get_input_embeddings().num_embeddings == len(tok)


TEXTS = ["the movie was great", "a terrible ending !", "Q: help ? A: please", "fine ."]


def _tiny_classifier(kind: str):
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    common = dict(vocab_size=len(tok), num_labels=1, pad_token_id=tok.pad_token_id)
    if kind == "gpt2":  # score head without bias, LayerNorm ln_f with one
        model = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_head=2, n_embd=16, **common))
    elif kind == "bert":  # classifier head with a bias
        model = BertForSequenceClassification(
            BertConfig(
                num_hidden_layers=1,
                num_attention_heads=2,
                hidden_size=16,
                intermediate_size=32,
                **common,
            )
        )
    else:  # llama: no bias anywhere near the head (RMSNorm)
        model = LlamaForSequenceClassification(
            LlamaConfig(
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=2,
                hidden_size=16,
                intermediate_size=32,
                **common,
            )
        )
    return model.eval(), tok


@pytest.mark.parametrize(
    ("kind", "where"), [("gpt2", "ln_f"), ("bert", "bias"), ("llama", "config")]
)
def test_normalise_gives_mean_0_std_1_through_the_envs_loading_code(tmp_path, kind, where):
    model, tok = _tiny_classifier(kind)
    before = score_texts(model, tok, TEXTS)
    assert normalise(model, float(before.mean()), float(before.std())) == where
    save_model(model, tok, tmp_path / kind)
    rm = HFRewardModel.load(str(tmp_path / kind), torch.device("cpu"))
    after = rm.score([""] * len(TEXTS), TEXTS)
    assert after.mean() == pytest.approx(0.0, abs=1e-5)
    assert after.std() == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------------------ training
def _keyword_pairs(n: int, seed: int = 0) -> list[Preference]:
    """The preferred response says "great"; the other "boring" (a rule a model can learn)."""
    rng = random.Random(seed)
    prompts = [f"Review {i}: the film was" for i in range(n)]
    good, bad = [" great fun .", " great , really great ."], [" boring .", " slow and boring ."]
    out = []
    for p in prompts:
        a, b = rng.choice(good), rng.choice(bad)
        out.append(Preference(p, a, b, 1.0) if rng.random() < 0.5 else Preference(p, b, a, 0.0))
    return out


def test_trainer_learns_a_preference_keeps_the_best_weights_and_reports_truncation():
    model, tok = load_base("default")
    records = _keyword_pairs(120)
    cfg = RewardTrainConfig(
        epochs=3,
        batch_size=16,
        lr=1e-3,
        heldout=0.25,
        max_length=6,
        eval_every=5,
        patience=0,
        min_steps=0,
    )
    result = train_reward_model(model, tok, records, cfg)
    assert result.train_pairs + result.heldout_pairs == 120  # nothing dropped
    assert result.truncated_texts > 0 and result.max_length == 6
    assert result.heldout["accuracy"] >= 0.95
    assert result.heldout["accuracy"] == max(acc for _, acc in result.history)
    assert not model.training  # dropout stayed off


def test_early_stopping_stops_when_heldout_accuracy_does_not_improve():
    """Coin-flip labels: nothing to learn, so the held-out accuracy and loss stop improving."""
    model, tok = load_base("default")
    rng = random.Random(1)
    noise = [
        Preference(r.prompt, r.response_a, r.response_b, float(rng.random() < 0.5))
        for r in _keyword_pairs(60)
    ]
    cfg = RewardTrainConfig(max_steps=200, batch_size=8, lr=1e-3, eval_every=2, patience=2)
    result = train_reward_model(model, tok, noise, cfg)
    assert result.stopped_early and result.steps < 200
    assert result.best_step < result.steps  # the kept weights are the best, not the last


def test_small_data_sets_get_at_least_min_steps():
    model, tok = load_base("default")
    cfg = RewardTrainConfig(epochs=1, batch_size=8, min_steps=12, heldout=0)
    assert train_reward_model(model, tok, _keyword_pairs(16), cfg).steps == 12  # not 2


def test_bad_training_settings_name_the_field():
    model, tok = load_base("default")
    with pytest.raises(ValueError, match="heldout is out of range: 1.5"):
        train_reward_model(model, tok, _keyword_pairs(4), RewardTrainConfig(heldout=1.5))


# ------------------------------------------------------------------------------ the commands
def test_reward_simulate_train_eval_and_the_env_takes_the_result(tmp_path, capsys):
    prefs, out = tmp_path / "prefs.jsonl", tmp_path / "rm"
    assert main(["reward", "simulate", "--pairs", "24", "--out", str(prefs), "--seed", "3"]) == 0
    records = read_preferences(prefs).records
    assert len(records) == 24 and all({"gold_a", "gold_b"} <= set(r.meta) for r in records)
    assert (
        main(
            [
                "reward",
                "train",
                "--data",
                str(prefs),
                "--out",
                str(out),
                "--max-steps",
                "4",
                "--batch-size",
                "8",
                "--normalise",
                "data",
                "--logdir",
                str(tmp_path / "runs"),
            ]
        )
        == 0
    )
    summary = json.loads((out / "reward_model.json").read_text())
    assert summary["result"]["steps"] == 4 and summary["normalisation"]["on"] == "data"
    events = list((tmp_path / "runs").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    capsys.readouterr()
    assert (
        main(
            [
                "reward",
                "eval",
                "--reward-model",
                str(out),
                "--data",
                str(prefs),
                "--json",
                "--gold-samples",
                "0",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["accuracy"] <= 1.0 and "accuracy_vs_gold" in result and "ece" in result
    env = gym.make("RLHF-v0", reward_model=str(out))
    env.reset(seed=0)
    env.close()


def test_reward_train_writes_the_tensorboard_tags_of_docs_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rlhf_gym.feedback import tags

    data = tmp_path / "p.jsonl"
    write_preferences(_keyword_pairs(40), data)
    assert (
        main(
            [
                "reward",
                "train",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "rm"),
                "--max-steps",
                "3",
                "--eval-every",
                "1",
                "--normalise",
                "none",
                "--logdir",
                str(tmp_path / "runs"),
            ]
        )
        == 0
    )
    (event,) = (tmp_path / "runs").rglob("events.out.tfevents.*")
    acc = EventAccumulator(str(event))
    acc.Reload()
    assert set(tags.GLOSSARY) <= set(acc.Tags()["scalars"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["reward", "train", "--out", "x"], "--data is required"),
        (["reward", "train", "--data", "missing.jsonl", "--out", "x"], "missing.jsonl"),
        (
            ["reward", "train", "--data", "{bad}", "--out", "x", "--normalise", "sometimes"],
            "--normalise must be one of policy, data, none; got 'sometimes'",
        ),
        (["reward", "train", "--data", "{bad}", "--out", "x"], "bad.jsonl:1: not valid JSON"),
        (
            ["reward", "train", "--data", "{good}", "--out", "x", "--lr", "-1"],
            "lr is out of range: -1.0",
        ),
        (
            ["reward", "simulate", "--task", "poetry", "--out", "x.jsonl", "--pairs", "2"],
            "task must be one of sentiment, harmless, helpful_harmless; got 'poetry'",
        ),
        (["reward", "simulate", "--pairs", "0", "--out", "x.jsonl"], "--pairs must be a positive"),
        (["reward", "eval", "--reward-model", "no/such/dir", "--data", "{good}"], "no/such/dir"),
        (["reward", "eval", "--data", "{good}"], "--reward-model is required"),
        (
            ["reward", "eval", "--reward-model", "{dir}", "--data", "{good}"],
            "could not be loaded: the directory is not a Hugging Face model",
        ),
        (
            ["reward", "train", "--data", "{good}", "--out", "x", "--base", "{dir}"],
            "base='{dir}' could not be loaded",
        ),
        (
            ["reward", "train", "--data", "{good}", "--out", "x", "--epochs", "0"],
            "epochs is out of range: 0.0",
        ),
    ],
)
def test_reward_commands_fail_with_one_clear_message(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    write_preferences(_keyword_pairs(4), tmp_path / "good.jsonl")
    paths = {"bad": tmp_path / "bad.jsonl", "good": tmp_path / "good.jsonl", "dir": tmp_path}
    argv = [a.format(**paths) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.format(**paths) in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_simulated_labels_to_reward_model_to_ppo_beats_the_reference_on_gold(tmp_path):
    """The whole loop offline: simulated labels → reward train → rlhf-gym train with it."""
    from rlhf_gym.agents.ppo import PPOConfig
    from rlhf_gym.train import train

    prefs, rm_dir = tmp_path / "prefs.jsonl", tmp_path / "rm"
    assert main(["reward", "simulate", "--pairs", "1500", "--out", str(prefs)]) == 0
    assert (
        main(
            [
                "reward",
                "train",
                "--data",
                str(prefs),
                "--out",
                str(rm_dir),
                "--logdir",
                str(tmp_path / "runs"),
            ]
        )
        == 0
    )
    cfg = PPOConfig(total_episodes=1536, reward_model=str(rm_dir), device="cpu")
    summary = train("ppo", cfg, logdir=tmp_path / "runs", quiet=True, eval_episodes=128)
    before, after = summary["before"]["gold_score"]["mean"], summary["after"]["gold_score"]["mean"]
    assert after > before + 0.1, (before, after)
