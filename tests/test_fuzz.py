"""The environments under fuzzing (Hypothesis): random actions, seeds, prompts and settings.

Properties, for every KL estimator, reward form, acting policy (none, a perturbed LM, random
logits, the tempered reference), reward model (a sequence classifier, a function, a weighted
sum), gold labeler and β (fixed or adaptive), on ``RLHFEnv`` and ``RLHFVectorEnv`` (next-step
autoreset, several episodes per row):

* no exception; every reward and every numeric ``info`` value is finite;
* an episode ends with ``terminated=True`` exactly at EOS or after ``max_new_tokens`` tokens,
  never ``truncated``; ``response_length`` counts its steps;
* ``Σ_t r_t = score − Σ_t β_t·kl_t`` (``reward_form="kl"``) or ``score + Σ_t β_t·ref_logprob_t``
  (``"ref_logprob"``), with ``β_t = info["kl_coef"]`` (constant unless ``kl_target`` is set),
  and ``kl_sum = Σ_t kl_t``;
* the same seed and actions give the same episode (a fresh environment replays it exactly);
* the vector environment's row ``i`` is a single environment seeded ``seed + i``.

Prompts are fuzzed too: empty, whitespace only, control characters, non-ASCII, special-token
text, longer than ``max_prompt_tokens``. Building an environment from loaded model objects
costs under a millisecond, so every example builds its own with its own prompts.
``derandomize=True``: CI runs the same examples every time. The last test checks that the
module played at least 10,000 episodes.
"""

from __future__ import annotations

import copy
import zlib
from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf_gym.envs.kl import KL_ESTIMATORS
from rlhf_gym.envs.policy import LMPolicy, PrecomputedLogits, ReferencePolicy
from rlhf_gym.envs.rewards import FunctionReward, HFRewardModel, WeightedReward
from rlhf_gym.envs.rlhf_env import RLHFEnv, RLHFVectorEnv

REWARD_FORMS = ("kl", "ref_logprob")  # the engine's REWARD_FORMS (a private module)
EPISODES: Counter[str] = Counter()  # episodes played per test (the budget check reads it)
MIN_EPISODES = 10_000

