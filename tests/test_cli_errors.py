"""Every ``rlhf-gym`` command turns bad input into one clear line on stderr and exit status 2.

Each case runs ``rlhf_gym.cli.main(argv)`` in-process and checks: a non-zero exit status, no
``Traceback`` on stderr, the last line of stderr is ``rlhf-gym COMMAND: error: …`` and names the
bad value (the path, the number, the id). ``--debug`` / ``RLHF_GYM_DEBUG=1`` show the traceback
of a user error; a genuine bug keeps its traceback without them. The tiny test models stand in
for real ones; no case trains for more than a fraction of a second.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from rlhf_gym.cli import main

TINY_TRAIN = [
    "--device",
    "cpu",
    "--total-episodes",
    "8",
    "--num-envs",
    "8",
    "--max-new-tokens",
    "4",
]


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tiny_lm_dir, tiny_rm_dir) -> dict[str, str]:
    """Bad (and a few good) inputs, made once: ``{name: path}`` for ``str.format``."""
    root = tmp_path_factory.mktemp("bad-input")
    (root / "empty").mkdir()
    (root / "nonempty").mkdir()
    (root / "nonempty" / "x").write_text("x")
    (root / "afile").write_text("not a directory")
    (root / "bad.jsonl").write_text("{oops\n")
    pairs = [("the movie was", " great fun", " dull"), ("a wonderful film", " loved it", " bad")]
    (root / "good.jsonl").write_text(
        "".join(
            json.dumps({"prompt": p, "response_a": a, "response_b": b, "p_a": 1.0}) + "\n"
            for p, a, b in pairs
        )
    )
    (root / "sft.jsonl").write_text(
        "".join(json.dumps({"prompt": p, "revision": a}) + "\n" for p, a, _ in pairs)
    )
    (root / "prompts.txt").write_text("the movie was\na wonderful film\n")
    badcfg = shutil.copytree(tiny_lm_dir, root / "badcfg")  # config.json is not JSON
    (badcfg / "config.json").write_text("{not json")
    trunc = shutil.copytree(tiny_lm_dir, root / "trunc")  # model.safetensors cut in half
    data = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    rmtrunc = shutil.copytree(tiny_rm_dir, root / "rmtrunc")
    (rmtrunc / "model.safetensors").write_bytes(b"\x00" * 100)
    badad = root / "badad"  # an adapter whose config is not JSON
    badad.mkdir()
    (badad / "adapter_config.json").write_text("{not json")
    adtrunc = _tiny_adapter(tiny_lm_dir, root / "adtrunc")  # adapter weights cut in half
    data = (adtrunc / "adapter_model.safetensors").read_bytes()
    (adtrunc / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    return {
        "T": str(root),
        "lm": str(tiny_lm_dir),
        "rm": str(tiny_rm_dir),
        "badcfg": str(badcfg),
        "trunc": str(trunc),
        "rmtrunc": str(rmtrunc),
        "badad": str(badad),
        "adtrunc": str(adtrunc),
        "P": str(root / "prompts.txt"),
    }


def _tiny_adapter(lm_dir: Path, out: Path) -> Path:
    """A LoRA adapter of the tiny LM, saved as a LoRA checkpoint's policy/ is."""
    from transformers import AutoModelForCausalLM

    from rlhf_gym.agents import lora

    lora.wrap(AutoModelForCausalLM.from_pretrained(lm_dir), 2, 4.0, "all-linear").save_pretrained(
        out
    )
    return out


OFFLINE = "must be downloaded first or given as a local path"
NOT_DIR = "'{T}/afile' is a file, not a directory"
CORRUPT = "could not be loaded: the directory is not a Hugging Face model"

