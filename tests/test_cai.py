"""Constitutional AI: the constitution file, the prompt formats, the prompted model (base and
chat template), ``rlhf-gym cai revise`` and ``rlhf-gym cai label`` end to end on tiny models,
and the soft labels (the label follows the reply, not the letter)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rlhf_gym.cai import formats
from rlhf_gym.cai.constitution import (
    DEFAULT_CONSTITUTION,
    ConstitutionError,
    load_constitution,
)
from rlhf_gym.cai.generate import PromptedLM
from rlhf_gym.cai.label import AILabelConfig, label, soft_labels
from rlhf_gym.cai.revise import ReviseConfig, revise
from rlhf_gym.cli import main
from rlhf_gym.feedback.records import read_preferences
from rlhf_gym.feedback.trainer import bradley_terry_loss

PROMPTS = ["Q: how do i fix my bike ? A:", "Q: the movie was great ? A:"]


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import save_tiny_chat_lm

    return save_tiny_chat_lm(tmp_path_factory.mktemp("tiny-chat"))


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ the constitution
def test_the_default_constitution_loads_and_every_principle_has_every_field():
    c = load_constitution()
    assert c.path == str(DEFAULT_CONSTITUTION)
    assert len(c.principles) >= 4
    assert len({p.name for p in c.principles}) == len(c.principles)
    for p in c.principles:
        assert p.critique_request and p.revision_request and p.comparison.endswith("?")
    assert c.principle("harm").name == "harm"
    with pytest.raises(ConstitutionError, match="no principle named 'nope'"):
        c.principle("nope")


GOOD = """
name = "t"
[[principle]]
name = "kind"
critique_request = "Say what is unkind."
revision_request = "Make it kind."
comparison = "Which is kinder?"
"""


@pytest.mark.parametrize(
    "text, message",
    [
        ("name = 'x'\n", "no \\[\\[principle\\]\\] tables"),
        ("[[principle]]\nname = 'a'\n", "principle 'a': missing field 'critique_request'"),
        (
            GOOD.replace('"Make it kind."', '""'),
            "principle 'kind': field 'revision_request' must be a non-empty string",
        ),
        (
            GOOD.replace('"Which is kinder?"', "3"),
            "principle 'kind': field 'comparison' must be a non-empty string",
        ),
        (
            GOOD + GOOD.split('name = "t"')[1],
            "principle name\\(s\\) \\['kind'\\] appear more than once",
        ),
        (
            GOOD.replace("comparison =", "colour = 'red'\ncomparison ="),
            "principle 'kind': unknown field\\(s\\) \\['colour'\\]",
        ),
        (
            GOOD
            + "[[comparison_example]]\nprompt='p'\nresponse_a='a'\nresponse_b='b'\nanswer='C'\n",
            'comparison_example 1: field \'answer\' must be "A" or "B"',
        ),
        (
            GOOD
            + "[[revision_example]]\nprompt='p'\nresponse='r'\nprinciple='other'\n"
            + "critique='c'\nrevision='v'\n",
            "revision_example 1: field 'principle' names no principle",
        ),
        ("[[principle]\n", "not a TOML file"),
        ("extra = 1\n" + GOOD, "unknown top-level key"),
    ],
)
def test_a_bad_constitution_names_the_principle_and_the_field(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConstitutionError, match=message):
        load_constitution(path)


def test_a_missing_constitution_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_constitution(tmp_path / "nope.toml")


# ------------------------------------------------------------------ formats
def test_the_formats_read_as_the_docs_show():
    p = load_constitution().principle("safety")
    text = formats.revision_document(
        "Q: How? A:", " Break it.", p, "It is unlawful.", "Ask the owner."
    )
    assert text == (
        "Q: How? A: Break it.\n"
        f"Critique request: {p.critique_request}\nCritique: It is unlawful.\n"
        f"Revision request: {p.revision_request}\nRevision: Ask the owner."
    )
    cmp = formats.comparison_document("Q: How? A:", p.comparison, "Break it.", " Ask.", "B")
    assert cmp == f"Q: How?\n{p.comparison}\n(A) Break it.\n(B) Ask.\nThe answer is: (B)"
    assert formats.request_text("Q: How do I? A:") == "How do I?"
    assert formats.request_text("plain prompt") == "plain prompt"


# ------------------------------------------------------------------ the prompted model
def test_a_chat_model_is_prompted_through_its_template(chat_dir):
    lm = PromptedLM.load(str(chat_dir), device="cpu")
    assert lm.chat
    p = load_constitution().principle("harm")
    text = lm.critique_prompt("Q: fix my bike ? A:", " no .", p)
    assert text.startswith(
        "<|user|> fix my bike ?\n<|assistant|> no .\n<|user|> " + p.critique_request
    )
    assert text.endswith("<|assistant|>")
    cmp = lm.comparison_prompt("Q: fix ? A:", p.comparison, "a", "b")
    assert cmp.endswith("<|assistant|>The answer is:") and "(A) a\n(B) b" in cmp
    base = PromptedLM.load(str(chat_dir), device="cpu", chat="no")
    assert not base.chat and base.critique_prompt("Q: x A:", " y", p).endswith("Critique:")


def test_option_probabilities_are_the_models_own_renormalised(tiny_lm_dir):
    lm = PromptedLM.load(str(tiny_lm_dir), device="cpu")
    text = "Q: a ? A:\nWhich ?\n(A) x\n(B) y\nThe answer is:"
    probs = lm.option_probs([text, text + " "])
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1)
    prefix, ta, tb = lm._option_tokens(text)
    with torch.no_grad():
        logits = lm.model(torch.tensor([prefix])).logits[0, -1]
    expected = torch.softmax(logits[[ta, tb]], 0).numpy()
    assert np.allclose(probs[0], expected, atol=1e-5)


class PositionBiased(PromptedLM):
    """A feedback model that always answers (A) with probability 0.9, whatever the replies."""

    def option_probs(self, texts, batch_size=32):
        return np.tile([0.9, 0.1], (len(texts), 1))


def test_the_label_follows_the_reply_not_the_letter(tiny_lm_dir):
    base = PromptedLM.load(str(tiny_lm_dir), device="cpu")
    biased = PositionBiased(base.model, base.tokenizer, chat=False)
    pair = [("Q: x A:", " good reply", " bad reply")]
    p_ab, raw_ab = soft_labels(biased, pair, ["Which?"], [True])
    p_ba, raw_ba = soft_labels(biased, pair, ["Which?"], [False])
    assert raw_ab[0] == raw_ba[0] == pytest.approx(0.9)  # the letter (A) gets 0.9 both times
    assert p_ab[0] == pytest.approx(0.9) and p_ba[0] == pytest.approx(0.1)  # a is (A), then (B)
    # with a real model: swapping the shown order swaps which option holds response_a
    text_ab = base.comparison_prompt("Q: x A:", "Which?", " good reply", " bad reply")
    text_ba = base.comparison_prompt("Q: x A:", "Which?", " bad reply", " good reply")
    (pa_ab,), _ = soft_labels(base, pair, ["Which?"], [True])
    (pa_ba,), _ = soft_labels(base, pair, ["Which?"], [False])
    probs = base.option_probs([text_ab, text_ba])
    assert pa_ab == pytest.approx(probs[0, 0]) and pa_ba == pytest.approx(probs[1, 1])


def test_the_soft_label_loss_by_hand():
    r_a, r_b = torch.tensor([0.7, -0.2]), torch.tensor([0.1, 0.4])
    p_a = torch.tensor([0.8, 0.3])
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    by_hand = np.mean(
        [
            -(p * np.log(sig(a - b)) + (1 - p) * np.log(sig(b - a)))
            for a, b, p in zip([0.7, -0.2], [0.1, 0.4], [0.8, 0.3], strict=True)
        ]
    )
    assert bradley_terry_loss(r_a, r_b, p_a).item() == pytest.approx(by_hand, rel=1e-6)


# ------------------------------------------------------------------ the commands end to end
@pytest.mark.parametrize("which", ["base", "chat"])
def test_cai_revise_writes_every_step(tmp_path, prompts_file, tiny_lm_dir, chat_dir, which):
    model = str(tiny_lm_dir if which == "base" else chat_dir)
    out = tmp_path / "rev.jsonl"
    summary = revise(
        ReviseConfig(
            out=str(out),
            num_prompts=3,
            rounds=2,
            model=model,
            prompts=str(prompts_file),
            max_new_tokens=6,
            device="cpu",
            gold="harmless",
        ),
        log=lambda _: None,
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and rows[2]["prompt"] == PROMPTS[0]  # repeated from the start
    names = {p.name for p in load_constitution().principles}
    for row in rows:
        assert set(row) >= {
            "prompt",
            "initial",
            "rounds",
            "revision",
            "gold_initial",
            "gold_revision",
        }
        assert len(row["rounds"]) == 2
        for step in row["rounds"]:
            assert step["principle"] in names
            assert (
                step["critique_request"]
                == load_constitution().principle(step["principle"]).critique_request
            )
        nonempty = [s["revision"] for s in row["rounds"] if s["revision"].strip()]
        assert row["revision"] == (nonempty[-1] if nonempty else row["initial"])
    assert summary["chat"] == (which == "chat")
    assert summary["model_calls"]["generations"] == 3 * (1 + 2 * 2)


def test_cai_revise_is_reproducible(tmp_path, prompts_file, tiny_lm_dir):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.jsonl"
        revise(
            ReviseConfig(
                out=str(out),
                num_prompts=2,
                model=str(tiny_lm_dir),
                prompts=str(prompts_file),
                max_new_tokens=5,
                device="cpu",
                seed=3,
                gold="none",
            ),
            log=lambda _: None,
        )
        outs.append(out.read_text())
    assert outs[0] == outs[1]


def test_cai_label_writes_soft_preferences_that_reward_train_reads(
    tmp_path, prompts_file, tiny_lm_dir, chat_dir
):
    out = tmp_path / "prefs.jsonl"
    summary = label(
        AILabelConfig(
            policy=str(tiny_lm_dir),
            model=str(chat_dir),
            out=str(out),
            num_pairs=6,
            prompts=str(prompts_file),
            max_new_tokens=6,
            device="cpu",
            gold="harmless",
            seed=1,
        ),
        log=lambda _: None,
    )
    data = read_preferences(out)
    assert len(data.records) == summary["pairs"] >= 4
    shown = {r.meta["shown"] for r in data.records}
    for r in data.records:
        assert 0 < r.p_a < 1
        expected = r.meta["p_option_a"] if r.meta["shown"] == "ab" else 1 - r.meta["p_option_a"]
        assert r.p_a == pytest.approx(expected, abs=1e-5)
        assert {"principle", "gold_a", "gold_b"} <= set(r.meta)
    assert shown <= {"ab", "ba"}
    assert summary["model_calls"]["comparisons"] == len(data.records)


def test_the_shown_order_is_random_and_balanced(tmp_path, tiny_lm_dir):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(f"Q: question {i} ? A:" for i in range(40)) + "\n")
    out = tmp_path / "prefs.jsonl"
    label(
        AILabelConfig(
            policy=str(tiny_lm_dir),
            model=str(tiny_lm_dir),
            out=str(out),
            num_pairs=40,
            prompts=str(prompts),
            max_new_tokens=4,
            device="cpu",
            gold="none",
        ),
        log=lambda _: None,
    )
    shown = [r.meta["shown"] for r in read_preferences(out).records]
    assert 10 <= shown.count("ab") <= len(shown) - 10


@pytest.mark.parametrize(
    "argv, message",
    [
        (["cai", "revise"], "--out is required"),
        (
            ["cai", "revise", "--out", "x.jsonl", "--rounds", "0"],
            "--rounds must be an integer >= 1",
        ),
        (
            ["cai", "revise", "--out", "x.jsonl", "--temperature", "-1"],
            "--temperature must be a number >= 0",
        ),
        (
            ["cai", "revise", "--out", "x.jsonl", "--constitution", "nope.toml"],
            "nope.toml: no such file",
        ),
        (["cai", "revise", "--out", "x.jsonl", "--model", "./no/such/dir"], "no such directory"),
        (["cai", "revise", "--out", "x.jsonl", "--chat", "maybe"], "--chat must be one of"),
        (["cai", "revise", "--out", "no/such/dir/x.jsonl"], "does not exist"),
        (["cai", "label", "--out", "x.jsonl"], "--policy is required"),
        (
            ["cai", "label", "--policy", "default", "--out", "x.jsonl", "--num-pairs", "0"],
            "--num-pairs must be",
        ),
        (
            ["cai", "label", "--policy", "default", "--out", "x.jsonl", "--gold", "nobody"],
            "--gold must be none or one of",
        ),
    ],
)
def test_cai_commands_fail_with_one_clear_message(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_bad_constitution_through_the_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text("[[principle]]\nname = 'a'\n")
    assert (
        main(["cai", "revise", "--out", "x.jsonl", "--constitution", "c.toml", "--device", "cpu"])
        == 2
    )
    err = capsys.readouterr().err
    assert "principle 'a': missing field 'critique_request'" in err and "Traceback" not in err


def test_the_whole_chain_on_tiny_models(tmp_path, prompts_file, tiny_lm_dir, chat_dir, capsys):
    """revise → sft → label → reward train (soft labels) → PPO from the SFT model, all through
    the commands, on locally saved tiny models (a base policy, a chat feedback model)."""
    rev, sft_dir, prefs, rm = (
        tmp_path / "rev.jsonl",
        tmp_path / "sft",
        tmp_path / "p.jsonl",
        tmp_path / "rm",
    )
    common = ["--device", "cpu", "--max-new-tokens", "6", "--prompts", str(prompts_file)]
    assert (
        main(
            [
                "cai",
                "revise",
                "--out",
                str(rev),
                "--num-prompts",
                "8",
                "--model",
                str(tiny_lm_dir),
                "--gold",
                "none",
                *common,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "sft",
                "--data",
                str(rev),
                "--out",
                str(sft_dir),
                "--model",
                str(tiny_lm_dir),
                "--device",
                "cpu",
                "--heldout",
                "0.5",
            ]
        )
        == 0
    )
    assert (sft_dir / "sft.json").is_file()
    assert (
        main(
            [
                "cai",
                "label",
                "--policy",
                str(sft_dir),
                "--model",
                str(chat_dir),
                "--out",
                str(prefs),
                "--num-pairs",
                "12",
                "--gold",
                "harmless",
                *common,
            ]
        )
        == 0
    )
    soft = [r.p_a for r in read_preferences(prefs).records]
    assert soft and all(0 < p < 1 for p in soft)
    assert (
        main(
            [
                "reward",
                "train",
                "--data",
                str(prefs),
                "--out",
                str(rm),
                "--base",
                str(tiny_lm_dir),
                "--max-steps",
                "3",
                "--batch-size",
                "4",
                "--normalise",
                "data",
                "--logdir",
                str(tmp_path / "runs"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "--model",
                str(sft_dir),
                "--reward-model",
                str(rm),
                "--total-episodes",
                "16",
                "--num-envs",
                "8",
                "--max-new-tokens",
                "4",
                "--device",
                "cpu",
                "--eval-episodes",
                "8",
                "--logdir",
                str(tmp_path / "runs"),
            ]
        )
        == 0
    )
    assert "checkpoint" in capsys.readouterr().out


FEW_SHOT = (
    GOOD
    + """