FUZZ = settings(
    deadline=None,
    derandomize=True,  # CI reproducible: the same examples every run
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SPECIAL_PROMPTS = [
    "",
    " ",
    "\t \n",
    "\r\n\r\n",
    "\x00",
    "\x07\x1b[31mred\x1b[0m\x7f",
    "<|endoftext|>",
    "<|pad|>",
    "a<|endoftext|>b<|pad|>c",
    "日本語のレビュー：",
    "😀🎬🍿 " * 5,
    "e\u0301\u0301\u0301",
    "\u202eevil\u202c \u200b\u200d",
    "\ufeffbom",
    "the movie was " * 12,
    "x" * 400,
]
prompt_text = st.one_of(
    st.sampled_from(SPECIAL_PROMPTS),
    st.text(max_size=30),
    st.text(st.characters(codec="ascii"), max_size=30),
    st.text(min_size=40, max_size=200),
)
prompt_lists = st.lists(prompt_text, min_size=1, max_size=5)

configs = st.fixed_dictionaries(
    {
        "kl_estimator": st.sampled_from(KL_ESTIMATORS),
        "reward_form": st.sampled_from(REWARD_FORMS),
        "kl_coef": st.one_of(st.sampled_from([0.0, 0.05, 0.5]), st.floats(0.0, 10.0)),
        "kl_target": st.one_of(st.none(), st.none(), st.floats(0.01, 20.0)),
        "policy": st.sampled_from(["none", "lm", "noise", "reference"]),
        "reward": st.sampled_from(["hf", "function", "weighted"]),
        "gold": st.sampled_from(["none", "none", "sentiment", "harmless"]),
        "max_new_tokens": st.integers(1, 4),
        "max_prompt_tokens": st.integers(1, 10),
        "noise_scale": st.sampled_from([0.1, 3.0, 30.0, 100.0]),
        "temperature": st.sampled_from([1.0, 0.5, 2.0]),
    }
)
seeds = st.integers(0, 2**32 - 1)


# ------------------------------------------------------------------------------ set-up
@pytest.fixture(scope="module")
def models(tiny_lm_dir, tiny_rm_dir) -> dict[str, Any]:
    """The tiny models, loaded once: environments are then cheap to build."""
    lm = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    policy_lm = copy.deepcopy(lm)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in policy_lm.parameters():
            p.add_(0.1 * torch.randn_like(p))
    rm = HFRewardModel.load(str(tiny_rm_dir), torch.device("cpu"))
    return {
        "lm": lm,
        "tokenizer": AutoTokenizer.from_pretrained(tiny_lm_dir),
        "rm": rm,
        "policy_lm": policy_lm.eval(),
    }


def fuzz_reward(prompt: str, response: str) -> float:
    """A plain reward function of the text (exercises ``as_reward_model``)."""
    return len(response) / 10 - response.count("e") + 0.01 * len(prompt)


class NoisePolicy:
    """Logits that are a fixed function of each row's real tokens (so replays agree)."""

    def __init__(self, vocab: int, scale: float) -> None:
        self.vocab, self.scale = vocab, scale

    def action_logits(self, observation: dict[str, np.ndarray]) -> torch.Tensor:
        rows = []
        for ids, mask in zip(observation["input_ids"], observation["attention_mask"], strict=True):
            seed = zlib.crc32(ids[mask == 1].tobytes())
            rows.append(np.random.default_rng(seed).normal(0.0, self.scale, self.vocab))
        return torch.as_tensor(np.stack(rows))


def reward_model(kind: str, models: dict[str, Any]) -> Any:
    if kind == "hf":
        return models["rm"]
    if kind == "function":
        return fuzz_reward
    return WeightedReward(
        {"rm": models["rm"], "fn": FunctionReward(fuzz_reward)}, weights={"rm": 1.0, "fn": -0.5}
    )


def build(cls: type, models: dict[str, Any], cfg: dict, prompts: list[str], **kw: Any) -> Any:
    """An environment of ``cls`` for the fuzzed config, with its acting policy attached."""
    env = cls(
        model=models["lm"],
        tokenizer=models["tokenizer"],
        reward_model=reward_model(cfg["reward"], models),
        prompts=prompts,
        gold=cfg["gold"],
        kl_coef=cfg["kl_coef"],
        kl_estimator=cfg["kl_estimator"],
        reward_form=cfg["reward_form"],
        kl_target=cfg["kl_target"],
        kl_horizon=5,
        max_new_tokens=cfg["max_new_tokens"],
        max_prompt_tokens=cfg["max_prompt_tokens"],
        device="cpu",
        **kw,
    )
    rows = getattr(env, "num_envs", 1)
    if cfg["policy"] == "lm":
        env.set_policy(LMPolicy(models["policy_lm"], num_envs=rows, pad_token_id=env.pad_token_id))
    elif cfg["policy"] == "noise":
        env.set_policy(NoisePolicy(env.vocab_size, cfg["noise_scale"]))
    elif cfg["policy"] == "reference":
        env.set_policy(ReferencePolicy(env, temperature=cfg["temperature"]))
    return env


def episode_actions(eos: int, vocab: int, n: int) -> st.SearchStrategy[list[int]]:
    """``n`` token ids: EOS first, never EOS, or EOS now and then."""
    token = st.integers(0, vocab - 1)
    return st.one_of(
        st.lists(token, min_size=n - 1, max_size=n - 1).map(lambda xs: [eos, *xs]),
        st.lists(token.filter(lambda a: a != eos), min_size=n, max_size=n),
        st.lists(st.one_of(st.just(eos), token), min_size=n, max_size=n),
    )


def assert_finite_info(info: dict[str, Any], where: str) -> None:
    for key, value in info.items():
        if isinstance(value, (bool, np.bool_, str)) or value is None:
            continue
        arr = np.asarray(value)
        if arr.dtype.kind in "iuf":
            assert np.isfinite(arr).all(), f"{where}: info[{key!r}] = {value!r}"


def check_episode(steps: list[tuple], reward_form: str, max_new: int, eos: int) -> None:
    """The per-episode properties, from ``(action, reward, terminated, truncated, info)``."""
    for t, (action, r, term, trunc, info) in enumerate(steps):
        assert np.isfinite(r), f"step {t}: reward {r}"
        assert not trunc
        assert_finite_info(info, f"step {t}")
        last = action == eos or t + 1 == max_new
        assert term == last, f"step {t}: terminated={term}, action {action}"
    info = steps[-1][4]
    rewards = [s[1] for s in steps]
    kls = [s[4]["kl"] for s in steps]
    betas = [s[4]["kl_coef"] for s in steps]
    assert info["response_length"] == len(steps)
    assert info["kl_sum"] == pytest.approx(sum(kls), rel=1e-9, abs=1e-9)
    if reward_form == "kl":
        expected = info["score"] - sum(b * k for b, k in zip(betas, kls, strict=True))
    else:
        lps = [s[4]["ref_logprob"] for s in steps]
        expected = info["score"] + sum(b * lp for b, lp in zip(betas, lps, strict=True))
    assert sum(rewards) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert isinstance(info["response_text"], str) and isinstance(info["prompt_text"], str)


def play(env: RLHFEnv, seed: int, options: dict | None, actions: list[int]) -> list:
    """One episode: ``[(obs, info) of reset, then (action, r, term, trunc, info, obs)…]``."""
    obs, info = env.reset(seed=seed, options=options)
    assert obs in env.observation_space
    out: list = [(obs, info)]
    for a in actions:
        obs, r, term, trunc, step_info = env.step(a)
        out.append((a, r, term, trunc, step_info, obs))
        if term:
            break
    assert out[-1][2], "the episode did not end after max_new_tokens"
    return out


def same_episode(a: list, b: list) -> None:
    """Two results of :func:`play` are identical: observations, rewards, flags and infos."""
    assert len(a) == len(b)
    pairs = [(a[0][0], b[0][0])] + [(x[5], y[5]) for x, y in zip(a[1:], b[1:], strict=True)]
    for x, y in pairs:
        np.testing.assert_array_equal(x["input_ids"], y["input_ids"])
        np.testing.assert_array_equal(x["attention_mask"], y["attention_mask"])
    assert a[0][1] == b[0][1]
    assert [x[:5] for x in a[1:]] == [y[:5] for y in b[1:]]


# ------------------------------------------------------------------------------ single env
@settings(FUZZ, max_examples=250)
@given(cfg=configs, prompts=prompt_lists, data=st.data())
def test_single_env_fuzz(models, cfg, prompts, data):
    env = build(RLHFEnv, models, cfg, prompts)
    eos, V, n = env.eos_token_id, env.vocab_size, env.max_new_tokens
    episodes = data.draw(
        st.lists(
            st.tuples(
                seeds,
                st.one_of(st.none(), st.integers(0, len(prompts) - 1)),
                episode_actions(eos, V, n),
            ),
            min_size=1,
            max_size=16,
        ),
        label="episodes",
    )
    played = []
    for seed, k, actions in episodes:
        options = None if k is None else {"prompt_index": k}
        traj = play(env, seed, options, actions)
        reset_info = traj[0][1]
        assert isinstance(reset_info["prompt_truncated"], bool)
        if k is not None:
            assert reset_info["prompt_text"] == env.prompts[k]
        assert traj[-1][4]["prompt_text"] == reset_info["prompt_text"]
        check_episode([s[:5] for s in traj[1:]], cfg["reward_form"], n, eos)
        played.append(traj)
    # the same seeds and actions on a fresh environment: the same episodes, exactly
    replay = build(RLHFEnv, models, cfg, prompts)
    for (seed, k, actions), traj in zip(episodes, played, strict=True):
        options = None if k is None else {"prompt_index": k}
        same_episode(play(replay, seed, options, actions), traj)
    if cfg["kl_target"] is None and len(episodes) > 1:  # no state leaks from episode to episode
        seed, k, actions = episodes[0]
        again = play(replay, seed, None if k is None else {"prompt_index": k}, actions)
        for x, y in zip(again[1:], played[0][1:], strict=True):
            assert x[1] == pytest.approx(y[1], abs=1e-6)
    EPISODES["single"] += 2 * len(episodes) + 1


# ------------------------------------------------------------------------------ vector env
def run_vector(venv: RLHFVectorEnv, seed: int, actions: np.ndarray) -> list:
    obs, info = venv.reset(seed=seed)
    out: list = [(obs, info)]
    for a in actions:
        out.append(venv.step(a))
    return out


def run_singles(envs: list[RLHFEnv], seed: int, actions: np.ndarray) -> list[list]:
    """Each single env follows the vector env's next-step autoreset by hand."""
    per_env: list[list] = []
    for i, env in enumerate(envs):
        obs, info = env.reset(seed=seed + i)
        rows, done = [(obs, 0.0, False, info)], False
        for a in actions[:, i]:
            if done:
                obs, info = env.reset()
                rows.append((obs, 0.0, False, info))
                done = False
            else:
                obs, r, done, _, info = env.step(int(a))
                rows.append((obs, r, done, info))
        per_env.append(rows)
    return per_env


@settings(FUZZ, max_examples=200)
@given(cfg=configs, prompts=prompt_lists, seed=seeds, data=st.data())
def test_vector_env_fuzz(models, cfg, prompts, seed, data):
    B = data.draw(st.integers(1, 8), label="num_envs")
    venv = build(RLHFVectorEnv, models, cfg, prompts, num_envs=B)
    eos, V, n = venv.eos_token_id, venv.vocab_size, venv.max_new_tokens
    steps = data.draw(st.integers(1, 5 * (n + 1)), label="steps")
    token = st.one_of(st.just(eos), st.integers(0, V - 1), st.integers(0, V - 1))
    actions = np.array(
        data.draw(
            st.lists(st.lists(token, min_size=B, max_size=B), min_size=steps, max_size=steps)
        ),
        dtype=np.int64,
    )
    trace = run_vector(venv, seed, actions)
    episodes = 0
    current: list[list] = [[] for _ in range(B)]  # the steps of each row's current episode
    resetting = np.zeros(B, dtype=bool)
    for t, (obs, rewards, term, trunc, info) in enumerate(trace[1:]):
        assert obs in venv.observation_space
        assert np.isfinite(rewards).all() and not trunc.any()
        for key, value in info.items():
            if not key.startswith("_") and value.dtype.kind in "iuf":
                assert np.isfinite(value[info[f"_{key}"]]).all(), f"step {t}: info[{key!r}]"
        for i in range(B):
            if resetting[i]:  # next-step autoreset: reward 0, a new prompt, no step info
                assert rewards[i] == 0.0 and not term[i] and info["_prompt_text"][i]
                assert not info.get("_kl", np.zeros(B, bool))[i]
                continue
            row_info = {
                k: v[i] for k, v in info.items() if not k.startswith("_") and info[f"_{k}"][i]
            }
            current[i].append(
                (int(actions[t, i]), float(rewards[i]), bool(term[i]), False, row_info)
            )
            if term[i]:
                check_episode(current[i], cfg["reward_form"], n, eos)
                current[i], episodes = [], episodes + 1
        resetting = term.copy()
    # the same seed and actions on a fresh vector env: the same trace, exactly
    again = run_vector(build(RLHFVectorEnv, models, cfg, prompts, num_envs=B), seed, actions)
    for x, y in zip(trace[1:], again[1:], strict=True):
        np.testing.assert_array_equal(x[0]["input_ids"], y[0]["input_ids"])
        np.testing.assert_array_equal(x[1], y[1])
        np.testing.assert_array_equal(x[2], y[2])
        assert x[4].keys() == y[4].keys()
        for key in x[4]:
            np.testing.assert_array_equal(x[4][key], y[4][key])
    # row i is a single environment seeded seed + i (one β per env: not with kl_target)
    if cfg["kl_target"] is None:
        singles = run_singles(
            [build(RLHFEnv, models, cfg, prompts) for _ in range(B)], seed, actions
        )
        for i, rows in enumerate(singles):
            for (obs, r, done, info), vec in zip(rows, trace, strict=True):
                np.testing.assert_array_equal(obs["input_ids"], vec[0]["input_ids"][i])
                np.testing.assert_array_equal(obs["attention_mask"], vec[0]["attention_mask"][i])
                if len(vec) == 5:
                    assert vec[1][i] == pytest.approx(r, abs=1e-4)
                    assert vec[2][i] == done
                if "score" in info:
                    assert vec[-1]["score"][i] == pytest.approx(info["score"], abs=1e-4)
                    assert vec[-1]["response_text"][i] == info["response_text"]
                    assert vec[-1]["prompt_text"][i] == info["prompt_text"]
        EPISODES["vector"] += sum(sum(row[2] for row in rows) for rows in singles)
    EPISODES["vector"] += 2 * episodes


def test_long_running_vector_env_many_episodes(models):
    """One vector env, hundreds of episodes with autoreset (the reference's KV cache is
    spliced and trimmed again and again): its rows still match an uncached forward pass."""
    prompts = ["", "\x00\x1b", "the movie was " * 5, "日本語", "<|endoftext|>", "a"]
    cfg = {
        "kl_estimator": "k3",
        "reward_form": "kl",
        "kl_coef": 0.1,
        "kl_target": None,
        "policy": "lm",
        "reward": "weighted",
        "gold": "none",
        "max_new_tokens": 5,
        "max_prompt_tokens": 6,
    }
    venv = build(RLHFVectorEnv, models, cfg, prompts, num_envs=8)
    rng = np.random.default_rng(0)
    obs, _ = venv.reset(seed=123)
    finished = 0
    lm = models["lm"]
    for t in range(900):
        actions = rng.integers(0, venv.vocab_size, size=8)
        actions[rng.random(8) < 0.2] = venv.eos_token_id
        obs, r, term, _, info = venv.step(actions)
        assert np.isfinite(r).all()
        finished += int(term.sum())
        if t % 100 == 0:  # the cached reference against a plain forward pass
            for i in np.flatnonzero(~term):  # a finished row's state is not advanced
                m = int(obs["attention_mask"][i].sum())
                ids = torch.as_tensor(obs["input_ids"][i, :m])[None]
                with torch.no_grad():
                    expected = lm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]
                torch.testing.assert_close(venv.reference_logits[i], expected, atol=1e-4, rtol=0)
    assert finished > 900
    EPISODES["long"] += finished


