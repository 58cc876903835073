"""Checkpoints: the policy in Hugging Face format plus the trainer state, safe to share and to kill.

Layout of ``<run>/checkpoints/update_000050/``::

    policy/                    save_pretrained() of the policy and its tokenizer: loadable as
                               gym.make("RLHF-v0", model=".../policy") and by from_pretrained
                               (with LoRA, an agent's ``peft_model``, the adapter only:
                               rlhf_gym.agents.lora)
    trainer_state.safetensors  every tensor of the agent's ``state_dict()``: optimizer moments,
                               critic / target weights, RNG states (uint8 tensors)
    trainer_state.json         everything else (update index, KL coefficient, config, replay
                               buffer, counters …) and where each tensor goes (see flatten())
    checkpoint.json            agent name, model fingerprint, update index and the size of every
                               file above (written last: its presence marks a complete checkpoint)

``<run>/checkpoints/latest`` is a text file naming the newest checkpoint.

**Safe to share.** Loading never unpickles: safetensors holds raw tensor bytes and JSON holds
plain data, so a checkpoint from someone else cannot run code. Checkpoints written before this
format hold a pickled ``trainer_state.pt`` instead; :func:`load` refuses them unless called with
``allow_pickle=True`` (``rlhf-gym train --allow-pickle true``), which unpickles the file with
``torch.load(weights_only=False)``: only for files you trust.

**Safe to kill.** A checkpoint is written into a temporary sibling directory (``.tmp-…``), every
file and directory is fsync'ed, and the directory is renamed into place with ``os.replace``;
``latest`` is replaced the same way (temporary file, fsync, ``os.replace``, fsync of the
directory), only after the checkpoint it names is complete on disk. A process killed at any
moment, even with SIGKILL, leaves ``latest`` naming a complete checkpoint (and at worst a
``.tmp-…`` leftover, removed by the next save once its process is gone). :func:`resolve`
checks what ``latest`` names before anything is loaded: a missing, truncated or corrupt file
is a ``ValueError`` that names the file and the problem.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

MARKER = "checkpoint.json"
STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
LEGACY_STATE = "trainer_state.pt"
FORMAT = 2
"""``checkpoint.json``'s ``"format"``: 2 is safetensors + JSON; absent means the pickle format."""

_STATE_KIND = "rlhf-gym trainer state"
_ALLOW_PICKLE_HINT = (
    "pass --allow-pickle true to `rlhf-gym train` (checkpoint.load(..., allow_pickle=True)) "
    "to unpickle it anyway: that runs any code the file contains, so only for a checkpoint "
    "you trust"
)


# ---------------------------------------------------------------------- flatten / unflatten
Skeleton = Any
"""JSON-compatible data: ``None``, ``bool``, ``int``, ``str``, finite ``float``, lists, and
objects with string keys, some of them tagged (a one-key object whose key is one of
``__tensor__``, ``__tuple__``, ``__dict__``, ``__float__``, ``__ndarray__``, ``__numpy__``)."""

_TAGS = frozenset(("__tensor__", "__tuple__", "__dict__", "__float__", "__ndarray__", "__numpy__"))


