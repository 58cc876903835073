"""RLHFEnv and RLHFVectorEnv on tiny real Hugging Face models saved locally."""

from __future__ import annotations

import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

import rlhf_gym  # noqa: F401  (registers the ids)
from rlhf_gym.envs.policy import LMPolicy, PrecomputedLogits
from rlhf_gym.envs.rlhf_env import RLHFEnv, RLHFVectorEnv

PROMPTS = ["the movie was", "i did not like", "a wonderful film", "Q: how do i fix my bike ? A:"]


@pytest.fixture
def kw(tiny_kw):
    return tiny_kw(prompts=PROMPTS)


def rollout(env, actions, seed):
    """Play fixed actions (cycling) through one episode; return the trajectory."""
    obs, info = env.reset(seed=seed)
    out, t, done = [(obs, info)], 0, False
    while not done:
        obs, r, done, trunc, info = env.step(actions[t % len(actions)])
        assert not trunc
        out.append((obs, r, info))
        t += 1
    return out


def test_spaces_and_episode_end(kw):
    env = RLHFEnv(**kw)
    V = env.action_space.n
    assert env.observation_space["input_ids"].shape == (14,)
    obs, info = env.reset(seed=0)
    assert obs["input_ids"].dtype == np.int64 and obs in env.observation_space
    n_prompt = int(obs["attention_mask"].sum())
    traj = rollout(env, [5, 6, 7], seed=0)
    assert len(traj) == 1 + 6  # max_new_tokens steps, then terminated
    last_obs, _, last_info = traj[-1]
    assert last_obs["attention_mask"].sum() == n_prompt + 6
    for key in ("score", "response_text", "prompt_text", "kl", "ref_logprob", "kl_sum"):
        assert key in last_info
    assert "gold_score" not in last_info  # gold="none"
    # EOS ends the episode at once
    env.reset(seed=0)
    _, _, done, _, info = env.step(env.tokenizer.eos_token_id)
    assert done and info["response_text"] == "" and info["response_length"] == 1
    assert V == env.tokenizer.vocab_size or V >= len(env.tokenizer) - 1


def test_seeded_determinism(kw):
    a = rollout(RLHFEnv(**kw), [9, 10, 11], seed=3)
    b = rollout(RLHFEnv(**kw), [9, 10, 11], seed=3)
    for x, y in zip(a[1:], b[1:], strict=True):
        np.testing.assert_array_equal(x[0]["input_ids"], y[0]["input_ids"])
        assert x[1] == y[1] and x[2] == y[2]
    prompts = {rollout(RLHFEnv(**kw), [4], seed=s)[0][1]["prompt_text"] for s in range(12)}
    assert len(prompts) > 1  # the seed really picks the prompt


@pytest.mark.parametrize("estimator", ["k1", "k3", "full"])
def test_reward_identity_with_policy(kw, estimator):
    """Σ_t r_t = score − kl_coef·Σ_t kl_t, with a real (different) acting policy attached."""
    env = RLHFEnv(**kw, kl_estimator=estimator, kl_coef=0.3)
    policy_model = AutoModelForCausalLM.from_pretrained(kw["model"])
    with torch.no_grad():
        for p in policy_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    policy = LMPolicy(policy_model, seed=0)
    env.set_policy(policy)
    obs, _ = env.reset(seed=1)
    total, kls, done = 0.0, [], False
    while not done:
        obs, r, done, _, info = env.step(policy.act(obs))
        total += r
        kls.append(info["kl"])
    assert total == pytest.approx(info["score"] - 0.3 * sum(kls), abs=1e-9)
    assert info["kl_sum"] == pytest.approx(sum(kls))
    assert any(abs(k) > 1e-6 for k in kls)
    if estimator != "k1":
        assert all(k >= -1e-7 for k in kls)


def test_exact_kl_is_zero_when_policy_is_reference(kw):
    env = RLHFEnv(**kw, kl_estimator="full")
    policy = LMPolicy(AutoModelForCausalLM.from_pretrained(kw["model"]), seed=0)
    env.set_policy(policy)
    obs, _ = env.reset(seed=0)
    done = False
    while not done:
        obs, r, done, _, info = env.step(policy.act(obs))
        assert info["kl"] == pytest.approx(0.0, abs=1e-6)