# ------------------------------------------------------------------------------ regressions
def test_empty_prompt_and_empty_response_are_scored(models):
    """Found by fuzzing: an empty prompt answered with EOS gave the reward model an empty text,
    and the sequence classifier crashed on a batch of zero tokens. Now the empty text is read
    as the start token, in a batch of its own or not."""
    env = RLHFEnv(
        model=models["lm"], tokenizer=models["tokenizer"], reward_model=models["rm"],
        prompts=[""], gold="sentiment", max_new_tokens=3, device="cpu",
    )  # fmt: skip
    env.reset(seed=0)
    _, r, done, _, info = env.step(env.eos_token_id)
    assert done and info["response_text"] == "" and np.isfinite(r)
    rm = models["rm"]
    alone = rm.score([""], [""])
    with_others = rm.score(["", "the movie"], ["", " was"])
    assert alone[0] == pytest.approx(with_others[0], abs=1e-5)
    start = rm.tokenizer.bos_token or rm.tokenizer.eos_token
    assert alone[0] == pytest.approx(rm.score([start], [""])[0], abs=1e-6)


@pytest.mark.parametrize("prompt", ["", " ", "\t\n", "\x00\x07"])
def test_empty_and_whitespace_prompts_are_accepted(models, prompt):
    """An empty or whitespace-only prompt is allowed: the model conditions on the start token
    (an empty prompt) or on the whitespace's tokens; ``prompt_text`` is the prompt as given."""
    env = RLHFEnv(
        model=models["lm"], tokenizer=models["tokenizer"], reward_model=fuzz_reward,
        prompts=[prompt], max_new_tokens=2, device="cpu",
    )  # fmt: skip
    obs, info = env.reset(seed=0)
    assert info["prompt_text"] == prompt and obs["attention_mask"].sum() >= 1
    env.step(5)
    _, r, done, _, info = env.step(6)
    assert done and np.isfinite(r) and info["prompt_text"] == prompt


