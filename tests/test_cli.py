"""The ``rlhf-gym`` command line: options generated from the dataclasses, lazy imports."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from rlhf_gym.agents import AGENTS, config_class
from rlhf_gym.cli import add_options, build_parser, from_args, main
from rlhf_gym.compare import CompareConfig
from rlhf_gym.evaluate import EvalConfig
from rlhf_gym.train import RunOptions


def parser_actions(argv: list[str]) -> dict[str, object]:
    """``dest -> action`` of the subcommand ``argv[0]``'s parser."""
    sub = next(a for a in build_parser(argv)._actions if a.dest == "command")
    return {a.dest: a for a in sub.choices[argv[0]]._actions}


@pytest.mark.parametrize(
    ("argv", "classes"),
    [
        (["compare"], [CompareConfig]),
        (["eval"], [EvalConfig]),
        *[(["train", "--agent", name], [RunOptions, config_class(name)]) for name in AGENTS],
    ],
)
def test_every_option_comes_from_a_dataclass_field(argv, classes):
    actions = parser_actions(argv)
    for cls in classes:
        for f in dataclasses.fields(cls):
            if "help" not in f.metadata:
                continue  # not an option (CompareConfig.env_kwargs)
            action = actions[f.name]
            assert action.default is None  # unset options keep the dataclass default
            shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
            assert f.metadata["help"].replace("%", "%%") in action.help
            if f.default is not None:
                assert f"(default: {shown})" in action.help
    expected = {f.name for cls in classes for f in dataclasses.fields(cls) if "help" in f.metadata}
    extra = {"help", "agent", "json"}
    assert set(actions) - extra == expected  # and no hand-written option beside them


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["train"],
        ["eval"],
        ["compare"],
        ["reward"],
        ["reward", "simulate"],
        ["reward", "train"],
        ["reward", "eval"],
        ["label"],
    ],
)
def test_every_command_prints_its_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    assert "usage: rlhf-gym" in capsys.readouterr().out


def test_options_become_the_dataclass_values():
    args = build_parser(argv := ["eval", "--env", "RLHFToy-v0", "--best-of", "1, 4"]).parse_args(
        argv
    )
    cfg = from_args(EvalConfig, args)
    assert cfg == EvalConfig(env_id="RLHFToy-v0", best_of=(1, 4))
    argv = ["compare", "--agents", "ppo,qlearning", "--seeds", "2", "--out", "x"]
    cc = from_args(CompareConfig, build_parser(argv).parse_args(argv))
    assert (cc.agents, cc.seeds, cc.out, cc.total_episodes) == (("ppo", "qlearning"), 2, "x", 2048)
    argv = ["train", "--agent", "qlearning", "--kl-coef", "0.2", "--double-q", "true"]
    cfg = from_args(config_class("qlearning"), build_parser(argv).parse_args(argv))
    assert (cfg.kl_coef, cfg.double_q, cfg.num_envs) == (0.2, True, 64)


def test_a_field_type_the_cli_cannot_parse_is_refused():
    @dataclasses.dataclass
    class Odd:
        weights: dict = dataclasses.field(default_factory=dict, metadata={"help": "w"})

    import argparse

    with pytest.raises(TypeError, match="Odd.weights"):
        add_options(argparse.ArgumentParser(), Odd, "odd")


def test_help_imports_neither_torch_nor_the_agents():
    code = (
        "import sys\n"
        "from rlhf_gym.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'stable_baselines3', 'rlhf_gym.agents.ppo')"
        " if m in sys.modules]\n"
        "print('heavy:', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "train an agent" in out.stdout
    assert "heavy: []" in out.stdout


def test_agent_config_checks_the_values_the_environment_accepts():
    """AgentConfig keeps torch-free copies of the env's choices (so configs fail before any
    model loads); they must not drift from the environment's own lists."""
    from rlhf_gym.agents import config
    from rlhf_gym.envs.kl import KL_ESTIMATORS
    from rlhf_gym.envs.lm import DTYPES

    assert set(config.KL_ESTIMATORS) == set(KL_ESTIMATORS)
    assert set(config.DTYPES) == {"auto", *DTYPES}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--agent", "bogus"], "--agent 'bogus' is not one of"),
        (["train", "--env", "Nope-v0"], "env_id 'Nope-v0' is not registered"),
        (["train", "--num-envs", "0"], "num_envs must be a positive integer, got 0"),
        (["train", "--dtype", "float8"], "dtype='float8' is not one of"),
        (["train", "--kl-estimator", "k9"], "kl_estimator='k9' is not one of"),
        (["train", "--agent", "qlearning", "--kl-coef", "0"], "kl_coef (β) must be > 0"),
        (["eval", "--env", "RLHFToy-v0", "--best-of", "0"], "best_of must be positive integers"),
        (["eval", "--env", "RLHFToy-v0", "--best-of", "1,x"], "--best-of expects"),
    ],
)
def test_bad_options_give_one_clear_error(tmp_path, capsys, argv, message):
    from rlhf_gym.cli import main

    assert main([*argv, *(["--logdir", str(tmp_path)] if argv[0] == "train" else [])]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rlhf-gym {argv[0]}: error: ") and message in err, err
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing was written
