"""Our PPO against TRL's RLOO trainer on the same model, reward, prompts and episode budget.

    pip install -e ".[bench]"          # TRL is a benchmark extra, not a dependency
    python benchmarks/vs_trl.py        # embedded default task, CPU
    python benchmarks/vs_trl.py --episodes 4096 --json
    python benchmarks/vs_trl.py --kl-levels 1,4 --json   # at equal KL (ours: --kl-target)
    python benchmarks/vs_trl.py --kl-levels 1,4 --trl-betas 0.2,0.0 --repeats 3 --our-epochs 2,1

Both start from the embedded default LM (also the frozen reference), are scored by the same
sentiment reward model on ``prompt + completion`` text, sample completions of at most
``--max-new-tokens`` tokens at temperature 1 with no top-k/top-p, use KL coefficient 0.05 and
the same learning rate, and see the same number of sampled episodes (completions). RLOO is
TRL's REINFORCE-leave-one-out trainer (``num_generations`` completions per prompt); TRL 1.x has
no non-experimental PPO. Afterwards both policies are evaluated by the same code
(:func:`rlhf_gym.evaluate.evaluate`) on the held-out prompts: mean reward-model score, gold
score, and exact per-sequence KL from the reference. Wall time covers training only.

``--repeats N`` (with ``--kl-levels``) is the paired form for the wall-time question: one TRL
β per level (``--trl-betas``, the β known to land at that level), and for each repeat (seed
``--seed + r``) and level, TRL's run and ours (one per ``--our-epochs`` entry) back to back, so
that the machine's drift hits both alike; it reports each run and, per level and setting, the
median over repeats of the repeat's own wall-time ratio and the mean gold and KL.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from rlhf_gym.agents.ppo import PPO, PPOConfig
from rlhf_gym.envs.lm import DATA_DIR
from rlhf_gym.envs.prompts import load_prompts
from rlhf_gym.envs.rewards import HFRewardModel
from rlhf_gym.evaluate import evaluate


def run_ours(args: Any, kl_target: float = 0.0, epochs: int | None = None) -> tuple[Any, float]:
    cfg = PPOConfig(
        kl_target=kl_target,
        total_episodes=args.episodes,
        num_envs=args.batch,
        learning_rate=args.learning_rate,
        max_new_tokens=args.max_new_tokens,
        kl_coef=args.kl_coef,
        seed=args.seed,
        device="cpu",
        ppo_epochs=args.ppo_epochs if epochs is None else epochs,
    )
    start = time.perf_counter()
    agent = PPO(cfg)
    agent.train()
    return agent.policy, time.perf_counter() - start


def run_trl(args: Any, out: Path, beta: float | None = None) -> tuple[Any, float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import RLOOConfig, RLOOTrainer

    tok = AutoTokenizer.from_pretrained(DATA_DIR / "lm")
    tok.padding_side = "left"
    rm = HFRewardModel.load("sentiment", torch.device("cpu"))

    def reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return [float(s) for s in rm.score(prompts, completions)]

    prompts = load_prompts("sentiment")
    n_prompts = args.episodes // args.num_generations
    data = Dataset.from_dict({"prompt": [prompts[i % len(prompts)] for i in range(n_prompts)]})
    cfg = RLOOConfig(
        output_dir=str(out),
        use_cpu=True,
        seed=args.seed,
        report_to="none",
        per_device_train_batch_size=args.batch,
        num_generations=args.num_generations,
        max_steps=args.episodes // args.batch,
        learning_rate=args.learning_rate,
        max_completion_length=args.max_new_tokens,
        beta=args.kl_coef if beta is None else beta,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        disable_dropout=True,
        save_strategy="no",
        logging_steps=10**9,
        num_iterations=1,
    )
    model = AutoModelForCausalLM.from_pretrained(DATA_DIR / "lm")
    start = time.perf_counter()
    trainer = RLOOTrainer(
        model=model, reward_funcs=reward, args=cfg, train_dataset=data, processing_class=tok
    )
    with contextlib.redirect_stdout(sys.stderr):  # TRL prints its metrics; --json owns stdout
        trainer.train()
    return trainer.model, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--episodes", type=int, default=4096, help="sampled completions per trainer")
    p.add_argument("--batch", type=int, default=64, help="completions per update")
    p.add_argument("--num-generations", type=int, default=4, help="RLOO completions per prompt")
    p.add_argument(
        "--learning-rate", type=float, default=PPOConfig().base_lr, help="both trainers' (PPO's)"
    )
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--eval-episodes", type=int, default=256)
    p.add_argument("--ppo-epochs", type=int, default=PPOConfig.ppo_epochs, help="ours")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--kl-levels",
        default="",
        help="compare at equal KL instead: comma-separated per-sequence KL levels (nats); ours "
        "reaches each with --kl-target, TRL's β is swept (--trl-betas) and the run whose "
        "held-out KL is closest (in log ratio) to each level is reported",
    )
    p.add_argument("--trl-betas", default="0.05,0.02,0.01,0.005,0.002")
    p.add_argument(
        "--repeats", type=int, default=1, help="paired runs per level (with --kl-levels)"
    )
    p.add_argument(
        "--our-epochs", default="", help="with --repeats: comma-separated ppo_epochs settings"
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    if args.repeats > 1:
        if not args.kl_levels or len(args.kl_levels.split(",")) != len(args.trl_betas.split(",")):
            p.error("--repeats needs --kl-levels and one --trl-betas entry per level")
        return paired(args)
    if args.kl_levels:
        return equal_kl(args)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, runner in (
            ("rlhf_gym_ppo", run_ours),
            ("trl_rloo", lambda a: run_trl(a, Path(tmp))),
        ):
            policy, wall = runner(args)
            results[name] = {"wall_s": wall, **held_out(policy, args)}
    ours, trl = results["rlhf_gym_ppo"], results["trl_rloo"]
    report = {
        "episodes": args.episodes,
        **results,
        "score_minus_trl": ours["score"] - trl["score"],
        "wall_time_ratio": ours["wall_s"] / trl["wall_s"],
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{args.episodes} episodes each, held-out evaluation on {args.eval_episodes} episodes"
        )
        print(f"{'':14} {'wall s':>8} {'score':>8} {'gold':>8} {'KL':>8}")
        for name, r in results.items():
            print(
                f"{name:14} {r['wall_s']:8.1f} {r['score']:+8.3f} "
                f"{r['gold_score']:+8.3f} {r['kl']:8.3f}"
            )
        print(
            f"score (ours − TRL) {report['score_minus_trl']:+.3f}; wall time ours/TRL "
            f"{report['wall_time_ratio']:.2f}"
        )
    return report


def held_out(policy: Any, args: Any) -> dict[str, float]:
    """Score, gold score and exact KL of ``policy`` on the held-out prompts (the same code for
    both trainers)."""
    ev = evaluate(
        "RLHF-v0",
        policy=policy.float().eval(),
        episodes=args.eval_episodes,
        prompts="sentiment-eval",
        seed=1,
        device="cpu",
    ).summary()
    return {k: ev[k]["mean"] for k in ("score", "gold_score", "kl")}


def equal_kl(args: Any) -> dict:
    """Both trainers at each KL level: ours with ``--kl-target``, TRL's RLOO from a β sweep."""
    import math

    levels = [float(x) for x in args.kl_levels.split(",")]
    trl_runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for beta in [float(x) for x in args.trl_betas.split(",")]:
            policy, wall = run_trl(args, Path(tmp), beta)
            trl_runs.append({"beta": beta, "wall_s": wall, **held_out(policy, args)})
            print(f"TRL RLOO β={beta}: {trl_runs[-1]}", file=sys.stderr, flush=True)
    rows = []
    for level in levels:
        policy, wall = run_ours(args, kl_target=level)
        ours = {"kl_target": level, "wall_s": wall, **held_out(policy, args)}
        print(f"ours --kl-target {level}: {ours}", file=sys.stderr, flush=True)
        trl = min(trl_runs, key=lambda r: abs(math.log(max(r["kl"], 1e-6) / level)))
        rows.append(
            {
                "level": level,
                "rlhf_gym_ppo": ours,
                "trl_rloo": trl,
                "gold_minus_trl": ours["gold_score"] - trl["gold_score"],
                "score_minus_trl": ours["score"] - trl["score"],
                "wall_time_ratio": ours["wall_s"] / trl["wall_s"],
            }
        )
    report = {"episodes": args.episodes, "equal_kl": rows, "trl_sweep": trl_runs}
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{'level':>6} {'trainer':>14} {'β':>7} {'wall s':>8} {'score':>8} {'gold':>8} "
            f"{'KL':>7}"
        )
        for r in rows:
            for name in ("rlhf_gym_ppo", "trl_rloo"):
                x = r[name]
                beta = x.get("beta", float("nan"))
                print(
                    f"{r['level']:>6} {name:>14} {beta:>7.3f} {x['wall_s']:8.1f} "
                    f"{x['score']:+8.3f} {x['gold_score']:+8.3f} {x['kl']:7.2f}"
                )
            print(
                f"{'':>6} gold ours − TRL {r['gold_minus_trl']:+.3f}; wall ours/TRL "
                f"{r['wall_time_ratio']:.2f}"
            )
    return report