# (argv, a piece of the message); {name} are the paths above
CASES = [
    # train
    ("train --model /nonexistent/m --device cpu", "model='/nonexistent/m': no such directory"),
    ("train --model {T}/empty --device cpu", f"model='{{T}}/empty' {CORRUPT}"),
    ("train --model {badcfg} --device cpu", "badcfg/config.json' is not a valid JSON file"),
    ("train --model {trunc} --reward-model {rm} --device cpu", "model='{trunc}' " + CORRUPT),
    ("train --model no-such-org/no-such-model --device cpu", OFFLINE),
    ("train --model {lm} --reward-model {rmtrunc} --device cpu", "reward_model='{rmtrunc}'"),
    ("train --env Nope-v0", "env_id 'Nope-v0' is not registered"),
    ("train --agent bogus", "--agent 'bogus' is not one of"),
    ("train --total-episodes -5", "total_episodes must be a positive integer, got -5"),
    ("train --seed -1", "seed must be an integer >= 0, got -1"),
    ("train --device tpu --model {lm}", "device='tpu'"),
    ("train --resume /nonexistent/run", "--resume /nonexistent/run: no such directory"),
    ("train --resume {T}/empty", "--resume {T}/empty: {T}/empty is not a complete checkpoint"),
    (
        "train --model {lm} --reward-model {rm} --logdir {T}/afile/sub " + " ".join(TINY_TRAIN),
        "--logdir '{T}/afile/sub': " + NOT_DIR,
    ),
    ("train --lora-r -1", "lora_r must be an integer >= 0 (0: no LoRA), got -1"),
    ("train --env RLHFToy-v0 --lora-r 4", "reference is a table, not a network"),
    (
        "train --model {lm} --reward-model {rm} --lora-r 2 --lora-target-modules q_proj "
        + " ".join(TINY_TRAIN),
        "lora_target_modules='q_proj' does not fit this gpt2 model",
    ),
    ("train --mixed-precision fp8", "mixed_precision='fp8' is not one of"),
    ("train --env RLHFToy-v0 --mixed-precision fp16 --device cpu", "needs a CUDA device"),
    ("train --reference-pass later", "reference_pass='later' is not one of"),
    ("train --baseline mean", "baseline='mean' is not one of"),
    ("train --baseline leave_one_out", "samples_per_prompt must be >= 2"),
    ("train --samples-per-prompt 3", "divisible by samples_per_prompt=3"),
    # merge
    ("merge /nonexistent/a {T}/m1", "/nonexistent/a: no such directory"),
    ("merge {lm} {T}/m1", "no adapter_config.json; not a LoRA adapter directory"),
    ("merge {badad} {T}/m1", "badad/adapter_config.json: not a valid adapter config"),
    ("merge {adtrunc} {T}/m1", "{adtrunc}: the adapter or its base model could not be loaded"),
    ("merge {lm} {T}/afile/m", "out '{T}/afile/m': " + NOT_DIR),
    # eval
    ("eval --policy /nonexistent/p --device cpu --best-of 1", "policy='/nonexistent/p'"),
    ("eval --policy {trunc} --device cpu --episodes 4 --best-of 1", "policy='{trunc}' " + CORRUPT),
    ("eval --policy no-org/no-policy --device cpu --best-of 1", OFFLINE),
    ("eval --env Nope-v0", "--env 'Nope-v0' is not a registered environment"),
    ("eval --env RLHFToy-v0 --episodes 0", "--episodes must be a positive integer, got 0"),
    ("eval --env RLHFToy-v0 --seed -1", "--seed must be an integer >= 0, got -1"),
    ("eval --prompts {T}/missing.txt --device cpu", "prompts='{T}/missing.txt' is neither"),
    # compare
    ("compare --agents ppo,bogus", "unknown agent 'bogus'"),
    ("compare --total-episodes 10 --num-envs 3", "total_episodes=10 must be a multiple of"),
    ("compare --env RLHFToy-v0 --out {T}/afile", "--out '{T}/afile' is a file; expected a dir"),
    # reward simulate / train / eval
    ("reward simulate --pairs 0 --out {T}/x.jsonl", "--pairs must be a positive integer, got 0"),
    ("reward simulate --task bogus --out {T}/x.jsonl", "got 'bogus'"),
    (
        "reward simulate --pairs 2 --out /dev/full --device cpu --task sentiment",
        "No space left on device: '/dev/full'",
    ),
    ("reward simulate --pairs 2 --out {T}/afile/x.jsonl", "--out '{T}/afile/x.jsonl': " + NOT_DIR),
    ("reward train --data {T}/missing.jsonl --out {T}/rm1", "'{T}/missing.jsonl' does not exist"),
    ("reward train --data {T}/bad.jsonl --out {T}/rm1", "{T}/bad.jsonl:1: not valid JSON"),
    ("reward train --data {T}/good.jsonl --out {T}/nonempty", "--out '{T}/nonempty' exists"),
    (
        "reward train --data {T}/good.jsonl --out {T}/rm1 --base {trunc} --device cpu",
        "base='{trunc}' " + CORRUPT,
    ),
    ("reward train --data {T}/good.jsonl --out {T}/rm1 --logdir {T}/afile/x", NOT_DIR),
    ("reward eval --reward-model {rmtrunc} --data {T}/good.jsonl --device cpu", "'{rmtrunc}'"),
    ("reward eval --reward-model no-org/no-rm --data {T}/good.jsonl --device cpu", OFFLINE),
    (
        "reward eval --reward-model {rm} --data {T}/good.jsonl --gold-samples -3",
        "--gold-samples must be 0 (no gold correlation) or at least 2, got -3",
    ),
    # label
    ("label --db {T}/missing.db --export {T}/o.jsonl", "--db '{T}/missing.db' does not exist"),
    ("label --port 70000", "--port must be in 0..65535; got 70000"),
    ("label --data {T}/good.jsonl --db {T}/afile/l.db", "--db '{T}/afile/l.db': " + NOT_DIR),
    ("label --policy {trunc} --db {T}/l.db --pairs 2 --device cpu", "policy='{trunc}'"),
    # cai revise / label
    ("cai revise --out {T}/r.jsonl --model {trunc} --prompts {P} --device cpu", "'{trunc}'"),
    ("cai revise --out {T}/r.jsonl --num-prompts 0", "--num-prompts must be an integer >= 1"),
    ("cai revise --out {T}/r.jsonl --constitution {T}/no.toml", "{T}/no.toml: no such file"),
    (
        "cai revise --out /dev/full --model {lm} --prompts {P} --num-prompts 2 --max-new-tokens 2 "
        "--device cpu --gold none",
        "No space left on device: '/dev/full'",
    ),
    ("cai label --policy {lm} --out {T}/p.jsonl --num-pairs 0", "--num-pairs must be an integer"),
    (
        "cai label --policy /nonexistent/p --out {T}/p.jsonl --prompts {P} --device cpu",
        "'/nonexistent/p'",
    ),
    (
        "cai label --policy {lm} --out /dev/full --prompts {P} --num-pairs 2 --max-new-tokens 2 "
        "--device cpu --gold none",
        "No space left on device: '/dev/full'",
    ),
    # sft
    ("sft --data {T}/missing.jsonl --out {T}/s1", "'{T}/missing.jsonl' does not exist"),
    ("sft --data {T}/sft.jsonl --out {T}/s1 --model {badcfg} --device cpu", "'{badcfg}'"),
    ("sft --data {T}/sft.jsonl --out {T}/s1 --model no-org/no-model --device cpu", OFFLINE),
    ("sft --data {T}/sft.jsonl --out {T}/s1 --heldout 1.5", "--heldout must be in [0, 1), got 1.5"),
    ("sft --data {T}/sft.jsonl --out {T}/afile/s", "--out '{T}/afile/s': " + NOT_DIR),
    # build-default (errors raised by the build, after its own argument checks)
    ("build-default --out {T}/bd --reward-only", "need a finished build in {T}/bd"),
]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def _check(code: int, err: str, command: str, message: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"rlhf-gym {command}: error: "), err
    assert message in last, err


