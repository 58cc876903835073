"""The helpers users reach for first work on every registered id: SB3's ``make_vec_env`` (which
asks for ``render_mode="rgb_array"``), PPO on it, ``RecordVideo``, ``RecordEpisodeStatistics``,
``gym.make_vec`` (sync and native) and Gymnasium's ``check_env`` with rendering."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import rlhf_gym
from rlhf_gym.envs.render import FRAME_HEIGHT, FRAME_WIDTH

FRAME = (FRAME_HEIGHT, FRAME_WIDTH, 3)
ASSISTANT = Path(rlhf_gym.__file__).parent / "data" / "default" / "assistant"


def ids() -> list:
    out = []
    for env_id in sorted(rlhf_gym._ENVS):
        marks = []
        if env_id == "RLHFHelpfulHarmless-v0" and not ASSISTANT.is_dir():
            reason = "the embedded assistant model is not built (rlhf-gym build-default)"
            marks = [pytest.mark.skip(reason=reason)]
        out.append(pytest.param(env_id, marks=marks))
    return out


def small(env_id: str) -> dict:
    """Short episodes (the toy fixes its own length)."""
    return {} if env_id == "RLHFToy-v0" else {"max_new_tokens": 4}


def play(env: gym.Env, seed: int = 0) -> tuple[list, float, int]:
    """One episode with random tokens: the rendered frames, the return and the length."""
    env.action_space.seed(seed)
    env.reset(seed=seed)
    frames, ret, steps, done = [env.render()], 0.0, 0, False
    while not done:
        _, reward, done, truncated, info = env.step(env.action_space.sample())
        assert not truncated
        frames.append(env.render())
        ret, steps = ret + reward, steps + 1
    return frames, ret, steps


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no acting policy")
        yield


@pytest.mark.parametrize("env_id", ids())
def test_make_vec_env_as_sb3_documents_it(env_id):
    from stable_baselines3.common.env_util import make_vec_env

    vec_env = make_vec_env(env_id, n_envs=4)  # asks every env for render_mode="rgb_array"
    assert vec_env.render_mode == "rgb_array"
    obs = vec_env.reset()
    assert obs["input_ids"].shape[0] == 4
    for _ in range(3):
        actions = np.array([vec_env.action_space.sample() for _ in range(4)])
        obs, rewards, dones, infos = vec_env.step(actions)
        assert rewards.shape == (4,) and len(infos) == 4
    images = vec_env.get_images()
    assert len(images) == 4 and all(im.shape == FRAME and im.dtype == np.uint8 for im in images)
    vec_env.close()


def kl_spy(kls: list[float]):
    from stable_baselines3.common.callbacks import BaseCallback

    class Spy(BaseCallback):
        def _on_step(self) -> bool:
            kls.extend(float(i["kl"]) for i in self.locals["infos"] if "kl" in i)
            return True

    return Spy()


@pytest.mark.parametrize("env_id", ["RLHFToy-v0", "RLHF-v0"])
def test_sb3_ppo_multiinput_on_make_vec_env(env_id):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from rlhf_gym.agents.sb3 import AttachPolicyCallback

    vec_env = make_vec_env(env_id, n_envs=4, env_kwargs=small(env_id), seed=0)
    model = PPO("MultiInputPolicy", vec_env, n_steps=16, batch_size=32, n_epochs=1, seed=0)
    model.learn(64)
    assert model.num_timesteps == 64
    kls: list[float] = []  # attached, the env's KL term sees the MLP policy
    model.learn(64, callback=[AttachPolicyCallback(), kl_spy(kls)], reset_num_timesteps=False)
    assert model.num_timesteps == 128 and kls and max(kls) > 0
    vec_env.close()


def test_render_rgb_array_frames(tiny_kw):
    env = gym.make("RLHF-v0", render_mode="rgb_array", **tiny_kw(max_new_tokens=3))
    blank = env.unwrapped.render()  # before reset: a frame that says so
    assert blank.shape == FRAME and blank.dtype == np.uint8
    frames, _, steps = play(env)
    assert len({f.shape for f in frames}) == 1 and frames[0].shape == FRAME
    assert all(f.dtype == np.uint8 for f in frames)
    pairs = zip(frames, frames[1:], strict=False)
    assert all(not np.array_equal(a, b) for a, b in pairs)  # a new frame every token
    # render reads, never changes: the same frame twice, and the random stream is untouched
    assert np.array_equal(env.render(), frames[-1])
    ansi = gym.make("RLHF-v0", render_mode="ansi", **tiny_kw(max_new_tokens=3))
    ansi.reset(seed=5)
    env.reset(seed=5)
    for _ in range(2):
        env.render()
        a, b = env.step(1)[0], ansi.step(1)[0]
        assert np.array_equal(a["input_ids"], b["input_ids"])
    assert np.array_equal(env.reset()[0]["input_ids"], ansi.reset()[0]["input_ids"])
    assert "\u2502" in ansi.render()


def test_unknown_render_mode_names_the_allowed_ones(tiny_kw):
    from rlhf_gym.envs.rlhf_env import RLHFEnv, RLHFVectorEnv

    for make in (RLHFEnv, lambda **kw: RLHFVectorEnv(2, **kw)):
        with pytest.raises(ValueError, match="'ansi', 'rgb_array'"):
            make(render_mode="human_list", **tiny_kw())
    assert RLHFEnv.metadata["render_modes"] == ["ansi", "rgb_array"]


@pytest.mark.parametrize("env_id", ["RLHFToy-v0", "RLHF-v0"])
def test_gym_make_offers_rgb_array_list(env_id):
    """gym.make reads the entry point's render modes (the toy's is a function) and wraps
    "rgb_array" in RenderCollection."""
    env = gym.make(env_id, render_mode="rgb_array_list", **small(env_id))
    frames, _, _ = play(env)
    assert frames[-1] and len(frames[-1]) >= 1 and frames[-1][-1].shape == FRAME


@pytest.mark.parametrize("env_id", ids())
def test_record_video_writes_an_mp4(env_id, tmp_path):
    pytest.importorskip("moviepy")
    from gymnasium.wrappers import RecordVideo

    env = gym.make(env_id, render_mode="rgb_array", **small(env_id))
    env = RecordVideo(
        env, str(tmp_path / "videos"), episode_trigger=lambda e: True, disable_logger=True
    )
    play(env)
    env.close()
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0


@pytest.mark.parametrize("env_id", ids())
def test_record_episode_statistics(env_id):
    from gymnasium.wrappers import RecordEpisodeStatistics

    env = RecordEpisodeStatistics(gym.make(env_id, **small(env_id)))
    env.reset(seed=0)
    done, ret, steps = False, 0.0, 0
    while not done:
        _, reward, done, _, info = env.step(env.action_space.sample())
        ret, steps = ret + reward, steps + 1
    assert info["episode"]["l"] == steps
    assert info["episode"]["r"] == pytest.approx(ret)


@pytest.mark.parametrize("env_id", ids())
def test_make_vec_sync_matches_the_native_vector_env(env_id):
    kw = dict(num_envs=3, render_mode="rgb_array", **small(env_id))
    sync = gym.make_vec(env_id, vectorization_mode="sync", **kw)
    native = gym.make_vec(env_id, **kw)
    assert isinstance(sync, gym.vector.SyncVectorEnv)
    assert type(native.unwrapped).__name__ == "RLHFVectorEnv"
    obs_s, _ = sync.reset(seed=0)
    obs_n, _ = native.reset(seed=0)
    rng = np.random.default_rng(0)
    n = native.unwrapped.vocab_size
    for _ in range(7):  # past the first episode's end: both autoreset on the next step
        np.testing.assert_array_equal(obs_s["input_ids"], obs_n["input_ids"])
        actions = rng.integers(n, size=3)
        obs_s, r_s, term_s, _, _ = sync.step(actions)
        obs_n, r_n, term_n, _, _ = native.step(actions)
        np.testing.assert_array_equal(term_s, term_n)
        np.testing.assert_allclose(r_s, r_n, rtol=1e-5, atol=1e-6)
    for frames in (sync.render(), native.render()):
        assert isinstance(frames, tuple) and len(frames) == 3
        assert all(f.shape == FRAME and f.dtype == np.uint8 for f in frames)
    sync.close()
    native.close()


def test_vector_wrappers_on_the_native_vector_env():
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    env = RecordEpisodeStatistics(gym.make_vec("RLHFToy-v0", num_envs=4, render_mode="ansi"))
    env.reset(seed=0)
    assert all(isinstance(s, str) for s in env.render())
    ended = 0
    for _ in range(4):  # the toy's episodes last at most 3 steps
        *_, term, _, info = env.step(env.action_space.sample())
        if "episode" in info:
            ended += int(info["_episode"].sum())
    assert ended >= 4
    assert gym.make_vec("RLHFToy-v0", num_envs=2).render() is None


@pytest.mark.parametrize("env_id", ids())
def test_gymnasium_check_env_with_rgb_array(env_id):
    from gymnasium.utils.env_checker import check_env

    env = gym.make(env_id, render_mode="rgb_array", **small(env_id))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)  # renders, and makes one env per declared render mode
    assert not [str(w.message) for w in caught if "render" in str(w.message).lower()]