def flatten(state: Any) -> tuple[Skeleton, dict[str, torch.Tensor]]:
    """Split a nested state into a JSON skeleton and ``{dotted path: tensor}``.

    ``state`` may nest ``dict`` (any keys that are themselves plain values: ``str``, ``int``,
    tuples …), ``list`` and ``tuple`` of ``None``, ``bool``, ``int``, ``float`` (also inf and
    nan), ``str``, ``torch.Tensor``, numpy arrays and numpy scalars: what ``state_dict()`` of a
    module or an optimizer, ``Generator.get_state()``, ``random.getstate()`` and
    ``np.random.get_state()`` return. In the skeleton, each tensor becomes
    ``{"__tensor__": name}``, a tuple ``{"__tuple__": [...]}``, a dict whose keys are not all
    strings (or that uses a tag as a key) ``{"__dict__": [[key, value], ...]}``, a non-finite
    float ``{"__float__": "nan"}``, a numpy array ``{"__ndarray__": {"dtype", "shape",
    "data"}}`` (data as a flat list) and a numpy scalar ``{"__numpy__": {"dtype", "value"}}``;
    everything else is itself. Tensor names are the dotted path of keys and indices
    (``optimizer.state.0.exp_avg``), made unique if two paths spell the same. Tensors come
    back detached, on the CPU and contiguous; tensors that share memory are copied, so the
    result can be written by ``safetensors.torch.save_file``.

    :func:`unflatten` inverts it exactly (dict key order included; an ``OrderedDict`` comes
    back as a ``dict``). Any other type is a ``TypeError`` naming its path.
    """
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()

    def tensor(t: torch.Tensor, path: str) -> Skeleton:
        if t.is_sparse or t.is_quantized or t.is_complex():
            raise TypeError(
                f"flatten: {path or '<root>'}: cannot store a {t.dtype} {t.layout} tensor"
            )
        t = t.detach().cpu()
        if t.untyped_storage().data_ptr() in storages:  # safetensors refuses shared memory
            t = t.clone(memory_format=torch.contiguous_format)
        elif not t.is_contiguous():
            t = t.contiguous()
        if t.untyped_storage().data_ptr():  # 0: empty
            storages.add(t.untyped_storage().data_ptr())
        name, n = path or "tensor", 1
        while name in tensors:
            name, n = f"{path}~{n}", n + 1
        tensors[name] = t
        return {"__tensor__": name}

    def walk(x: Any, path: str) -> Skeleton:
        join = (lambda k: f"{path}.{k}") if path else str
        if isinstance(x, np.generic):  # before float: np.float64 is a float
            if x.dtype.kind not in "biuf":
                raise TypeError(f"flatten: {path or '<root>'}: numpy scalars of {x.dtype}")
            return {"__numpy__": {"dtype": x.dtype.str, "value": walk(x.item(), path)}}
        if x is None or isinstance(x, (bool, int, str)):
            return x
        if isinstance(x, float):
            return x if math.isfinite(x) else {"__float__": repr(x)}
        if isinstance(x, torch.Tensor):
            return tensor(x, path)
        if isinstance(x, np.ndarray):
            if x.dtype.kind not in "biuf":
                raise TypeError(f"flatten: {path or '<root>'}: numpy arrays of {x.dtype}")
            data = [walk(v, path) for v in x.ravel().tolist()]
            return {"__ndarray__": {"dtype": x.dtype.str, "shape": list(x.shape), "data": data}}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, join(i)) for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, join(i)) for i, v in enumerate(x)]
        if isinstance(x, Mapping):
            if all(isinstance(k, str) for k in x) and not _TAGS.intersection(x):
                return {k: walk(v, join(k)) for k, v in x.items()}
            pairs = []
            for k, v in x.items():
                key = walk(k, join(k))
                if _has_tensor(key):
                    raise TypeError(f"flatten: {join(k)}: a tensor as a dict key")
                pairs.append([key, walk(v, join(k))])
            return {"__dict__": pairs}
        kind = f"{type(x).__module__}.{type(x).__qualname__}"
        raise TypeError(
            f"flatten: {path or '<root>'}: cannot store a {kind}"
            " (tensors, numpy arrays, numbers, strings, None, lists, tuples and dicts only)"
        )

    return walk(state, ""), tensors


