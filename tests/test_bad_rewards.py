"""A reward model that fails or returns a bad value gets a clear error, never a silent NaN.

Every score enters the environment through ``rewards.score_responses`` (called in one place,
the engine's ``_finish``): NaN, inf, a wrong count or shape, a non-number or an exception
becomes a :class:`RewardModelError` (a ``ValueError``) that names the reward model (function
name, class name or path), the bad value, and the episode's prompt (cut to about 80
characters). The step raises before it returns, so nothing reaches ``info``, the rewards or an
agent's statistics.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rlhf_gym.envs.rewards import (
    FunctionReward,
    HFRewardModel,
    RewardModelError,
    WeightedReward,
    as_reward_model,
    score_responses,
)
from rlhf_gym.envs.rlhf_env import RLHFEnv, RLHFVectorEnv

PROMPT = "the movie was"


def run_episode(env, eos_first: bool = True, **reset_kw):
    env.reset(seed=0, **reset_kw)
    done = False
    while not done:
        _, r, done, _, info = env.step(env.eos_token_id if eos_first else 7)
    return r, info


@pytest.fixture
def make_env(tiny_kw):
    def make(reward_model, prompts=(PROMPT,), **kw):
        return RLHFEnv(**tiny_kw(reward_model=reward_model, prompts=list(prompts), **kw))

    return make


# ------------------------------------------------------------------ functions
def nan_reward(prompt: str, response: str) -> float:
    return float("nan")


def inf_reward(prompt: str, response: str) -> float:
    return float("inf")


def minus_inf_reward(prompt: str, response: str) -> float:
    return -np.inf


def failing_reward(prompt: str, response: str) -> float:
    return 1 / 0


@pytest.mark.parametrize("fn, shown", [(nan_reward, "nan"), (inf_reward, "inf"),
                                       (minus_inf_reward, "-inf")])  # fmt: skip
def test_function_returning_nan_or_inf(make_env, fn, shown):
    env = make_env(fn)
    with pytest.raises(RewardModelError) as err:
        run_episode(env)
    msg = str(err.value)
    assert f"the reward model FunctionReward(test_bad_rewards.{fn.__name__})" in msg
    assert f"returned {shown} for response 1 of 1, not a finite number" in msg
    assert f"prompt {PROMPT!r}, response ''" in msg
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    "value, shown",
    [
        (None, "None of type NoneType"),
        ("1.5", "'1.5' of type str"),
        ([1.0, 2.0], "[1.0, 2.0] of type list"),
        (1 + 2j, "(1+2j) of type complex"),
        (np.array([1.0, 2.0]), "of type ndarray"),
        ({"score": 1.0}, "of type dict"),
    ],
)
def test_function_returning_a_non_number(make_env, value, shown):
    def odd_reward(prompt: str, response: str):
        return value

    with pytest.raises(RewardModelError) as err:
        run_episode(make_env(odd_reward))
    msg = str(err.value)
    assert "the reward function test_bad_rewards.test_function_returning_a_non_number." in msg
    assert "odd_reward returned" in msg and shown in msg and "not a number" in msg
    assert f"prompt {PROMPT!r}" in msg


@pytest.mark.parametrize("value", [True, np.float32(0.5), np.int64(2), np.array([0.25]),
                                   torch.tensor(0.75)])  # fmt: skip
def test_function_returning_a_number_of_another_type_is_fine(make_env, value):
    r, info = run_episode(make_env(lambda p, r: value))
    assert info["score"] == pytest.approx(float(np.asarray(value).reshape(())))
    assert isinstance(info["score"], float) and np.isfinite(r)


def test_function_that_raises(make_env):
    with pytest.raises(RewardModelError) as err:
        run_episode(make_env(failing_reward))
    assert str(err.value) == (
        "the reward function test_bad_rewards.failing_reward raised ZeroDivisionError: "
        f"division by zero (prompt {PROMPT!r}, response '')"
    )
    assert isinstance(err.value.__cause__, ZeroDivisionError)


def test_long_prompt_is_cut_in_the_message(make_env):
    long = "the movie was " * 9  # 126 characters, 27 tokens
    env = make_env(nan_reward, prompts=[long], max_prompt_tokens=64)
    with pytest.raises(RewardModelError) as err:
        run_episode(env)
    shown = str(err.value).split("(prompt ", 1)[1]
    assert shown.startswith(repr(long[:79]) + "…, response")


# ------------------------------------------------------------------ batched reward models
class BatchModel:
    """A reward model object with ``score(prompts, responses)`` returning ``out(n)``."""

    def __init__(self, out):
        self.out = out

    def score(self, prompts, responses):
        return self.out(prompts, responses)


@pytest.mark.parametrize(
    "out, message",
    [
        (lambda p, r: np.zeros(len(p) + 1), r"shape \(2,\) for 1 response\(s\); expected \(1,\)"),
        (lambda p, r: np.zeros((len(p), 1)), r"returned shape \(1, 1\) for 1 response\(s\)"),
        (lambda p, r: 0.5, r"returned shape \(\) for 1 response\(s\)"),
        (lambda p, r: [], r"returned shape \(0,\) for 1 response\(s\)"),
        (lambda p, r: None, r"returned shape \(\) for 1 response\(s\)"),
        (lambda p, r: ["good"], r"returned 'good' of type str_, not a number, for response 1"),
        (lambda p, r: [[1.0], [1.0, 2.0]], r"returned \[\[1.0\], \[1.0, 2.0\]\], not an array"),
        (lambda p, r: torch.full((len(p),), float("nan")), r"returned nan for response 1 of 1"),
    ],
)  # fmt: skip
def test_batch_model_returning_a_bad_array(make_env, out, message):
    with pytest.raises(RewardModelError, match=message) as err:
        run_episode(make_env(BatchModel(out)))
    assert "the reward model test_bad_rewards.BatchModel" in str(err.value)
    assert PROMPT in str(err.value)


def test_batch_model_that_raises(make_env):
    def boom(prompts, responses):
        raise RuntimeError("CUDA out of memory (pretend)")

    with pytest.raises(RewardModelError) as err:
        run_episode(make_env(BatchModel(boom)))
    assert str(err.value) == (
        "the reward model test_bad_rewards.BatchModel raised RuntimeError: CUDA out of memory "
        f"(pretend) (scoring the response to prompt {PROMPT!r})"
    )
    assert isinstance(err.value.__cause__, RuntimeError)


def test_vector_env_names_the_row_whose_score_is_bad(tiny_kw):
    """Three rows finish together; the one bad score is named with its own prompt."""
    prompts = ["the movie was", "a wonderful film", "i did not like"]

    def one_bad(ps, rs):
        return [float("nan") if p == "a wonderful film" else 1.0 for p in ps]

    kw = tiny_kw(reward_model=BatchModel(one_bad), prompts=prompts, max_prompt_tokens=32)
    venv = RLHFVectorEnv(num_envs=3, **kw)
    venv.reset(seed=0, options={"prompt_index": [0, 1, 2]})
    eos = venv.eos_token_id
    with pytest.raises(RewardModelError) as err:
        venv.step(np.array([eos, eos, eos]))
    assert "returned nan for response 2 of 3, not a finite number" in str(err.value)
    assert "(prompt 'a wonderful film', response '')" in str(err.value)


def test_vector_env_batch_that_raises_names_the_batch(tiny_kw):
    prompts = ["the movie was", "a wonderful film"]

    def boom(ps, rs):
        raise KeyError("label")

    venv = RLHFVectorEnv(num_envs=2, **tiny_kw(reward_model=BatchModel(boom), prompts=prompts))
    venv.reset(seed=0, options={"prompt_index": [0, 1]})
    eos = venv.eos_token_id
    with pytest.raises(RewardModelError, match=(
        r"raised KeyError: 'label' \(scoring 2 responses, the first to prompt 'the movie was'\)"
    )):  # fmt: skip
        venv.step(np.array([eos, eos]))


# ------------------------------------------------------------------ composite and HF models
def test_weighted_reward_names_the_bad_part(make_env):
    rm = WeightedReward(
        {"short": FunctionReward(lambda p, r: -len(r)), "broken": FunctionReward(nan_reward)}
    )
    with pytest.raises(RewardModelError) as err:
        run_episode(make_env(rm))
    msg = str(err.value)
    assert "the reward model FunctionReward(test_bad_rewards.nan_reward) (part 'broken')" in msg
    assert "returned nan for response 1 of 1" in msg


def test_weighted_reward_part_with_the_wrong_count():
    rm = WeightedReward({"a": BatchModel(lambda p, r: np.zeros(1)),
                         "b": BatchModel(lambda p, r: np.ones(len(p)))})  # fmt: skip
    with pytest.raises(RewardModelError, match=r"BatchModel \(part 'a'\) returned shape \(1,\)"):
        rm.score(["x", "y"], ["1", "2"])  # (1,) + (2,) used to broadcast silently


def test_hf_reward_model_returning_nan_names_its_path(make_env, tiny_rm_dir):
    rm = HFRewardModel.load(str(tiny_rm_dir), torch.device("cpu"))
    rm.model = copy.deepcopy(rm.model)
    with torch.no_grad():
        rm.model.score.weight.fill_(float("nan"))
    with pytest.raises(RewardModelError) as err:
        run_episode(make_env(rm))
    msg = str(err.value)
    assert f"the reward model HFRewardModel({str(tiny_rm_dir)!r}) returned nan" in msg
    assert f"prompt {PROMPT!r}" in msg


def test_gold_labeler_returning_nan(make_env):
    def nan_gold(prompt: str, response: str) -> float:
        return float("nan")

    with pytest.raises(RewardModelError, match=(
        r"the gold labeler test_bad_rewards.test_gold_labeler_returning_nan.<locals>.nan_gold "
        r"returned nan for response 1 of 1"
    )):  # fmt: skip
        run_episode(make_env(lambda p, r: 1.0, gold=nan_gold))
    with pytest.raises(RewardModelError, match=r"the gold labeler .*failing_reward raised"):
        run_episode(make_env(lambda p, r: 1.0, gold=failing_reward))


# ------------------------------------------------------------------ what is a reward model
def test_a_class_instead_of_an_instance():
    with pytest.raises(ValueError, match=r"reward_model=BatchModel is a class: pass an instance"):
        as_reward_model(BatchModel)


def test_an_object_whose_score_is_not_a_method():
    class Scored:
        score = 3.0

    with pytest.raises(ValueError, match=r"reward_model must be .* got Scored"):
        as_reward_model(Scored())


def test_good_scores_pass_through_as_float64():
    out = score_responses(BatchModel(lambda p, r: torch.tensor([1, 2], dtype=torch.bfloat16)),
                          ["a", "b"], ["c", "d"])  # fmt: skip
    assert out.dtype == np.float64 and out.tolist() == [1.0, 2.0]
    assert score_responses(BatchModel(lambda p, r: [True, 3]), ["a", "b"], ["", ""]).tolist() == [
        1.0,
        3.0,
    ]