def test_precomputed_logits_and_ref_logprob_form(kw):
    env = RLHFEnv(**kw, kl_estimator="k1", kl_coef=0.5)
    handoff = PrecomputedLogits()
    env.set_policy(handoff)
    env.reset(seed=0)
    logits = torch.zeros(1, env.action_space.n)  # uniform policy
    handoff.set(logits)
    _, r, _, _, info = env.step(7)
    assert info["kl"] == pytest.approx(-np.log(env.action_space.n) - info["ref_logprob"], abs=1e-5)
    assert r == pytest.approx(-0.5 * info["kl"])
    with pytest.raises(RuntimeError, match="set\\(logits\\)"):
        env.step(7)  # each set() serves one step
    env2 = RLHFEnv(**kw, reward_form="ref_logprob", kl_coef=0.5)
    env2.reset(seed=0)
    _, r2, _, _, info2 = env2.step(7)
    assert info2["reward_form"] == "ref_logprob"
    assert r2 == pytest.approx(0.5 * info2["ref_logprob"])
    assert info2["ref_logprob"] == pytest.approx(info["ref_logprob"])


def test_no_policy_warns_once_and_kl_is_zero(kw):
    env = RLHFEnv(**kw)
    env.reset(seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            _, r, _, _, info = env.step(8)
            assert info["kl"] == 0.0 and r == 0.0
    assert sum("no acting policy is attached" in str(w.message) for w in caught) == 1


def test_ref_logprob_equals_uncached_forward(kw):
    env = RLHFEnv(**kw)
    ref = AutoModelForCausalLM.from_pretrained(kw["model"]).eval()
    obs, _ = env.reset(seed=2)
    for a in [12, 30, 44, 9]:
        ids = torch.tensor(obs["input_ids"][obs["attention_mask"] == 1])[None]
        with torch.no_grad():
            expected = ref(input_ids=ids).logits[0, -1].log_softmax(-1)[a].item()
        obs, _, _, _, info = env.step(a)
        assert info["ref_logprob"] == pytest.approx(expected, abs=1e-4)


def test_vector_env_equals_single_envs(kw):
    B, steps = 3, 20
    rng = np.random.default_rng(0)
    actions = rng.integers(2, 60, size=(steps, B))
    actions[4, 1] = actions[9, 0] = 0  # EOS: episodes end at different times (autoreset)
    venv = gym.make_vec("RLHF-v0", num_envs=B, **{k: v for k, v in kw.items()})
    assert isinstance(venv, RLHFVectorEnv)
    singles = [RLHFEnv(**kw) for _ in range(B)]
    vobs, _ = venv.reset(seed=10)
    sobs = [s.reset(seed=10 + i)[0] for i, s in enumerate(singles)]
    s_done = [False] * B
    for t in range(steps):
        vobs, vr, vterm, vtrunc, vinfo = venv.step(actions[t])
        for i, env in enumerate(singles):
            if s_done[i]:  # next-step autoreset: the vector env reset this row now
                sobs[i], info = env.reset()
                s_done[i], r = False, 0.0
                assert vinfo["prompt_text"][i] == info["prompt_text"]
            else:
                sobs[i], r, s_done[i], _, info = env.step(int(actions[t, i]))
                assert vinfo["ref_logprob"][i] == pytest.approx(info["ref_logprob"], abs=1e-5)
            np.testing.assert_array_equal(vobs["input_ids"][i], sobs[i]["input_ids"])
            np.testing.assert_array_equal(vobs["attention_mask"][i], sobs[i]["attention_mask"])
            assert vr[i] == pytest.approx(r, abs=1e-5)
            assert vterm[i] == s_done[i] and not vtrunc[i]
            if s_done[i]:
                assert vinfo["score"][i] == pytest.approx(info["score"], abs=1e-5)
                assert vinfo["response_text"][i] == info["response_text"]
    assert vterm.dtype == bool


def test_vector_env_with_lm_policy_acting(kw):
    venv = RLHFVectorEnv(num_envs=4, **kw, kl_estimator="full")
    policy = LMPolicy(AutoModelForCausalLM.from_pretrained(kw["model"]), num_envs=4, seed=0)
    venv.set_policy(policy)
    obs, _ = venv.reset(seed=0)
    finished = 0
    for _ in range(15):
        obs, r, term, _, info = venv.step(policy.act(obs))
        if "kl" in info:
            np.testing.assert_allclose(info["kl"][info["_kl"]], 0.0, atol=1e-5)
        finished += int(term.sum())
    assert finished >= 4


def test_checkers_on_tiny_model(kw):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(RLHFEnv(**kw))
        sb3_check_env(RLHFEnv(**kw))


def test_gym_make_kwargs_are_plain_and_spec_serialises(kw, tmp_path):
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    env = gym.make("RLHF-v0", **{**kw, "prompts": str(tmp_path / "p.txt")})
    assert env.spec.to_json()  # names and numbers only
    env.close()


def test_llama_architecture_works(kw, tiny_llama_dir):
    env = RLHFEnv(**{**kw, "model": str(tiny_llama_dir)})
    traj = rollout(env, [5, 9], seed=0)
    assert "score" in traj[-1][2]


def test_adaptive_kl_changes_coefficient(kw):
    env = RLHFEnv(**kw, kl_coef=0.2, kl_target=0.001, kl_horizon=10, kl_estimator="full")
    policy = LMPolicy(copy.deepcopy(AutoModelForCausalLM.from_pretrained(kw["model"])), seed=0)
    with torch.no_grad():
        for p in policy.lm.model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    env.set_policy(policy)
    coefs = []
    for ep in range(3):
        obs, _ = env.reset(seed=ep)
        done = False
        while not done:
            obs, _, done, _, info = env.step(policy.act(obs))
        coefs.append(info["kl_coef"])
    assert coefs[0] < coefs[1] < coefs[2]  # KL above target: β grows


def test_reset_options_pick_the_prompt(kw):
    kw = {**kw, "max_prompt_tokens": 32}  # no truncation: prompt_text is the prompt as given
    env = RLHFEnv(**kw)
    for k in range(len(PROMPTS)):
        _, info = env.reset(seed=0, options={"prompt_index": k})
        assert info["prompt_text"] == PROMPTS[k]
    venv = RLHFVectorEnv(num_envs=3, **kw)
    _, info = venv.reset(seed=0, options={"prompt_index": [3, 1, 1]})
    assert list(info["prompt_text"]) == [PROMPTS[3], PROMPTS[1], PROMPTS[1]]
    with pytest.raises(ValueError, match=r"prompt_index'\] must give 3 integer"):
        venv.reset(options={"prompt_index": [0, 9, 1]})


def test_vector_reset_without_seed_continues_the_stream(kw):
    a, b = RLHFVectorEnv(num_envs=2, **kw), RLHFVectorEnv(num_envs=2, **kw)
    a.reset(seed=5)
    b.reset(seed=5)
    for _ in range(4):
        _, ia = a.reset()
        _, ib = b.reset()
        assert list(ia["prompt_text"]) == list(ib["prompt_text"])


def test_reward_model_with_another_tokenizer_gets_text(kw):
    """The embedded sentiment reward model (1,024-token vocabulary) scores the tiny LM's text."""
    env = RLHFEnv(**{**kw, "reward_model": "sentiment"})
    traj = rollout(env, [5, 9, 14], seed=0)
    info = traj[-1][2]
    assert np.isfinite(info["score"]) and isinstance(info["response_text"], str)


def test_public_surface_is_the_same_on_single_and_vector_envs(kw, tiny_lm_dir):
    single, vector = RLHFEnv(**kw), RLHFVectorEnv(num_envs=3, **kw)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    for env in (single, vector):
        assert env.vocab_size == model.get_output_embeddings().weight.shape[0]
        assert env.eos_token_id == env.tokenizer.eos_token_id != env.pad_token_id
        assert (env.max_new_tokens, env.max_prompt_tokens) == (6, 8)
        assert env.num_prompts == len(PROMPTS) == len(env.prompts)
        assert all(full.endswith(seen) for full, seen in zip(PROMPTS, env.prompts, strict=True))
        assert env.device == torch.device("cpu") and env.reward_form == "kl"
        assert env.kl_coef == 0.05 and env.kl_target is None and env.policy is None
        with pytest.raises(RuntimeError, match="after reset"):
            env.reference_logits  # noqa: B018 - the property raises
    obs, _ = vector.reset(seed=0)
    for row in range(3):  # the reference's logits at each row's state, as an uncached pass
        n = int(obs["attention_mask"][row].sum())
        ids = torch.as_tensor(obs["input_ids"][row, :n])[None]
        with torch.no_grad():
            expected = model(input_ids=ids).logits[0, -1]
        torch.testing.assert_close(vector.reference_logits[row], expected, atol=1e-4, rtol=0)
    policy = LMPolicy(model, num_envs=3)
    vector.set_policy(policy)
    assert vector.policy is policy
    vector.set_kl_coef(0.2)  # a fixed β is replaced …
    assert vector.kl_coef == 0.2
    adaptive = RLHFVectorEnv(num_envs=2, kl_target=4.0, **kw)
    adaptive.set_kl_coef(0.3)  # … an adaptive one moves the controller
    assert adaptive.kl_coef == 0.3 and adaptive.kl_target == 4.0
    with pytest.raises(ValueError, match="kl_coef must be a number >= 0"):
        adaptive.set_kl_coef(-1)


def test_vector_env_without_autoreset_freezes_finished_rows(kw):
    """autoreset_mode='disabled': a finished row repeats its last observation with reward 0 and
    terminated=True, no model runs for it (the acting policy's decode batch shrinks), and
    reset(options={'reset_mask': …}) restarts it alone. Until a row finishes, both modes give
    the same steps."""
    B, steps = 4, 12
    actions = np.random.default_rng(0).integers(2, 60, size=(steps, B))
    actions[2, 1] = actions[5, 3] = 0  # EOS: rows 1 and 3 end early, the others at the limit
    policies, envs = [], []
    for mode in ("next_step", "disabled"):
        env = gym.make_vec("RLHF-v0", num_envs=B, autoreset_mode=mode, **kw)
        policy = LMPolicy(AutoModelForCausalLM.from_pretrained(kw["model"]), num_envs=B, seed=0)
        env.unwrapped.set_policy(policy)
        envs.append(env)
        policies.append(policy)
    assert envs[1].metadata["autoreset_mode"] == gym.vector.AutoresetMode.DISABLED
    last = envs[1].reset(seed=3)[0]
    envs[0].reset(seed=3)
    done = np.zeros(B, dtype=bool)
    for t in range(steps):
        (o0, r0, t0, _, _), (o1, r1, t1, _, _) = (env.step(actions[t]) for env in envs)
        for i in np.flatnonzero(~done):  # rows still in their first episode agree
            np.testing.assert_array_equal(o0["input_ids"][i], o1["input_ids"][i])
            assert r0[i] == pytest.approx(r1[i], abs=1e-5) and t0[i] == t1[i]
        for i in np.flatnonzero(done):  # finished rows are frozen
            np.testing.assert_array_equal(o1["input_ids"][i], last["input_ids"][i])
            assert r1[i] == 0.0 and t1[i]
        if t == 4:  # row 1 ended at step 2: out of the policy's decode batch since step 4
            assert policies[1].lm.slot[1] < 0 and policies[0].lm.slot[1] >= 0
            assert policies[1].lm.cache.layers[0].keys.shape[0] == B - 1
        done |= t1
        last = o1
        if done.all():
            break
    mask = np.zeros(B, dtype=bool)
    mask[1] = True
    o, info = envs[1].reset(options={"reset_mask": mask, "prompt_index": [1]})
    np.testing.assert_array_equal(o["input_ids"][[0, 2, 3]], last["input_ids"][[0, 2, 3]])
    assert info["_prompt_text"].tolist() == [False, True, False, False]
    assert info["prompt_text"][1] == envs[1].unwrapped.prompts[1]
    length = o["attention_mask"][1].sum()
    o, r, t, _, _ = envs[1].step(np.full(B, 7))
    assert (
        not t[1] and o["attention_mask"][1].sum() == length + 1 and o["input_ids"][1, length] == 7
    )
    assert t[[0, 2, 3]].all() and r[[0, 2, 3]].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "make, message",
    [
        (dict(autoreset_mode="same_step"), "autoreset_mode='same_step' is not one of"),
        (dict(), "options['reset_mask'] must be a numpy bool array of shape (2,)"),
    ],
)
def test_bad_autoreset_arguments(kw, make, message):
    import re

    with pytest.raises(ValueError, match=re.escape(message)):
        env = gym.make_vec("RLHF-v0", num_envs=2, **make, **kw)
        env.reset(seed=0)
        env.reset(options={"reset_mask": np.array([True, False, True])})
