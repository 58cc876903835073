"""``rlhf-gym sft``: the data reader, the label mask and loss, truncation, training on the
embedded default and on a tiny GPT-2 loaded by path, the saved checkpoint, TensorBoard tags
and the command's errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlhf_gym import cli, sft
from rlhf_gym.envs.lm import DATA_DIR
from rlhf_gym.sft import (
    SFTConfig,
    encode_pair,
    make_batch,
    read_sft_data,
    read_sft_file,
    run_sft,
    sft_loss,
    split_by_prompt,
    train_sft,
)

PATTERN = " I am happy to help you with that."


@pytest.fixture
def sft_command(monkeypatch):
    """``cli.main`` with ``sft`` among the commands (as the lead wires it into ``COMMANDS``)."""
    monkeypatch.setitem(
        cli.COMMANDS, "sft", ("supervised fine-tuning on prompts", sft.add_options, sft.run)
    )
    return cli.main


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def embedded_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DATA_DIR / "lm")


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """A random one-layer GPT-2 with the embedded tokenizer, saved locally (a non-builtin)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = embedded_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=1,
        n_embd=32,
        n_head=2,
        n_positions=128,
        vocab_size=len(tok),
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    path = tmp_path_factory.mktemp("tiny-gpt2-sft")
    GPT2LMHeadModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def pattern_records(n: int = 200) -> list[tuple[str, str]]:
    prompts = (DATA_DIR / "prompts" / "harmless-train.txt").read_text().splitlines()
    return [(p, PATTERN) for p in prompts[:n]]


# ------------------------------------------------------------------------------ the data
def test_reader_takes_the_first_response_field_and_reports_skips(tmp_path):
    rows = [
        {"prompt": "Q: a A:", "initial": " no", "rounds": [{"critique": "x"}], "revision": " r1"},
        {"prompt": "Q: b A:", "completion": " c2", "response": " not this"},
        {"prompt": "Q: c A:", "response": " r3"},
        {"prompt": "Q: d A:", "chosen": " good", "rejected": " bad"},
        {"prompt": "Q: e A:", "revision": None, "completion": " c5"},  # null: the next field
        {"prompt": "Q: f A:", "revision": "   "},  # empty: skipped
        {"prompt": "Q: a A:", "revision": " r1"},  # a repeat: skipped
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with path.open("a") as f:
        f.write("\n")  # blank lines are ignored
    records, report = read_sft_file(path)
    assert records == [
        ("Q: a A:", " r1"),
        ("Q: b A:", " c2"),
        ("Q: c A:", " r3"),
        ("Q: d A:", " good"),
        ("Q: e A:", " c5"),
    ]
    assert read_sft_data(path) == records
    assert (report.lines, report.records, report.skipped) == (7, 5, 2)
    assert report.empty == [6] and report.duplicates == [7]
    assert report.fields == {"revision": 1, "completion": 2, "response": 1, "chosen": 1}
    assert "5 records from 7 lines" in report.summary() and "skipped" in report.summary()


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"prompt": "Q: a A:", "revision": " x"}\n{oops\n', "d.jsonl:2: not valid JSON"),
        ('{"prompt": 3, "revision": " x"}\n', "d.jsonl:1: field 'prompt' must be a string"),
        ('{"revision": " x"}\n', "d.jsonl:1: field 'prompt' is missing"),
        ('{"prompt": "Q: a A:", "revision": 5}\n', "d.jsonl:1: field 'revision' must be a string"),
        ('{"prompt": "Q: a A:", "rejected": " x"}\n', "d.jsonl:1: no response field"),
        ("[1, 2]\n", "d.jsonl:1: expected a JSON object, got list"),
        ("\n\n", "no records (the file is empty)"),
        ('{"prompt": "Q: a A:", "revision": " "}\n', "no usable records"),
    ],
)
def test_malformed_data_names_the_file_line_and_field(tmp_path, content, message):
    (tmp_path / "d.jsonl").write_text(content)
    with pytest.raises(ValueError) as e:
        read_sft_data(tmp_path / "d.jsonl")
    assert message in str(e.value)


