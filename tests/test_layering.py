"""design.md's layering rule: the environment never imports agents, SB3, TensorBoard or a CLI."""

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
            assert not bad, f"{path.name} imports {name}: the env layer must not (design.md)"


def test_package_init_only_registers():
    names = imported_modules(Path(rlhf_gym.__file__))
    assert names <= {"gymnasium.envs.registration"}