[[comparison_example]]
prompt = "Q: fix my bike ? A:"
response_a = " no ."
response_b = " check the chain first ."
answer = "B"

[[revision_example]]
prompt = "Q: fix my bike ? A:"
response = " no ."
principle = "kind"
critique = "It does not help."
revision = " check the chain first ."
"""
)


def test_few_shot_examples_go_in_front_of_every_prompt(tmp_path, tiny_lm_dir):
    path = tmp_path / "c.toml"
    path.write_text(FEW_SHOT, encoding="utf-8")
    c = load_constitution(path)
    by_name = {p.name: p for p in c.principles}
    block = formats.few_shot_comparisons(c.comparison_examples, by_name, "Which is kinder?")
    assert block == (
        "Q: fix my bike ?\nWhich is kinder?\n(A) no .\n(B) check the chain first .\n"
        "The answer is: (B)\n\n"
    )
    lm = PromptedLM.load(str(tiny_lm_dir), device="cpu")
    text = lm.comparison_prompt("Q: x ? A:", "Which is kinder?", "a", "b", block)
    assert text.startswith(block) and text.endswith("The answer is:")
    rev = formats.few_shot_revisions(c.revision_examples, by_name)
    assert rev.startswith("Q: fix my bike ? A: no .\nCritique request: Say what is unkind.")
    assert lm.critique_prompt("Q: x ? A:", " y", by_name["kind"], rev).startswith(rev)
    out = tmp_path / "rev.jsonl"
    revise(
        ReviseConfig(out=str(out), num_prompts=2, model=str(tiny_lm_dir), constitution=str(path),
                     prompts="harmless", max_new_tokens=4, device="cpu", gold="none"),
        log=lambda _: None,
    )  # fmt: skip
    assert all(json.loads(line)["rounds"][0]["principle"] == "kind" for line in out.open())