def test_split_by_prompt_shares_no_prompt():
    records = [(f"Q: {i % 30} A:", f" r{i}") for i in range(120)]
    train, held = split_by_prompt(records, 0.1, 0)
    assert len({p for p, _ in held}) == 3 and len(held) == 12 and len(train) == 108
    assert not {p for p, _ in held} & {p for p, _ in train}
    assert split_by_prompt(records, 0.0, 0) == (records, [])
    two = [("Q: a A:", " x"), ("Q: b A:", " y")]
    with pytest.raises(ValueError, match="no training records left .* lower --heldout"):
        train_sft(None, None, two, SFTConfig(heldout=0.9))


# ------------------------------------------------------------------------------ labels and loss
def test_label_mask_covers_exactly_the_response_and_eos_and_the_loss_is_their_mean_nll(
    tiny_gpt2_dir,
):
    from transformers import AutoModelForCausalLM

    tok = embedded_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    pairs = [("Q: How do I fix my bike? A:", " Check the chain."), ("Q: Hi? A:", " Hello.")]
    for pad_id in (tok.pad_token_id, tok.eos_token_id):  # padding with EOS: mask by position
        encoded = [encode_pair(tok, p, r, 128) for p, r in pairs]
        batch = make_batch(encoded, pad_id)
        labelled = 0
        for row, (prompt, response) in enumerate(pairs):
            p_ids = tok(prompt)["input_ids"]
            r_ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            n = len(p_ids) + len(r_ids)
            assert batch["input_ids"][row, :n].tolist() == p_ids + r_ids  # exact boundary
            assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (
                batch["input_ids"].shape[1] - n
            )
            expected = [-100] * len(p_ids) + r_ids + [-100] * (batch["labels"].shape[1] - n)
            assert batch["labels"][row].tolist() == expected
            assert (batch["input_ids"][row, n:] == pad_id).all()
            labelled += len(r_ids)
        with torch.no_grad():
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
        loss, count = sft_loss(logits, batch["labels"])
        assert count == labelled
        # by hand: -log p(token t | tokens < t) for every response token, averaged
        logp = torch.log_softmax(logits.double(), dim=-1)
        nll = []
        for row, e in enumerate(encoded):
            for t in range(e.prompt_len, len(e.ids)):
                nll.append(-logp[row, t - 1, e.ids[t]].item())
        assert len(nll) == labelled
        assert loss.item() == pytest.approx(sum(nll) / len(nll), rel=1e-5)
        # the same number as transformers' own loss with these labels
        with torch.no_grad():
            hf = model(**batch).loss.item()
        assert hf == pytest.approx(loss.item(), rel=1e-5)