def test_prompt_that_is_not_unicode_text_is_refused(models):
    """Found by fuzzing: a lone surrogate made the tokenizer raise ``TypeError:
    TextEncodeInput must be Union[...]``; now a ValueError names the prompt and the character."""
    with pytest.raises(ValueError, match=r"prompt 1 in the prompts list is not valid Unicode"):
        RLHFEnv(
            model=models["lm"], tokenizer=models["tokenizer"], reward_model=fuzz_reward,
            prompts=["fine", "bad \ud800 text"], device="cpu",
        )  # fmt: skip


def _env(models, **kw) -> RLHFEnv:
    base = dict(
        model=models["lm"],
        tokenizer=models["tokenizer"],
        reward_model=fuzz_reward,
        prompts=["the movie was"],
        max_new_tokens=3,
        max_prompt_tokens=8,
        device="cpu",
    )
    return RLHFEnv(**{**base, **kw})


@pytest.mark.parametrize("value", [float("inf"), float("nan"), True, -0.1, "0.1"])
def test_kl_coef_must_be_finite(models, value):
    """Found by fuzzing: ``kl_coef=inf`` was accepted and a KL of 0 gave a NaN reward
    (``inf·0``); ``True`` was taken for 1."""
    with pytest.raises(ValueError, match="kl_coef must be a number >= 0"):
        _env(models, kl_coef=value)
    env = _env(models)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="kl_coef must be a number >= 0"):
        env.set_kl_coef(value)