def unflatten(skeleton: Skeleton, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Rebuild the state :func:`flatten` split: tensors are looked up by name in ``tensors``.

    A skeleton that is not one :func:`flatten` writes (an unknown tag, a tensor name missing
    from ``tensors``, a malformed array …) is a ``ValueError``.
    """

    def walk(x: Skeleton) -> Any:
        if isinstance(x, list):
            return [walk(v) for v in x]
        if not isinstance(x, dict):
            return x
        if len(x) == 1 and next(iter(x)) in _TAGS:
            ((tag, body),) = x.items()
            if tag == "__tensor__":
                if not isinstance(body, str) or body not in tensors:
                    raise ValueError(f"the tensor {body!r} is missing")
                return tensors[body]
            if tag == "__tuple__" and isinstance(body, list):
                return tuple(walk(v) for v in body)
            if tag == "__dict__" and isinstance(body, list):
                if not all(isinstance(p, list) and len(p) == 2 for p in body):
                    raise ValueError("a __dict__ entry is not a [key, value] pair")
                return {_hashable(walk(k)): walk(v) for k, v in body}
            if tag == "__float__" and body in ("nan", "inf", "-inf"):
                return float(body)
            if tag == "__ndarray__" and isinstance(body, dict):
                try:
                    data = [walk(v) for v in body["data"]]
                    return np.array(data, dtype=np.dtype(body["dtype"])).reshape(body["shape"])
                except (KeyError, TypeError, ValueError) as e:
                    raise ValueError(f"a malformed __ndarray__: {e}") from None
            if tag == "__numpy__" and isinstance(body, dict):
                try:
                    return np.dtype(body["dtype"]).type(walk(body["value"]))
                except (KeyError, TypeError, ValueError) as e:
                    raise ValueError(f"a malformed __numpy__: {e}") from None
            raise ValueError(f"a malformed {tag} entry")
        return {k: walk(v) for k, v in x.items()}

    return walk(skeleton)


def _has_tensor(skeleton: Skeleton) -> bool:
    if isinstance(skeleton, list):
        return any(_has_tensor(v) for v in skeleton)
    if isinstance(skeleton, dict):
        return "__tensor__" in skeleton or any(_has_tensor(v) for v in skeleton.values())
    return False


def _hashable(key: Any) -> Any:
    if isinstance(key, list):  # cannot come from flatten, but keep a clear error
        raise ValueError("a __dict__ key is a list")
    return key


# ---------------------------------------------------------------------- the trainer state
def save_state(state: Mapping[str, Any], directory: str | Path) -> None:
    """Write an agent's ``state_dict()`` as ``trainer_state.safetensors`` + ``trainer_state.json``
    in ``directory`` (not fsync'ed: :func:`save` does that for the whole checkpoint)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    skeleton, tensors = flatten(dict(state))
    save_file(tensors, str(directory / STATE_TENSORS), metadata={"format": _STATE_KIND})
    doc = {"format": _STATE_KIND, "version": 1, "tensors": sorted(tensors), "state": skeleton}
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    (directory / STATE_JSON).write_text(text, encoding="utf-8")


def load_state(directory: str | Path, allow_pickle: bool = False) -> dict[str, Any]:
    """Read the trainer state of the checkpoint ``directory`` (never unpickles, unless
    ``allow_pickle`` and the checkpoint only has the old ``trainer_state.pt``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    if _is_legacy(directory):
        if not allow_pickle:
            raise ValueError(_legacy_message(directory))
        return torch.load(directory / LEGACY_STATE, weights_only=False, map_location="cpu")
    doc = _read_state_json(directory / STATE_JSON)
    _check_safetensors(directory / STATE_TENSORS, doc["tensors"])
    try:
        tensors = load_file(str(directory / STATE_TENSORS))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(
            f"{directory / STATE_TENSORS}: not a readable safetensors file: {e}"
        ) from None
    try:
        return unflatten(doc["state"], tensors)
    except ValueError as e:
        raise ValueError(f"{directory / STATE_JSON}: {e}") from None


def _read_state_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"{path}: the file is missing")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: bad JSON (not UTF-8: {e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: bad JSON ({e})") from None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != _STATE_KIND
        or not isinstance(doc.get("tensors"), list)
        or "state" not in doc
    ):
        raise ValueError(f"{path}: not an rlhf-gym trainer state (format, tensors, state)")
    return doc


_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


def _check_safetensors(path: Path, names: list[str] | None = None) -> None:
    """Check the header of a safetensors file against the file's size (and expected names):
    truncation or garbage is a ``ValueError`` naming the file, not an error from the parser."""
    if not path.is_file():
        raise ValueError(f"{path}: the file is missing")
    size = path.stat().st_size
    bad = f"{path}: bad safetensors header"
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{bad} (the file has {size} bytes: truncated)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise ValueError(f"{bad} (a {n}-byte header in a {size}-byte file: truncated?)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{bad} ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{bad} (not a JSON object)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
        ):
            raise ValueError(f"{bad} (no data offsets for {name!r})")
        end = max(end, offsets[1])
    if 8 + n + end != size:
        raise ValueError(
            f"{path}: truncated or padded: its header describes {8 + n + end} bytes, "
            f"the file has {size}"
        )
    if names is not None:
        found = sorted(k for k in header if k != "__metadata__")
        if found != sorted(names):
            missing = sorted(set(names) - set(found))[:3]
            raise ValueError(
                f"{path}: does not hold the tensors {STATE_JSON} names"
                + (f" (missing {', '.join(missing)})" if missing else "")
            )


def _is_legacy(directory: Path) -> bool:
    return (directory / LEGACY_STATE).is_file() and not (directory / STATE_JSON).exists()


def _legacy_message(directory: Path) -> str:
    return (
        f"checkpoint {directory} holds its trainer state in the old pickle format "
        f"({LEGACY_STATE}), and loading a pickle can run arbitrary code; {_ALLOW_PICKLE_HINT}"
    )


# ---------------------------------------------------------------------- save
def fingerprint(model: Any) -> dict[str, Any]:
    """What must match between a checkpoint and the model it is resumed into."""
    cfg = model.config
    return {
        "model_type": cfg.model_type,
        "vocab_size": int(cfg.vocab_size),
        "hidden_size": int(cfg.hidden_size),
        "num_layers": int(getattr(cfg, "num_hidden_layers", getattr(cfg, "n_layer", 0))),
    }


def save(run_dir: str | Path, agent: Any) -> Path:
    """Write a checkpoint of ``agent`` (``policy``, ``env.tokenizer``, ``state_dict()``,
    ``update_idx``, ``episodes_seen``, ``agent_name``) under ``run_dir``; point ``latest`` at
    it. Atomic and durable: see the module docstring. Returns the checkpoint directory."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root)
    name = f"update_{agent.update_idx:06d}"
    final, tmp = root / name, root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    # With LoRA the PeftModel saves the adapter only (its base named by path, as peft
    # recorded it when the adapter was added); otherwise the whole policy.
    (getattr(agent, "peft_model", None) or agent.policy).save_pretrained(tmp / "policy")
    agent.env.tokenizer.save_pretrained(tmp / "policy")
    save_state(agent.state_dict(), tmp)
    meta = {
        "format": FORMAT,
        "agent": agent.agent_name,
        "update": agent.update_idx,
        "episodes": agent.episodes_seen,
        "fingerprint": fingerprint(agent.policy),
        "files": {
            p.relative_to(tmp).as_posix(): p.stat().st_size
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        },
    }
    (tmp / MARKER).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    _fsync_tree(tmp)
    _install(root, tmp, final)
    return final


def _install(root: Path, tmp: Path, final: Path) -> None:
    """Rename the complete ``tmp`` to ``final`` and point ``latest`` at it, so that ``latest``
    names a complete checkpoint at every instant (also when ``final`` already exists)."""
    pid = os.getpid()
    if final.exists():
        old = root / f".old-{final.name}-{pid}"
        shutil.rmtree(old, ignore_errors=True)
        if _read_latest(root) == final.name:
            # `latest` must not name final while it is swapped: point it at a hard-linked
            # copy of the old checkpoint meanwhile
            keep = root / f".keep-{final.name}-{pid}"
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(final, keep, copy_function=_link_or_copy)
            _fsync_tree(keep)
            _fsync_dir(root)
            _write_latest(root, keep.name)
        os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(root)
        _write_latest(root, final.name)
        for leftover in (old, root / f".keep-{final.name}-{pid}"):
            shutil.rmtree(leftover, ignore_errors=True)
    else:
        os.replace(tmp, final)
        _fsync_dir(root)
        _write_latest(root, final.name)


def _write_latest(root: Path, name: str) -> None:
    tmp = root / f".latest-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / "latest")
    _fsync_dir(root)


def _read_latest(root: Path) -> str | None:
    try:
        return (root / "latest").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _fsync_tree(directory: Path) -> None:
    """fsync every file under ``directory``, then every directory, deepest first."""
    dirs = []
    for here, _, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(here, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        dirs.append(here)
    for here in reversed(dirs):
        _fsync_dir(Path(here))


def _fsync_dir(directory: Path) -> None:
    """fsync a directory, so that the names created or renamed in it survive a power cut
    (a no-op where directories cannot be opened, as on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_LEFTOVER = re.compile(r"^\.(?:tmp|old|keep)-update_\d+-(\d+)$|^\.latest-(\d+)$")


def _remove_leftovers(root: Path) -> None:
    """Remove what killed saves left (``.tmp-…``, ``.old-…``, ``.keep-…``, ``.latest-…``):
    only those of processes that no longer run, so a concurrent save is left alone."""
    if os.name != "posix":
        return
    latest = _read_latest(root)
    for entry in root.iterdir():
        m = _LEFTOVER.match(entry.name)
        if not m or entry.name == latest:  # a killed swap may leave `latest` naming .keep-…
            continue
        pid = int(m.group(1) or m.group(2))
        if pid == os.getpid() or _alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------- resolve and load
def resolve(path: str | Path, allow_pickle: bool = False) -> Path:
    """The complete checkpoint that ``path`` names: a checkpoint directory, a ``checkpoints/``
    directory or a run directory (the last two through ``latest``).

    The checkpoint is validated before anything is loaded: its marker, the files it lists and
    their sizes, the JSON and the safetensors headers. A problem is a ``ValueError`` naming the
    file and what is wrong; a checkpoint in the old pickle format is refused unless
    ``allow_pickle``. A missing ``path`` is a ``FileNotFoundError``.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"--resume {path}: no such directory")
    for root in (p / "checkpoints", p):
        latest = root / "latest"
        if latest.is_file():
            name = _read_latest(root)
            if not name or name in (".", "..") or "/" in name or "\\" in name:
                raise ValueError(f"--resume {path}: {latest} does not name a checkpoint: {name!r}")
            p = root / name
            if not p.is_dir():
                raise ValueError(
                    f"--resume {path}: {latest} names {p}, which does not exist{_hint(root, p)}"
                )
            break
    if not (p / MARKER).is_file():
        raise ValueError(
            f"--resume {path}: {p} is not a complete checkpoint (no {MARKER}); expected a "
            "directory written by `rlhf-gym train` (…/checkpoints/update_NNNNNN), its "
            "checkpoints/ folder, or the run directory" + _hint(p.parent, p)
        )
    try:
        validate(p, allow_pickle=allow_pickle)
    except ValueError as e:
        raise ValueError(f"--resume {path}: {e}{_hint(p.parent, p)}") from None
    return p


def validate(checkpoint_dir: str | Path, allow_pickle: bool = False) -> dict[str, Any]:
    """Check that ``checkpoint_dir`` is a complete, uncorrupted checkpoint; return its
    ``checkpoint.json``. A ``ValueError`` names the first problem found."""
    p = Path(checkpoint_dir)
    marker = p / MARKER
    if not marker.is_file():
        raise ValueError(f"checkpoint {p} is incomplete: {MARKER} is missing")
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{marker}: bad JSON ({e})") from None
    if not isinstance(meta, dict) or not {"agent", "update", "fingerprint"} <= meta.keys():
        raise ValueError(
            f"{marker}: not an rlhf-gym checkpoint marker (agent, update, fingerprint)"
        )
    if "format" not in meta:  # written before the safetensors format
        for part in ("policy/config.json", LEGACY_STATE):
            if not (p / part).is_file():
                raise ValueError(f"checkpoint {p} is partial, {part} is missing")
        if not allow_pickle:
            raise ValueError(_legacy_message(p))
        return meta
    if meta["format"] != FORMAT:
        raise ValueError(
            f"{marker}: checkpoint format {meta['format']!r}; this rlhf-gym reads format {FORMAT}"
        )
    files = meta.get("files")
    if not isinstance(files, dict):
        raise ValueError(f"{marker}: no list of files")
    for part in ("policy/config.json", STATE_JSON, STATE_TENSORS):
        if part == "policy/config.json" and "policy/adapter_config.json" in files:
            continue  # a LoRA adapter (rlhf_gym.agents.lora) instead of a whole model
        if part not in files:
            raise ValueError(f"{marker}: does not list {part}")
    for part, size in files.items():
        f = p / part
        if not f.is_file():
            raise ValueError(f"checkpoint {p} is partial, {part} is missing")
        if f.stat().st_size != size:
            raise ValueError(
                f"{f}: truncated or changed: {f.stat().st_size} bytes, {MARKER} says {size}"
            )
        if part.endswith(".safetensors"):
            _check_safetensors(f)
    doc = _read_state_json(p / STATE_JSON)
    _check_safetensors(p / STATE_TENSORS, doc["tensors"])
    return meta


def _hint(root: Path, bad: Path) -> str:
    """``"; the newest complete checkpoint there is …"`` (or nothing) for an error message."""
    try:
        candidates = sorted(
            (d for d in root.iterdir() if d.name.startswith("update_") and d != bad), reverse=True
        )
    except OSError:
        return ""
    for d in candidates:
        with contextlib.suppress(ValueError, OSError):
            validate(d, allow_pickle=True)
            return f"; the newest complete checkpoint there is {d}"
    return ""


def load(path: str | Path, agent: Any, allow_pickle: bool = False) -> Path:
    """Restore ``agent`` (already built from the same config) from a checkpoint; return its
    directory. Never unpickles, unless ``allow_pickle`` and the checkpoint is in the old
    ``trainer_state.pt`` format (``torch.load(weights_only=False)``: trusted files only)."""
    p = resolve(path, allow_pickle=allow_pickle)
    meta = json.loads((p / MARKER).read_text(encoding="utf-8"))
    if meta["agent"] != agent.agent_name:
        raise ValueError(
            f"--resume {path}: the checkpoint is from agent {meta['agent']!r}, "
            f"not {agent.agent_name!r}"
        )
    mine = fingerprint(agent.policy)
    if meta["fingerprint"] != mine:
        raise ValueError(
            f"--resume {path}: the checkpoint is from another model "
            f"({meta['fingerprint']}) than this run's ({mine})"
        )
    state = load_state(p, allow_pickle=allow_pickle)
    _load_policy(agent, p / "policy")
    agent.load_state_dict(state)
    return p


def _load_policy(agent: Any, directory: Path) -> None:
    """Load a checkpoint's ``policy/`` into ``agent``'s policy in place: the whole model, or with
    LoRA (``agent.peft_model``) the adapter's weights; a clear error when they do not match."""
    from transformers import AutoModelForCausalLM

    from rlhf_gym.agents import lora

    peft_model = getattr(agent, "peft_model", None)
    if (peft_model is None) == lora.is_adapter(directory):
        saved, mine = (
            ("a LoRA adapter", "full fine-tuning")
            if peft_model is None
            else ("a whole model", f"LoRA (lora_r={peft_model.peft_config['default'].r})")
        )
        raise ValueError(f"{directory} holds {saved}, but this run uses {mine}")
    if peft_model is not None:
        lora.load_adapter_weights(peft_model, directory)
        return
    saved_model = AutoModelForCausalLM.from_pretrained(directory)
    agent.policy.load_state_dict(saved_model.state_dict())