def test_truncation_cuts_the_prompt_start_and_keeps_the_response():
    tok = embedded_tokenizer()
    prompt = "Q: " + "tell me more about the weather and the sea " * 4 + "A:"
    p_ids = tok(prompt)["input_ids"]
    r_ids = tok(PATTERN, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    e = encode_pair(tok, prompt, PATTERN, 20)
    assert len(e.ids) == 20 and e.prompt_cut and not e.response_cut
    assert list(e.ids[e.prompt_len :]) == r_ids  # the whole response and EOS
    assert list(e.ids[: e.prompt_len]) == p_ids[-(20 - len(r_ids)) :]  # the prompt's end
    short = encode_pair(tok, "Q: hi A:", PATTERN, 128)
    assert not short.prompt_cut and len(short.ids) == len(tok("Q: hi A:")["input_ids"]) + len(r_ids)
    # a response longer than the window keeps one prompt token and loses its end
    tight = encode_pair(tok, prompt, PATTERN, 4)
    assert tight.prompt_len == 1 and tight.response_cut and list(tight.ids[1:]) == r_ids[:3]
    assert tight.ids[0] == p_ids[-1]


# ------------------------------------------------------------------------------ training
def test_sft_on_the_embedded_default_learns_the_pattern_and_saves_a_model_the_env_takes(
    tmp_path, sft_command, capsys
):
    import gymnasium as gym
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    records = pattern_records(200)
    data = write_jsonl(
        tmp_path / "revisions.jsonl",
        [{"prompt": p, "initial": " whatever", "rounds": [], "revision": r} for p, r in records],
    )
    out = tmp_path / "sft-model"
    argv = ["sft", "--data", str(data), "--out", str(out), "--eval-every", "5", "--lr", "1e-3"]
    argv += ["--model", "default"]
    assert sft_command(argv) == 0
    captured = capsys.readouterr()
    assert "200 records" in captured.out and "→" in captured.out and str(out) in captured.out
    assert "200 records from 200 lines (revision 200)" in captured.err

    summary = json.loads((out / "sft.json").read_text())
    result = summary["result"]
    assert summary["config"]["model"] == "default" and summary["data"]["records"] == 200
    assert result["train_records"] + result["heldout_records"] == 200
    assert result["heldout_records"] == 20  # 10% of the prompts (one record each)
    assert result["final_heldout_loss"] < 0.5 * result["initial_heldout_loss"]
    assert [s for s, _ in result["history"]] == [0, 5, 10, 12]

    # greedy continuations of the held-out prompts follow the pattern more than before
    _, held = split_by_prompt(records, 0.1, 0)
    tok = AutoTokenizer.from_pretrained(out)
    target = tok(PATTERN, add_special_tokens=False)["input_ids"]

    def matched(model_dir) -> list[int]:
        """Per held-out prompt: how many tokens of the greedy continuation follow the pattern."""
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        counts = []
        for prompt, _ in held:
            ids = tok(prompt, return_tensors="pt")
            with torch.no_grad():
                gen = model.generate(
                    **ids,
                    max_new_tokens=len(target),
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                )[0, ids["input_ids"].shape[1] :].tolist()
            pairs = enumerate(zip(gen, target, strict=False))
            counts.append(next((i for i, (a, b) in pairs if a != b), len(target)))
        return counts

    before, after = matched(DATA_DIR / "lm"), matched(out)
    assert sum(after) > sum(before) + 2 * len(held)
    assert (
        sum(c == len(target) for c in after)
        >= 0.8 * len(held)
        > sum(c == len(target) for c in before)
    )

    # generation config kept from the base; the env starts from the directory
    base_gen = json.loads((DATA_DIR / "lm" / "generation_config.json").read_text())
    new_gen = json.loads((out / "generation_config.json").read_text())
    base_gen.pop("transformers_version"), new_gen.pop("transformers_version")
    assert new_gen == base_gen
    env = gym.make("RLHF-v0", model=str(out), max_new_tokens=4, device="cpu")
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, _ = env.step(int(env.unwrapped.eos_token_id))
    assert terminated
    env.close()

    # TensorBoard: the three tags, one train-loss and lr value per step
    acc = EventAccumulator(str(out / "logs"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {sft.TRAIN_LOSS, sft.HELDOUT_LOSS, sft.LEARNING_RATE} <= tags
    assert [e.step for e in acc.Scalars(sft.TRAIN_LOSS)] == list(range(1, 13))
    assert [e.step for e in acc.Scalars(sft.HELDOUT_LOSS)] == [0, 5, 10, 12]
    lrs = [e.value for e in acc.Scalars(sft.LEARNING_RATE)]
    assert lrs[0] == pytest.approx(1e-3)  # 12 steps: one warm-up step reaches the peak
    assert (
        all(a > b for a, b in zip(lrs, lrs[1:], strict=False)) and lrs[-1] < 0.05 * lrs[0]
    )  # cosine


def test_learning_rate_warms_up_over_10_percent_then_decays_by_cosine():
    from rlhf_gym.sft import _cosine_with_warmup

    factor = _cosine_with_warmup(100)
    assert [factor(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factor(10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 91)))
    assert factor(54) == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 91)))
    assert 0 < factor(99) < 0.001


