"""docs/design.md's layering rule: the environment never imports agents, SB3, TensorBoard or a
CLI, and nothing outside ``rlhf_gym/envs`` reads the environment's private parts."""

from __future__ import annotations

import ast
from pathlib import Path

import rlhf_gym

FORBIDDEN = (
    "rlhf_gym.agents",
    "rlhf_gym.cli",
    "stable_baselines3",
    "tensorboard",
    "torch.utils.tensorboard",
    "click",
    "typer",
    "argparse",
    "tqdm",
    "rich",
    "peft",  # LoRA's adapter-off reference reaches the env as a reference object
    "accelerate",  # several processes are the agents' business
)


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_envs_do_not_import_agents_or_tools():
    env_dir = Path(rlhf_gym.__file__).parent / "envs"
    files = sorted(env_dir.rglob("*.py"))
    assert len(files) >= 5
    for path in files:
        for name in imported_modules(path):
            bad = [f for f in FORBIDDEN if name == f or name.startswith(f + ".")]
            assert not bad, f"{path.name} imports {name}: the env layer must not (docs/design.md)"


def test_package_init_only_registers():
    names = imported_modules(Path(rlhf_gym.__file__))
    assert names <= {"gymnasium.envs.registration"}


# ---------------------------------------------------------------------- the environment surface
REPO = Path(rlhf_gym.__file__).parent.parent
ENVS = Path(rlhf_gym.__file__).parent / "envs"


def envs_private_names() -> set[str]:
    """Every private name the envs package defines: ``self._x`` attributes, ``_methods``,
    module-level ``_names`` and the private modules themselves."""
    names = {p.stem for p in ENVS.glob("_*.py") if p.stem != "__init__"}
    for path in ENVS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def outside_envs() -> list[Path]:
    files = [p for p in (REPO / "rlhf_gym").rglob("*.py") if ENVS not in p.parents]
    return (
        files + sorted((REPO / "benchmarks").glob("*.py")) + sorted((REPO / "tests").glob("*.py"))
    )


def test_nothing_outside_envs_reads_private_environment_names():
    private = envs_private_names()
    assert {"_engine", "_rngs", "_needs_reset"} <= private  # the scan sees the real names
    offences = []
    for path in outside_envs():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private:
                offences.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "rlhf_gym.envs"
            ):
                bad = [a.name for a in node.names if a.name.startswith("_")]
                if bad or "._" in node.module:
                    offences.append(f"{path.relative_to(REPO)}:{node.lineno} import {node.module}")
    assert not offences, "private environment names used outside rlhf_gym/envs: " + ", ".join(
        offences
    )


def test_agents_and_commands_use_only_the_public_surface(monkeypatch, tmp_path):
    """Run every native agent, evaluation and a checkpoint on the toy while both environment
    classes record any private attribute read from code outside rlhf_gym/envs."""
    import sys

    from rlhf_gym.agents import checkpoint
    from rlhf_gym.agents.ppo import PPO, PPOConfig
    from rlhf_gym.agents.q_learning import TabularQ, TabularQConfig
    from rlhf_gym.agents.soft_q import SoftQ, SoftQConfig
    from rlhf_gym.envs.rlhf_env import RLHFEnv, RLHFVectorEnv
    from rlhf_gym.evaluate import best_of_n, evaluate

    package = str(REPO / "rlhf_gym")
    reads: list[str] = []
    for cls in (RLHFEnv, RLHFVectorEnv):
        original = cls.__getattribute__

        def spy(self, name, _original=original):
            if name.startswith("_") and not name.startswith("__"):
                caller = sys._getframe(1).f_code.co_filename
                if caller.startswith(package) and not caller.startswith(str(ENVS)):
                    reads.append(f"{name} from {caller}:{sys._getframe(1).f_lineno}")
            return _original(self, name)

        monkeypatch.setattr(cls, "__getattribute__", spy)
    toy = dict(env_id="RLHFToy-v0", num_envs=4, total_episodes=8)
    ppo = PPO(PPOConfig(**toy, kl_target=1.0))
    ppo.train()
    ppo.load_state_dict(ppo.state_dict())
    checkpoint.save(tmp_path, ppo)
    SoftQ(SoftQConfig(**toy, batch_size=4)).train()
    TabularQ(TabularQConfig(total_episodes=8, num_envs=4, eval_every=4)).train()
    evaluate("RLHFToy-v0", episodes=4, num_envs=4)
    best_of_n("RLHFToy-v0", ns=(1, 2), num_envs=4)
    assert not reads, reads