def test_numpy_kl_coef_is_accepted(models):
    assert _env(models, kl_coef=np.float32(0.25)).kl_coef == pytest.approx(0.25)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"kl_target": float("nan")}, "kl_target must be > 0"),
        ({"kl_target": float("inf")}, "kl_target must be > 0"),
        ({"kl_target": 1.0, "kl_horizon": float("nan")}, "kl_horizon must be a positive"),
    ],
)
def test_adaptive_controller_refuses_nan(models, kw, message):
    """Found by fuzzing: a NaN target or horizon was accepted and made β NaN after the first
    episode."""
    with pytest.raises(ValueError, match=message):
        _env(models, **kw)


@pytest.mark.parametrize("estimator", KL_ESTIMATORS)
def test_k3_does_not_overflow_on_a_confident_policy(models, estimator):
    """Found by fuzzing: k3's ``exp(log π_ref − log π)`` overflowed float32 (an inf KL and
    reward) when the policy gave the action a log-probability below about −90, which a
    sharp policy does. The estimators now run in float64."""
    env = _env(models, kl_estimator=estimator)
    handoff = PrecomputedLogits()
    env.set_policy(handoff)
    env.reset(seed=0)
    logits = torch.zeros(1, env.vocab_size)
    logits[0, 7] = 120.0  # token 5 gets log π ≈ −120
    handoff.set(logits)
    _, r, _, _, info = env.step(5)
    assert np.isfinite(r) and np.isfinite(info["kl"])


