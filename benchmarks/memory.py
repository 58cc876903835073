"""Peak memory of a PPO update: full fine-tuning vs LoRA vs gradient checkpointing.

    python benchmarks/memory.py                                  # CPU: both models, every mode
    python benchmarks/memory.py --out benchmarks/results/memory_cpu.json
    python benchmarks/memory.py --device cuda --models gpt2-small-random --num-envs 64

Models: ``default`` (the embedded model, about 1 M parameters) and ``gpt2-small-random``
(GPT-2 small's body with random weights and the embedded 1,024-token vocabulary, 87 M
parameters: _models.py; saved once to a temporary directory). Modes:

* ``full``: every weight trains; the env's reference is a second, frozen copy of the model.
* ``lora``: LoRA adapters of rank ``--lora-r`` on every linear layer; the reference is the same
  weights with the adapter off (one copy; gradients and Adam state only for the adapters).
* ``checkpointing``: ``full`` with gradient checkpointing (layer activations recomputed in the
  backward pass).
* ``lora+checkpointing``: both.

Each (model, mode) runs in a fresh subprocess (``--one``; one thread: ``OMP_NUM_THREADS=1`` and
``torch.set_num_threads``), because a process's peak RSS is a high-water mark over its whole
life. The child builds the agent, runs one warm-up collect + update (the first Adam step
creates the optimizer state), then ``--updates`` measured collect + update cycles, and prints
one JSON line. The parent never imports torch and builds GPT-2 small in a child of its own, so
it stays small. ``--ppo-epochs`` is 1 by default (PPO's default is 4): every epoch repeats the
same minibatches, so the peak is the same and the benchmark 3× faster; the update's tokens/s
is then that of one epoch. With the defaults (``B = 16``, 32 new tokens, 4 minibatches) it takes
about 4 minutes on 2 CPU cores.

What "peak memory" is (CPU). The headline, ``peak_rss_mib``, is the peak resident set size of
the whole process (loading + collect + update: what a user of ``rlhf-gym train`` sees in
``top``), from the kernel's high-water mark ``VmHWM``. Not ``getrusage(RUSAGE_SELF).ru_maxrss``:
that one survives ``execve``, so a child starts at its parent's peak (a parent holding GPT-2
small put a 690 MiB floor under every child). The headline includes what every mode pays
alike: the interpreter, torch and transformers (``baseline_rss_mib``, after the imports: about
230 MiB), the reward model, the KV caches of the rollout, and what glibc's allocator keeps; so
ratios of the headline understate the ratios of the model-dependent memory (subtract
``baseline_rss_mib`` from both for those). Around each measured update the child also records:

* ``rss_before_update_mib``: the current RSS (``VmRSS``) just before the update;
* ``update_peak_rss_mib``: the peak RSS during the update. The high-water mark is reset just
  before the update (``/proc/self/clear_refs``, value 5; the earlier peak is read first, so
  ``peak_rss_mib`` still covers the whole life) and read after it. Where the reset is refused
  (``update_peak_isolated: false``) it is the whole-life mark: the peak may then have happened
  during loading or the warm-up, ``update_peak_over_before_mib`` is a lower bound and may be 0;
* ``update_peak_over_before_mib``: ``update_peak_rss_mib − rss_before_update_mib``, what the
  update adds to what is resident (activations, gradients, the loss's ``B·L·V`` tensors).
  Memory that glibc kept from the warm-up is already in ``rss_before_update_mib``, so this is
  what the update needs *beyond* it, and can be small even where the update sets the peak.

Each is the largest over the measured updates; ``baseline_rss_mib`` and
``rss_after_build_mib`` (after ``PPO(cfg)``) show where the rest came from. The allocator
matters on CPU: glibc serves large blocks from the heap once its dynamic mmap threshold has
grown, and keeps freed heap memory resident; ``--mmap-threshold BYTES`` fixes
``MALLOC_MMAP_THRESHOLD_`` in the children (e.g. 131072: big tensors are unmapped when freed)
to measure closer to the tensors' own peak.

With ``--device cuda`` the headline is ``peak_gpu_mib``: ``torch.cuda.max_memory_allocated()``
of the measured update (``reset_peak_memory_stats()`` just before it; the weights, optimizer
state and rollout already allocated count, as they are resident during the update);
``peak_gpu_process_mib`` is the whole-life peak of allocated memory; the RSS keys are there too.

Keys of each run (``runs``, a list): ``model``, ``mode``, ``lora_r``,
``gradient_checkpointing``, ``trainable_parameters`` (``requires_grad`` parameters of
``agent.model``: the policy and its value head), ``total_parameters`` (of ``agent.model``; the
``full`` modes' frozen reference copy is not in it), ``device``, ``gpu``, ``torch``, the memory
keys above, ``peak_mib`` (the headline: ``peak_rss_mib`` on CPU, ``peak_gpu_mib`` on CUDA),
``peak_vs_full`` (``peak_mib`` over that of ``full`` for the same model),
``collect_tokens_per_s`` and ``update_tokens_per_s`` (the rollout's response tokens,
``ro.tokens``, over the collect's / update's seconds; medians over the measured updates),
``response_tokens`` (median ``ro.tokens``), ``seconds`` (the child's wall time). Top level:
``lora_vs_full``, ``checkpointing_vs_full`` and ``lora+checkpointing_vs_full`` (headline peaks
of ``gpt2-small-random``; ``null`` where a run is missing), the same for the embedded model
under ``default`` (``default_lora_vs_full`` …), ``peak_key``, ``settings`` (the options),
``machine`` (torch version, device, GPU, CPU count, threads, platform) and ``seconds``.
``--json`` prints that object; ``--out PATH`` writes it (indented) to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {
    "full": (0, False),  # (LoRA on, gradient checkpointing)
    "lora": (1, False),
    "checkpointing": (0, True),
    "lora+checkpointing": (1, True),
}
MODELS = ("default", "gpt2-small-random")
MIB = 1024 * 1024


# ---------------------------------------------------------------------- child
def _rss_mib(field: str = "VmRSS") -> float:
    """``VmRSS`` (current) or ``VmHWM`` (high-water mark) of this process, in MiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def _hwm_mib() -> float:
    """The peak RSS of this process's memory since it started or since :func:`_reset_hwm`.

    ``VmHWM`` rather than ``getrusage(RUSAGE_SELF).ru_maxrss``: the latter survives
    ``execve``, so a child starts with its parent's peak (here: the parent that built
    GPT-2 small would set every child's floor). The two agree otherwise.
    """
    return _rss_mib("VmHWM")


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux ≥ 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_one(model: str, path: str, mode: str, args: argparse.Namespace) -> dict:
    """Build one agent, warm up, measure ``args.updates`` collect + update cycles."""
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    from rlhf_gym.agents.lora import trainable_parameters
    from rlhf_gym.agents.ppo import PPO, PPOConfig

    baseline = _rss_mib()
    lora, ckpt = MODES[mode]
    cfg = PPOConfig(
        model=path,
        num_envs=args.num_envs,
        total_episodes=args.total_episodes,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
        dtype=args.dtype,
        mixed_precision=args.mixed_precision,
        ppo_epochs=args.ppo_epochs,
        num_minibatches=args.num_minibatches,
        learning_rate=1e-5,
        lora_r=args.lora_r if lora else 0,
        gradient_checkpointing=ckpt,
    )
    agent = PPO(cfg)
    dev = agent.device
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    after_build = _rss_mib()
    ro = agent.collect()  # warm-up: the first update also creates Adam's state
    agent.update(ro)
    agent.update_idx += 1

    process_peak = _hwm_mib()  # read before any reset of the high-water mark
    isolated = True
    gpu_process_peak = torch.cuda.max_memory_allocated() / MIB if cuda else None
    before, update_peak, over, gpu_peak = [], [], [], []
    collect_tps, update_tps, tokens = [], [], []
    for _ in range(args.updates):
        sync()
        t0 = time.perf_counter()
        ro = agent.collect()
        sync()
        t1 = time.perf_counter()
        process_peak = max(process_peak, _hwm_mib())
        rss0 = _rss_mib()
        isolated = _reset_hwm() and isolated
        if cuda:
            gpu_process_peak = max(gpu_process_peak, torch.cuda.max_memory_allocated() / MIB)
            torch.cuda.reset_peak_memory_stats()
        t2 = time.perf_counter()
        agent.update(ro)
        sync()
        t3 = time.perf_counter()
        agent.update_idx += 1
        peak = _hwm_mib()  # the update's own peak if the reset worked, else the process's
        process_peak = max(process_peak, peak)
        before.append(rss0)
        update_peak.append(peak)
        over.append(max(0.0, peak - rss0))
        if cuda:
            gpu_peak.append(torch.cuda.max_memory_allocated() / MIB)
            gpu_process_peak = max(gpu_process_peak, gpu_peak[-1])
        tokens.append(ro.tokens)
        collect_tps.append(ro.tokens / (t1 - t0))
        update_tps.append(ro.tokens / (t3 - t2))
    out = {
        "model": model,
        "mode": mode,
        "lora_r": cfg.lora_r,
        "gradient_checkpointing": ckpt,
        "trainable_parameters": trainable_parameters(agent.model),
        "total_parameters": sum(p.numel() for p in agent.model.parameters()),
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if cuda else None,
        "torch": torch.__version__,
        "baseline_rss_mib": baseline,
        "rss_after_build_mib": after_build,
        "peak_rss_mib": process_peak,
        "rss_before_update_mib": max(before),
        "update_peak_rss_mib": max(update_peak),
        "update_peak_over_before_mib": max(over),
        "update_peak_isolated": isolated,
        "collect_tokens_per_s": statistics.median(collect_tps),
        "update_tokens_per_s": statistics.median(update_tps),
        "response_tokens": statistics.median(tokens),
    }
    if cuda:
        out["peak_gpu_mib"] = max(gpu_peak)
        out["peak_gpu_process_mib"] = gpu_process_peak
    out["seconds"] = time.perf_counter() - t_start
    return out


