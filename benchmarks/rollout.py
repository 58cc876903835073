"""Rollout throughput: the vector environment against a bare loop and HF ``generate``.

For each batch size B, every method produces B responses of exactly ``--new-tokens`` tokens
(EOS is masked out of the sampling distribution in all three, so they do the same work) and
scores them with the reward model:

  (a) env:      ``gym.make_vec("RLHF-v0", num_envs=B)`` with an acting :class:`LMPolicy`
                attached (KV-cached policy; the env runs the KV-cached reference, the k1 KL, the
                reward model); ``env_deferred``: the same with ``reference_pass="deferred"``
                (one reference pass over each finished response instead of a decode step per
                token);
  (b) bare:     the same model work (policy and reference decode steps with KV caches,
                sampling with the package's ``sample_tokens``, the reward model) in a plain
                loop, no environment, with the reference's activations fused as the env's
                are (``rlhf_gym.envs.lm.fuse_activations``): ``env_vs_bare`` is the
                environment's own overhead;
  (c) generate: ``policy.generate(...)`` (which samples with ``torch.multinomial``) then one
                reference forward pass over the finished sequences and the reward model (how
                TRL collects rollouts), with the models as ``from_pretrained`` loads them.

The policy model is the benchmark's own (loaded by ``from_pretrained``) in all three; the env's
reference and every reward model come through the package's loader, which fuses GPT-2's
``gelu_new`` activation into one kernel.

Prints the median tokens per second over ``--repeats`` runs (after one warm-up) and the ratios
``env_vs_bare``, ``env_vs_generate`` and ``env_vs_generate_deferred`` measured in the same
process. Each repeat runs every method once, back to back, and a ratio is the median over
repeats of that repeat's own ratio: on a shared machine whose speed drifts by tens of per cent
within a minute, pairing the methods of one repeat cancels the drift that a ratio of separate
medians keeps. ``--cuda-graphs`` adds the environment with ``cuda_graphs=True`` (the policy's
and the reference's decode steps replayed as CUDA graphs; keys ``env_graphs_vs_generate`` and
``env_vs_generate_deferred_graphs``). ``--threads`` sets torch's CPU threads (default 1 on
the CPU; a GPU run keeps torch's own). ``--json`` prints one JSON object instead.
``--model gpt2-small-random`` benchmarks a randomly initialised model of GPT-2-small's body
(12 layers, 768 wide, 12 heads; the embedded tokenizer's vocabulary).

    python benchmarks/rollout.py                    # embedded default model, CPU
    python benchmarks/rollout.py --model gpt2-small-random --dtype bfloat16 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from _models import gpt2_small_random
from transformers import AutoModelForCausalLM, AutoTokenizer

import rlhf_gym  # noqa: F401
from rlhf_gym.envs.lm import DATA_DIR, fuse_activations, resolve_device, resolve_dtype
from rlhf_gym.envs.policy import LMPolicy, sample_tokens
from rlhf_gym.envs.prompts import load_prompts
from rlhf_gym.envs.rewards import HFRewardModel


class NoEOSPolicy(LMPolicy):
    """LMPolicy whose distribution never puts mass on EOS (fixed-length responses)."""

    eos: int = 0

    def action_logits(self, observation: dict[str, np.ndarray]) -> torch.Tensor:
        logits = super().action_logits(observation)
        logits[:, self.eos] = float("-inf")  # idempotent on the cached tensor
        return logits


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_env(
    args: Any,
    B: int,
    policy_model: Any,
    prompts: list[str],
    reference_pass: str = "per_step",
    graphs: bool = False,
) -> float:
    envs = gym.make_vec(
        "RLHF-v0",
        num_envs=B,
        model=args.model_path,
        prompts=args.prompts_file,
        max_new_tokens=args.new_tokens,
        device=args.device,
        dtype=args.dtype,
        reference_pass=reference_pass,
        cuda_graphs=graphs,
    )
    pad = envs.unwrapped.pad_token_id
    policy = NoEOSPolicy(policy_model, num_envs=B, pad_token_id=pad, seed=0, cuda_graphs=graphs)
    policy.eos = envs.unwrapped.eos_token_id
    envs.unwrapped.set_policy(policy)
    obs, _ = envs.reset(seed=0)
    sync(policy.lm.device)
    start = time.perf_counter()
    for _ in range(args.new_tokens):
        obs, _, term, _, _ = envs.step(policy.act(obs))
    sync(policy.lm.device)
    elapsed = time.perf_counter() - start
    assert term.all(), "every response should end after exactly --new-tokens tokens"
    return B * args.new_tokens / elapsed


def left_pad(
    tok: Any, prompts: list[str], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


@torch.no_grad()
def run_bare(
    args: Any, B: int, policy_model: Any, ref: Any, tok: Any, rm: Any, prompts: list[str]
) -> float:
    dev = args.dev
    ids, mask = left_pad(tok, prompts, dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    sync(dev)
    start = time.perf_counter()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    caches, logits = [], []
    for m in (policy_model, ref):
        out = m(
            input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1
        )
        caches.append(out["cache"] if "cache" in out else out["past_key_values"])
        logits.append(out.logits[:, -1].float())
    kw = "cache" if "cache" in out else "past_key_values"
    tokens, kl = [], torch.zeros(B, device=dev)
    for _ in range(args.new_tokens):
        logp = logits[0].log_softmax(-1)
        logp[:, tok.eos_token_id] = float("-inf")
        a = sample_tokens(logp, gen)[:, None]  # (B, 1): the package's sampler, as the env's
        kl += (logp.gather(1, a) - logits[1].log_softmax(-1).gather(1, a))[:, 0]
        tokens.append(a)
        mask = torch.cat([mask, torch.ones_like(a)], dim=1)
        pos = mask.sum(1, keepdim=True) - 1
        for j, m in enumerate((policy_model, ref)):
            out = m(
                input_ids=a,
                attention_mask=mask,
                position_ids=pos,
                use_cache=True,
                logits_to_keep=1,
                **{kw: caches[j]},
            )
            caches[j] = out[kw]
            logits[j] = out.logits[:, -1].float()
    texts = tok.batch_decode(torch.cat(tokens, 1).tolist(), skip_special_tokens=True)
    rm.score(prompts, texts)
    sync(dev)
    return B * args.new_tokens / (time.perf_counter() - start)


@torch.no_grad()
def run_generate(
    args: Any, B: int, policy_model: Any, ref: Any, tok: Any, rm: Any, prompts: list[str]
) -> float:
    dev = args.dev
    ids, mask = left_pad(tok, prompts, dev)
    torch.manual_seed(0)
    sync(dev)
    start = time.perf_counter()
    seqs = policy_model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens,
        pad_token_id=tok.pad_token_id,
    )
    full_mask = torch.cat([mask, torch.ones_like(seqs[:, ids.shape[1] :])], dim=1)
    pos = (full_mask.cumsum(-1) - 1).clamp(min=0)
    ref_logits = ref(input_ids=seqs, attention_mask=full_mask, position_ids=pos).logits
    resp = seqs[:, ids.shape[1] :]
    ref_logits[:, ids.shape[1] - 1 : -1].float().log_softmax(-1).gather(2, resp[..., None])
    rm.score(prompts, tok.batch_decode(resp.tolist(), skip_special_tokens=True))
    sync(dev)
    return B * args.new_tokens / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="default", help="'default', 'gpt2-small-random' or a path")
    p.add_argument("--batch-sizes", default="1,8,32")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per method (median)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: 1 on the CPU)"
    )
    p.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="also run the env (both reference passes) with cuda_graphs=True for the policy and "
        "the reference (CUDA only)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    args.dev = resolve_device(args.device)
    if args.cuda_graphs and args.dev.type != "cuda":
        p.error(f"--cuda-graphs needs a CUDA device, got --device {args.device} ({args.dev})")
    if args.threads or args.dev.type == "cpu":  # a GPU run keeps torch's host threads
        torch.set_num_threads(args.threads or 1)
    dt = resolve_dtype(args.dtype, args.dev)
    tmp = tempfile.TemporaryDirectory()
    args.model_path = {"default": str(DATA_DIR / "lm"), "gpt2-small-random": None}.get(
        args.model, args.model
    )
    if args.model_path is None:
        args.model_path = gpt2_small_random(Path(tmp.name) / "gpt2-small-random")
    args.prompts_file = str(DATA_DIR / "prompts" / "sentiment-train.txt")
    tok = AutoTokenizer.from_pretrained(args.model_path)
    load = lambda: AutoModelForCausalLM.from_pretrained(args.model_path).to(args.dev, dt).eval()  # noqa: E731
    policy_model, ref = load(), load()
    ref_fused = fuse_activations(load())  # the bare loop's reference, as the env's
    rm = HFRewardModel.load("sentiment", args.dev, dt)
    all_prompts = load_prompts(args.prompts_file)
    results: dict[str, dict[str, float]] = {}
    for B in [int(b) for b in args.batch_sizes.split(",")]:
        prompts = [all_prompts[i % len(all_prompts)] for i in range(B)]
        runners = {
            "env": partial(run_env, args, B, policy_model, prompts),
            "env_deferred": partial(run_env, args, B, policy_model, prompts, "deferred"),
            "bare": partial(run_bare, args, B, policy_model, ref_fused, tok, rm, prompts),
            "generate": partial(run_generate, args, B, policy_model, ref, tok, rm, prompts),
        }
        if args.cuda_graphs:
            runners["env_graphs"] = partial(
                run_env, args, B, policy_model, prompts, "per_step", True
            )
            runners["env_deferred_graphs"] = partial(
                run_env, args, B, policy_model, prompts, "deferred", True
            )
        times: dict[str, list[float]] = {k: [] for k in runners}
        for fn in runners.values():
            fn()  # warm-up
        for _ in range(args.repeats):  # interleave the methods so drift hits all alike
            for k, fn in runners.items():
                times[k].append(fn())
        med = {k: statistics.median(v) for k, v in times.items()}

        def paired(a: str, b: str, times: dict[str, list[float]] = times) -> float:
            return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

        results[str(B)] = {
            **{f"{k}_tokens_per_s": v for k, v in med.items()},
            "env_vs_bare": paired("env", "bare"),
            "env_vs_generate": paired("env", "generate"),
            "env_deferred_vs_bare": paired("env_deferred", "bare"),
            "env_vs_generate_deferred": paired("env_deferred", "generate"),
        }
        if args.cuda_graphs:
            results[str(B)]["env_graphs_vs_generate"] = paired("env_graphs", "generate")
            results[str(B)]["env_vs_generate_deferred_graphs"] = paired(
                "env_deferred_graphs", "generate"
            )
    report = {
        "model": args.model,
        "threads": torch.get_num_threads(),
        "device": str(args.dev),
        "dtype": str(dt).replace("torch.", ""),
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "cuda_graphs": args.cuda_graphs,
        "results": results,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"model={args.model} device={args.dev} dtype={report['dtype']} "
            f"new_tokens={args.new_tokens} threads={report['threads']} median of {args.repeats} "
            "runs (tokens/s; ratios: median of each run's own)"
        )
        print(
            f"{'B':>4} {'env':>10} {'deferred':>10} {'bare':>10} {'generate':>10} "
            f"{'env/bare':>9} {'env/gen':>8} {'deferred/gen':>13}"
        )
        for B, r in results.items():
            tps = [r[f"{k}_tokens_per_s"] for k in ("env", "env_deferred", "bare", "generate")]
            print(
                f"{B:>4} {tps[0]:>10.0f} {tps[1]:>10.0f} {tps[2]:>10.0f} {tps[3]:>10.0f} "
                f"{r['env_vs_bare']:>9.2f} {r['env_vs_generate']:>8.2f} "
                f"{r['env_vs_generate_deferred']:>13.2f}"
            )
            if args.cuda_graphs:
                print(
                    f"{'':>4} CUDA graphs: env/gen {r['env_graphs_vs_generate']:.2f}, "
                    f"deferred/gen {r['env_vs_generate_deferred_graphs']:.2f}"
                )
    return report


if __name__ == "__main__":
    main()
