"""``rlhf-gym compare``: a tiny budget writes the figure and the tables; bad input fails clearly."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from rlhf_gym.cli import main
from rlhf_gym.compare import (
    CompareConfig,
    best_of_n_points,
    compare,
    optimum_points,
    read_curve,
    reference_pool,
)
from rlhf_gym.train import AGENTS

PROMPTS = ["the movie was", "i did not like", "a wonderful film", "Q: how do i fix my bike ? A:"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_compare_on_the_toy_writes_figure_csv_and_markdown(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = [
        "compare",
        "--env",
        "RLHFToy-v0",
        "--agents",
        "ppo,qlearning",
        "--seeds",
        "2",
        "--total-episodes",
        "32",
        "--num-envs",
        "16",
        "--eval-episodes",
        "16",
        "--best-of",
        "1,4",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {r["name"]: r for r in read_csv(out / "results.csv")}
    assert list(rows) == [
        "ppo",
        "qlearning",
        "reference",
        "best-of-1",
        "best-of-4",
        "optimum at β=0.05",  # PPO's default β
        "optimum at β=0.1",  # soft-Q's
    ]
    optimum = rows["optimum at β=0.05"]
    assert float(optimum["score_mean"]) > float(rows["best-of-4"]["score_mean"])
    for agent in ("ppo", "qlearning"):
        row = rows[agent]
        assert row["seeds"] == "2"
        for key in ("score", "kl", "wall_s", "steps_per_s"):
            assert math.isfinite(float(row[f"{key}_mean"])), key
            assert float(row[f"{key}_std"]) >= 0
        assert row["gold_mean"] == ""  # the toy has no gold labeler
        assert 32 <= int(row["env_steps"]) <= 32 * 3  # 1-3 tokens per toy response
    assert float(rows["best-of-4"]["kl_mean"]) == pytest.approx(math.log(4) - 3 / 4)
    assert float(rows["best-of-4"]["score_mean"]) > float(rows["best-of-1"]["score_mean"])
    md = (out / "results.md").read_text()
    assert md.splitlines()[0].startswith("| | final score | gold score | KL | wall time (s) |")
    assert "| qlearning | " in md and " ± " in md
    assert md in printed  # the table is printed too
    runs = read_csv(out / "runs.csv")
    assert [(r["agent"], r["seed"]) for r in runs] == [
        ("ppo", "0"),
        ("ppo", "1"),
        ("qlearning", "0"),
        ("qlearning", "1"),
    ]
    assert len(list((out / "runs").iterdir())) == 4  # the TensorBoard runs


def test_read_curve_counts_env_steps(tmp_path):
    result = compare(
        CompareConfig(
            env_id="RLHFToy-v0",
            agents=("qlearning",),
            seeds=1,
            total_episodes=48,
            num_envs=16,
            eval_episodes=8,
            best_of=(1,),
            out=tmp_path,
        ),
        log=lambda m: None,
    )
    steps, scores, sps = read_curve(result["results"][0].run_dir)
    assert len(steps) == len(scores) == 3 and sps > 0
    assert np.all(np.diff(steps) >= 16) and np.all(np.diff(steps) <= 48)  # 16 episodes/update


def test_compare_on_tiny_hf_models_has_gold_scores(tmp_path, tiny_lm_dir, tiny_rm_dir):
    env_kwargs = dict(
        reward_model=str(tiny_rm_dir), prompts=PROMPTS, gold="sentiment", max_prompt_tokens=16
    )
    result = compare(
        CompareConfig(
            agents=("qlearning", "ppo"),
            seeds=1,
            total_episodes=16,
            num_envs=8,
            eval_episodes=8,
            best_of=(1, 2),
            model=str(tiny_lm_dir),
            device="cpu",
            out=tmp_path,
            env_kwargs=env_kwargs,
        ),
        log=lambda m: None,
    )
    rows = {r["name"]: r for r in read_csv(tmp_path / "results.csv")}
    assert math.isfinite(float(rows["qlearning"]["gold_mean"]))
    assert math.isfinite(float(rows["reference"]["gold_mean"]))
    assert float(rows["reference"]["kl_mean"]) == 0.0
    assert [p["n"] for p in result["best_of"]] == [1, 2]


def test_best_of_n_points(tmp_path):
    cc = CompareConfig(env_id="RLHFToy-v0", eval_episodes=64, best_of=(1, 2, 8), out=tmp_path)
    points = best_of_n_points(cc)
    assert [p["n"] for p in points] == [1, 2, 8]
    scores = [p["score"] for p in points]
    assert scores[0] < scores[1] < scores[2]
    assert points[0]["kl"] == 0.0 and points[2]["kl"] == pytest.approx(math.log(8) - 7 / 8)
    assert points[0]["prompts"] == 2  # the toy's 2 prompts, 32 samples each


def test_the_optimum_row_and_curve_beat_best_of_n(tmp_path):
    """On the toy the pool's tilted optimum matches the exact optimum (dynamic programming) and
    is above every best-of-n objective at that β."""
    from rlhf_gym.envs import toy

    cc = CompareConfig(env_id="RLHFToy-v0", optimum_samples=2048, best_of=(1, 4), out=tmp_path)
    pool = reference_pool(cc)
    (opt,) = optimum_points(pool, [0.5])
    assert opt["J"] == pytest.approx(toy.solve(0.5).value, abs=0.02)
    assert opt["J"] == pytest.approx(opt["score"] - 0.5 * opt["kl"])
    for p in best_of_n_points(cc, pool):
        assert opt["J"] > p["score"] - 0.5 * p["kl"]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--agents", "ppo,nope"],
            "unknown agent 'nope'; valid agents: " + ", ".join(sorted(AGENTS)),
        ),
        (["--agents", ","], "--agents is empty"),
        (["--agents", "ppo,ppo"], "names an agent twice"),
        (["--total-episodes", "100", "--num-envs", "64"], "must be a multiple of num_envs=64"),
        (["--total-episodes", "0"], "total_episodes must be a positive integer"),
        (["--seeds", "0"], "seeds must be a positive integer"),
        (["--num-envs", "-4"], "num_envs must be a positive integer"),
        (["--best-of", "1,x"], "--best-of expects comma-separated integers"),
        (["--best-of", "0"], "best_of must be positive integers"),
        (["--env", "Nope-v0"], "env 'Nope-v0' is not registered"),
    ],
)
def test_bad_agent_names_and_budgets(tmp_path, capsys, args, message):
    assert main(["compare", "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlhf-gym compare: error: ") and message in err
    assert not (tmp_path / "x").exists()  # nothing ran


def test_an_agent_config_without_a_budget_is_refused(monkeypatch, tmp_path):
    from dataclasses import dataclass

    import rlhf_gym.train as train_mod
    from rlhf_gym.compare import agent_config

    @dataclass
    class NoBudget:
        env_id: str = "RLHFToy-v0"
        seed: int = 0

    class NoBudgetAgent:
        config_class = NoBudget

    monkeypatch.setitem(train_mod.AGENTS, "nobudget", NoBudgetAgent)
    cc = CompareConfig(env_id="RLHFToy-v0", agents=("nobudget",), out=tmp_path)
    with pytest.raises(ValueError, match="no total_episodes field"):
        agent_config("nobudget", cc, 0)