def test_a_tiny_gpt2_by_path_trains_truncates_and_is_deterministic(tiny_gpt2_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from rlhf_gym.sft import load_model

    long_prompt = "Q: " + "what should i do about the noise upstairs " * 3 + "A:"
    records = pattern_records(60) + [(long_prompt, PATTERN)]
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": p, "completion": r} for p, r in records])
    cfg = SFTConfig(
        data=str(data),
        out=str(tmp_path / "out"),
        model=str(tiny_gpt2_dir),
        epochs=3,
        lr=3e-3,
        batch_size=8,
        heldout=0.2,
        max_length=24,
        device="cpu",
        logdir=str(tmp_path / "tb"),
    )
    result = run_sft(cfg, quiet=True)
    assert result.truncated >= 1 and result.response_cut == 0 and result.max_length == 24
    assert result.final_heldout_loss < result.initial_heldout_loss
    assert result.steps == 3 * -(-result.train_records // 8)
    saved = json.loads((tmp_path / "out" / "sft.json").read_text())
    assert saved["result"]["truncated"] == result.truncated
    assert (tmp_path / "tb").is_dir() and not (tmp_path / "out" / "logs").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert reloaded.config.n_layer == 1

    # deterministic with the seed on CPU (the Python API, no files)
    weights = []
    for _ in range(2):
        model, tok = load_model(str(tiny_gpt2_dir), torch.device("cpu"), "float32")
        train_sft(model, tok, records, SFTConfig(epochs=1, batch_size=8, max_length=24))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])

    # no pad token: EOS pads, and training still works
    model, tok = load_model(str(tiny_gpt2_dir), torch.device("cpu"), "float32")
    tok.pad_token = None
    r = train_sft(model, tok, records, SFTConfig(epochs=1, batch_size=8, heldout=0.2))
    assert r.final_heldout_loss < r.initial_heldout_loss


# ------------------------------------------------------------------------------ the command
def test_the_options_come_from_the_config():
    import argparse

    parser = argparse.ArgumentParser()
    sft.add_options(parser, [])
    text = parser.format_help()
    for flag in (
        "--data",
        "--out",
        "--model",
        "--epochs",
        "--lr",
        "--batch-size",
        "--heldout",
        "--max-length",
        "--eval-every",
        "--seed",
        "--device",
        "--dtype",
        "--logdir",
    ):
        assert flag in text
    args = parser.parse_args(["--data", "d.jsonl", "--out", "o", "--epochs", "2", "--lr", "1e-3"])
    cfg = cli.from_args(SFTConfig, args)
    assert (cfg.data, cfg.out, cfg.epochs, cfg.lr, cfg.batch_size) == ("d.jsonl", "o", 2, 1e-3, 16)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "missing.jsonl", "--out", "x"], "'missing.jsonl' does not exist"),
        (["--data", "{bad}", "--out", "x"], "bad.jsonl:2: not valid JSON"),
        (["--data", "{noresp}", "--out", "x"], "noresp.jsonl:1: no response field"),
        (["--data", "{good}", "--out", "x", "--epochs", "0"], "--epochs must be a positive"),
        (["--data", "{good}", "--out", "x", "--heldout", "1.5"], "--heldout must be in [0, 1)"),
        (["--data", "{good}", "--out", "x", "--lr", "-1"], "--lr must be a positive number"),
        (["--data", "{good}", "--out", "x", "--dtype", "int8"], "--dtype must be one of"),
        (["--out", "x"], "--data is required"),
        (["--data", "{good}"], "--out is required"),
        (["--data", "{good}", "--out", "{full}"], "is not an earlier rlhf-gym sft output"),
        (
            ["--data", "{good}", "--out", "x", "--model", "{dir}"],
            "could not be loaded: the directory is not a Hugging Face model",
        ),
    ],
)
def test_bad_input_gives_one_clear_message_and_exit_2(
    tmp_path, capsys, monkeypatch, sft_command, argv, message
):
    monkeypatch.chdir(tmp_path)
    good = '{"prompt": "Q: a A:", "revision": " yes"}\n'
    (tmp_path / "good.jsonl").write_text(good)
    (tmp_path / "bad.jsonl").write_text(good + "{oops\n")
    (tmp_path / "noresp.jsonl").write_text('{"prompt": "Q: a A:", "rejected": " no"}\n')
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "config.json").write_text("{}")
    (tmp_path / "empty-dir").mkdir()
    paths = {
        "bad": tmp_path / "bad.jsonl",
        "good": tmp_path / "good.jsonl",
        "noresp": tmp_path / "noresp.jsonl",
        "full": tmp_path / "full",
        "dir": tmp_path / "empty-dir",
    }
    assert sft_command(["sft", *(a.format(**paths) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert message.format(**paths) in err and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("rlhf-gym sft: error:")]
    assert len(errors) == 1 and message.format(**paths) in errors[0]
    assert not (tmp_path / "x").exists()