def paired(args: Any) -> dict:
    """``--repeats`` runs at each level, TRL's and ours back to back (see the docstring)."""
    import statistics

    levels = [float(x) for x in args.kl_levels.split(",")]
    betas = [float(x) for x in args.trl_betas.split(",")]
    epochs = [int(e) for e in args.our_epochs.split(",")] if args.our_epochs else [args.ppo_epochs]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            args_r = argparse.Namespace(**{**vars(args), "seed": args.seed + r})
            for level, beta in zip(levels, betas, strict=True):
                policy, wall = run_trl(args_r, Path(tmp), beta)
                trl = {"beta": beta, "wall_s": wall, **held_out(policy, args_r)}
                row = {"repeat": r, "level": level, "trl_rloo": trl}
                for e in epochs:
                    policy, wall = run_ours(args_r, kl_target=level, epochs=e)
                    row[f"ours_epochs{e}"] = {"wall_s": wall, **held_out(policy, args_r)}
                runs.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    summary = []
    for level in levels:
        rows = [x for x in runs if x["level"] == level]
        for e in epochs:
            ours = [x[f"ours_epochs{e}"] for x in rows]
            trl = [x["trl_rloo"] for x in rows]
            ratios = [o["wall_s"] / t["wall_s"] for o, t in zip(ours, trl, strict=True)]
            summary.append(
                {
                    "level": level,
                    "ppo_epochs": e,
                    "wall_time_ratio_median": statistics.median(ratios),
                    "wall_time_ratios": ratios,
                    **{
                        f"{k}_{name}": statistics.mean(x[k] for x in xs)
                        for name, xs in (("ours", ours), ("trl", trl))
                        for k in ("gold_score", "score", "kl")
                    },
                }
            )
    report = {"episodes": args.episodes, "repeats": args.repeats, "summary": summary, "runs": runs}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.repeats} paired repeats per level (seeds {args.seed}…)")
        for x in summary:
            print(
                f"level {x['level']}, ours {x['ppo_epochs']} epoch(s): wall ours/TRL median "
                f"{x['wall_time_ratio_median']:.2f}; gold {x['gold_score_ours']:+.3f} vs "
                f"{x['gold_score_trl']:+.3f}; KL {x['kl_ours']:.2f} vs {x['kl_trl']:.2f}"
            )
    return report


if __name__ == "__main__":
    main()