@pytest.mark.parametrize(("line", "message"), CASES, ids=[c[0][:60] for c in CASES])
def test_bad_input_gives_one_clear_line(line, message, paths, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [a.format(**paths) for a in line.split()]
    if argv[0] == "train" and "--logdir" not in argv:
        argv += ["--logdir", str(tmp_path / "runs")]
    code, err = _run(argv, capsys)
    _check(code, err, argv[0], message.format(**paths))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("build-default --threads 0 --out {T}/bd2", "--threads: must be at least 1, got 0"),
        ("build-default --seed -1 --out {T}/bd2", "--seed: must be an integer >= 0, got -1"),
        ("build-default --out {T}/afile", "--out: '{T}/afile' is a file"),
        ("build-default --bogus --out {T}/bd2", "unrecognized arguments: --bogus"),
    ],
)
def test_build_default_checks_its_arguments_before_touching_out(line, message, paths, capsys):
    """build-default hands its arguments to the build's own parser (a usage error, exit 2)."""
    with pytest.raises(SystemExit) as e:
        main([a.format(**paths) for a in line.split()])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert message.format(**paths) in err
    assert not (Path(paths["T"]) / "bd2").exists()  # nothing built, nothing cleared


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_lm_dir, tiny_rm_dir) -> Path:
    """The run directory of one tiny PPO run (one update)."""
    from rlhf_gym.agents.ppo import PPOConfig
    from rlhf_gym.train import train

    cfg = PPOConfig(
        model=str(tiny_lm_dir),
        reward_model=str(tiny_rm_dir),
        device="cpu",
        total_episodes=8,
        num_envs=8,
        max_new_tokens=4,
    )
    summary = train("ppo", cfg, logdir=tmp_path_factory.mktemp("runs"), quiet=True, eval_episodes=4)
    return Path(summary["run_dir"])