# ---------------------------------------------------------------------- parent
def child_env(args: argparse.Namespace) -> dict[str, str]:
    """The children's environment: ``args.threads`` threads, glibc's mmap threshold if set."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(args.threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    return env


def run_child(cmd: list[str], env: dict[str, str], what: str) -> str:
    """Run ``this script + cmd`` in a fresh interpreter; its stdout's last line."""
    proc = subprocess.run([sys.executable, __file__, *cmd], capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"{what}: the child process failed (rc {proc.returncode})")
    return lines[-1]


def ratio(runs: list[dict], model: str, mode: str) -> float | None:
    """``peak_mib`` of ``mode`` over that of ``full``, for ``model`` (None if either is absent)."""
    peak = {r["mode"]: r["peak_mib"] for r in runs if r["model"] == model}
    if mode not in peak or "full" not in peak:
        return None
    return peak[mode] / peak["full"]


def table(runs: list[dict], peak_key: str) -> str:
    head = (
        f"{'model':<18} {'mode':<19} {'peak MiB':>9} {'x full':>7} {'before':>8} "
        f"{'upd +MiB':>8} {'trained':>11} {'total':>11} {'collect t/s':>11} {'update t/s':>10}"
    )
    rows = [head, "-" * len(head)]
    for r in runs:
        x = "" if r["peak_vs_full"] is None else f"{r['peak_vs_full']:.2f}"
        rows.append(
            f"{r['model']:<18} {r['mode']:<19} {r[peak_key]:>9.0f} {x:>7} "
            f"{r['rss_before_update_mib']:>8.0f} {r['update_peak_over_before_mib']:>8.0f} "
            f"{r['trainable_parameters']:>11,} {r['total_parameters']:>11,} "
            f"{r['collect_tokens_per_s']:>11.0f} {r['update_tokens_per_s']:>10.0f}"
        )
    return "\n".join(rows)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + str(MODELS))
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + str(list(MODES)))
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--total-episodes", type=int, default=1000, help="budget for the lr annealing")
    p.add_argument("--ppo-epochs", type=int, default=1, help="1: the peak of 4 is the same")
    p.add_argument("--num-minibatches", type=int, default=4)
    p.add_argument("--updates", type=int, default=2, help="measured updates after the warm-up")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--mixed-precision", default="no")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each measurement")
    p.add_argument(
        "--mmap-threshold",
        type=int,
        help="glibc MALLOC_MMAP_THRESHOLD_ (bytes) in the children; default: glibc's own",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", type=Path, help="write the JSON object to this file")
    p.add_argument("--one", nargs=3, metavar=("MODEL", "PATH", "MODE"), help=argparse.SUPPRESS)
    p.add_argument("--make-gpt2", metavar="DIR", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(*args.one, args)))
        return {}
    if args.make_gpt2:  # in a child too: the parent stays small (its RSS is no child's floor)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _models import gpt2_small_random

        print(gpt2_small_random(Path(args.make_gpt2)))
        return {}
    models = [m for m in args.models.split(",") if m]
    modes = [m for m in args.modes.split(",") if m]
    if not models or not modes:
        raise SystemExit("--models and --modes need at least one entry each")
    for name, known in ((models, MODELS), (modes, list(MODES))):
        bad = [x for x in name if x not in known]
        if bad:
            raise SystemExit(f"unknown {bad}; choose from {list(known)}")
    # What the children get: every option but the parent's own (output, selection).
    child_argv = [
        f"--lora-r={args.lora_r}",
        f"--num-envs={args.num_envs}",
        f"--max-new-tokens={args.max_new_tokens}",
        f"--total-episodes={args.total_episodes}",
        f"--ppo-epochs={args.ppo_epochs}",
        f"--num-minibatches={args.num_minibatches}",
        f"--updates={args.updates}",
        f"--device={args.device}",
        f"--dtype={args.dtype}",
        f"--mixed-precision={args.mixed_precision}",
        f"--threads={args.threads}",
    ]
    env = child_env(args)
    t0 = time.perf_counter()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"default": "default"}
        if "gpt2-small-random" in models:
            out = str(Path(tmp) / "gpt2-small-random")
            paths["gpt2-small-random"] = run_child(["--make-gpt2", out], env, "gpt2-small-random")
        for model in models:
            for mode in modes:
                cmd = ["--one", model, paths[model], mode, *child_argv]
                r = json.loads(run_child(cmd, env, f"{model} {mode}"))
                if not args.json:
                    print(
                        f"  {model} {mode}: peak {r['peak_rss_mib']:.0f} MiB RSS"
                        + (f", {r['peak_gpu_mib']:.0f} MiB GPU" if "peak_gpu_mib" in r else "")
                        + f" ({r['seconds']:.0f} s)",
                        file=sys.stderr,
                    )
                runs.append(r)
    cuda = any("peak_gpu_mib" in r for r in runs)
    peak_key = "peak_gpu_mib" if cuda else "peak_rss_mib"
    for r in runs:
        r["peak_mib"] = r[peak_key]
    for r in runs:
        r["peak_vs_full"] = ratio(runs, r["model"], r["mode"])
    report: dict = {"peak_key": peak_key}
    for mode in ("lora", "checkpointing", "lora+checkpointing"):
        report[f"{mode}_vs_full"] = ratio(runs, "gpt2-small-random", mode)
    report["default"] = {
        f"default_{mode}_vs_full": ratio(runs, "default", mode)
        for mode in ("lora", "checkpointing", "lora+checkpointing")
    }
    report["settings"] = {k: v for k, v in vars(args).items() if k not in ("json", "out", "one")}
    report["machine"] = {
        "torch": runs[0]["torch"],
        "device": runs[0]["device"],
        "gpu": runs[0]["gpu"],
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    report["seconds"] = time.perf_counter() - t0
    report["runs"] = runs
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(report))
    else:
        unit = "GPU memory allocated" if cuda else "process RSS"
        print(
            f"PPO update memory on {report['machine']['device']} ({args.dtype}), "
            f"B={args.num_envs}, max_new_tokens={args.max_new_tokens}, LoRA r={args.lora_r}; "
            f"peak = {unit} ({peak_key}); before = RSS before the update, upd +MiB = the "
            f"update's RSS peak over it; tok/s: median of {args.updates} updates"
        )
        print(table(runs, peak_key))
        for model, ratios in (("gpt2-small-random", report), ("default", report["default"])):
            text = ", ".join(
                f"{k.removeprefix('default_')} {v:.2f}"
                for k, v in ratios.items()
                if k.endswith("_vs_full") and v is not None
            )
            if text:
                print(f"{model}: {text}")
        print(f"{report['seconds']:.0f} s in all")
    return report


if __name__ == "__main__":
    main()
