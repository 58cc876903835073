"""rlhf-gym eval: statistics, the KL of the acting policy, best-of-n, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhf_gym.cli import main
from rlhf_gym.evaluate import best_of_n, evaluate

PROMPTS = ["the movie was", "i did not like", "a wonderful film"]


@pytest.fixture
def kw(tiny_kw):
    return tiny_kw(prompts=PROMPTS, gold="sentiment", max_prompt_tokens=32)


def test_reference_has_zero_kl_and_a_perturbed_policy_does_not(kw, tiny_lm_dir):
    ref = evaluate("RLHF-v0", episodes=6, num_envs=3, **kw)
    assert len(ref.scores) == 6 and ref.summary()["kl"]["mean"] == 0.0
    assert [p for p, _, _ in ref.samples[:3]] == PROMPTS  # prompts are visited in order
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    other = evaluate("RLHF-v0", policy=model, episodes=6, num_envs=3, **kw)
    assert min(other.kls) > 0  # exact KL of a different policy is positive
    assert set(other.summary()) >= {"score", "gold_score", "kl", "response_length"}


def test_best_of_n_is_monotone_and_uses_the_analytic_kl(kw):
    out = best_of_n("RLHF-v0", ns=(1, 2, 4), num_envs=12, **kw)
    scores = [out[n]["score"] for n in (1, 2, 4)]
    assert scores == sorted(scores)  # the first n of the same samples: max grows with n
    assert out[1]["kl"] == 0.0
    assert out[4]["kl"] == pytest.approx(np.log(4) - 3 / 4)


def test_eval_command_json(kw, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    capsys.readouterr()
    code = main(
        [
            "eval",
            "--env",
            "RLHFToy-v0",
            "--episodes",
            "8",
            "--best-of",
            "1,2",
            "--json",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 8 and set(report["best_of_n"]) == {"1", "2"}


def test_eval_command_bad_input(capsys):
    assert main(["eval", "--episodes", "0", "--env", "RLHFToy-v0", "--best-of", ""]) == 2
    assert "episodes must be a positive integer" in capsys.readouterr().err


def test_eval_command_names_a_policy_path_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "no-such-policy"
    assert main(["eval", "--env", "RLHFToy-v0", "--policy", str(missing), "--best-of", ""]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlhf-gym eval: error: ") and str(missing) in err
    assert "Traceback" not in err