def test_resume_from_another_agent_model_or_a_damaged_checkpoint(
    checkpoint, tiny_lm_dir, tiny_llama_dir, tiny_rm_dir, tmp_path, capsys
):
    common = ["--reward-model", str(tiny_rm_dir), *TINY_TRAIN, "--logdir", str(tmp_path)]
    run = str(checkpoint)
    argv = ["train", "--agent", "qlearning", "--model", str(tiny_lm_dir), "--resume", run]
    _check(*_run(argv + common, capsys), "train", "the checkpoint is from agent 'ppo'")
    argv = ["train", "--model", str(tiny_llama_dir), "--resume", run]
    _check(*_run(argv + common, capsys), "train", "the checkpoint is from another model")
    damaged = tmp_path / "damaged"
    shutil.copytree(checkpoint, damaged)
    latest = damaged / "checkpoints" / (damaged / "checkpoints" / "latest").read_text().strip()
    state = latest / "trainer_state.safetensors"
    state.write_bytes(state.read_bytes()[:-10])
    argv = ["train", "--model", str(tiny_lm_dir), "--resume", str(damaged)]
    _check(*_run(argv + common, capsys), "train", "trainer_state.safetensors: truncated")


def test_permission_denied_names_the_path(paths, tmp_path, monkeypatch, capsys):
    """An unwritable log directory is refused before any model loads (root ignores file modes,
    so ``os.access`` stands in for them), and a ``PermissionError`` raised while writing is a
    user error that names the file."""
    import os

    real_access = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    argv = ["train", "--model", paths["lm"], "--device", "cpu", "--logdir", str(locked / "runs")]
    _check(*_run(argv, capsys), "train", f"--logdir '{locked / 'runs'}': permission denied")
    monkeypatch.undo()

    from rlhf_gym.feedback import simulate

    def denied(records, path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(simulate, "write_preferences", denied)
    out = tmp_path / "prefs.jsonl"
    argv = ["reward", "simulate", "--pairs", "2", "--device", "cpu", "--out", str(out)]
    _check(*_run(argv, capsys), "reward", f"Permission denied: '{out}'")


def test_debug_shows_the_traceback_of_a_user_error(monkeypatch, capsys):
    code, err = _run(["--debug", "eval", "--env", "Nope-v0"], capsys)
    assert code == 2 and "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("rlhf-gym eval: error: --env 'Nope-v0'")
    monkeypatch.setenv("RLHF_GYM_DEBUG", "1")
    code, err = _run(["eval", "--env", "Nope-v0"], capsys)
    assert code == 2 and "Traceback" in err and "--env 'Nope-v0'" in err
    monkeypatch.setenv("RLHF_GYM_DEBUG", "0")
    code, err = _run(["eval", "--env", "Nope-v0"], capsys)
    assert code == 2 and "Traceback" not in err


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    """Anything but a user error propagates (Python prints its traceback), without --debug."""
    import rlhf_gym.evaluate

    def broken(cfg):
        return 1 / 0

    monkeypatch.setattr(rlhf_gym.evaluate, "run", broken)
    with pytest.raises(ZeroDivisionError):
        main(["eval", "--env", "RLHFToy-v0"])
    assert "error:" not in capsys.readouterr().err


def test_a_bad_flag_value_is_a_usage_error(capsys):
    """A value argparse cannot convert (a bool field's flag) exits 2 with one line."""
    with pytest.raises(SystemExit) as e:
        main(["train", "--cuda-graphs", "maybe"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last == (
        "rlhf-gym train: error: argument --cuda-graphs: expected true or false, got 'maybe'"
    )


def test_help_mentions_debug(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--debug" in out and "RLHF_GYM_DEBUG=1" in out