@pytest.mark.parametrize(
    "logits, message",
    [
        (float("nan"), r"returned NaN or \+inf logits for row 0"),
        (float("inf"), r"returned NaN or \+inf logits for row 0"),
        (float("-inf"), r"returned only -inf \(no token possible\) logits for row 0"),
    ],
)
def test_policy_logits_that_are_no_distribution(models, logits, message):
    """Found by fuzzing: NaN logits gave a NaN KL with k1/k3 and, silently, a KL of 0 with
    ``full`` (``NaN > 0`` is false); now a clear error."""
    for estimator in KL_ESTIMATORS:
        env = _env(models, kl_estimator=estimator)
        handoff = PrecomputedLogits()
        env.set_policy(handoff)
        env.reset(seed=0)
        handoff.set(torch.full((1, env.vocab_size), logits))
        with pytest.raises(ValueError, match=message):
            env.step(5)


@pytest.mark.parametrize("estimator", KL_ESTIMATORS)
def test_action_the_policy_cannot_take(models, estimator):
    """Found by fuzzing: an action the handed-over logits give probability 0 (−inf) made k1
    −inf (reward +inf) and k3 NaN. ``full`` does not depend on the action and stays finite."""
    env = _env(models, kl_estimator=estimator)
    handoff = PrecomputedLogits()
    env.set_policy(handoff)
    env.reset(seed=0)
    logits = torch.zeros(1, env.vocab_size)
    logits[0, 5] = float("-inf")
    handoff.set(logits)
    if estimator == "full":
        _, r, _, _, info = env.step(5)
        assert np.isfinite(r) and info["kl"] >= 0
        return
    with pytest.raises(ValueError, match=rf"the {estimator} KL estimate of row 0 is .*token 5"):
        env.step(5)


# ------------------------------------------------------------------------------ the budget
def test_fuzzing_played_enough_episodes():
    """Runs last in this module: the fuzz tests above played at least 10,000 episodes."""
    if not {"single", "vector", "long"} <= set(EPISODES):
        pytest.skip("only some of the fuzz tests ran")
    print(f"fuzzing played {sum(EPISODES.values())} episodes: {dict(EPISODES)}")
    assert sum(EPISODES.values()) >= MIN_EPISODES, dict(EPISODES)
