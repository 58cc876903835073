"""Constitutional AI on the embedded default, end to end: label quality and the outcome table.

    python benchmarks/cai.py --json            # about 25 minutes on one CPU core
    python benchmarks/cai.py --quick           # a smoke run: tiny budgets, minutes

Everything runs on the helpful-harmless task (``RLHFHelpfulHarmless-v0``) with the embedded
assistant, through the same functions as the commands (``rlhf-gym cai revise``, ``sft``,
``cai label``, ``reward simulate``, ``reward train``, ``train``):

1. **Generalisation of the demonstrations** (held-out requests, never in the assistant's
   corpus): ``cai revise`` on the ``helpful_harmless-eval`` prompts: mean gold of the initial
   reply and of the revision, and how often the revision is better.
2. **AI label quality** on ``--label-pairs`` held-out pairs (two reference samples per
   ``helpful_harmless-eval`` prompt): agreement of the AI feedback model's soft labels
   (``cai label``, feedback model = the assistant) with the gold labeler, against simulated
   human labels (``reward simulate``: the gold labeler with Bradley-Terry noise, T = 0.1) on
   the same number of pairs.
3. **The outcome table** on held-out prompts (``--eval-episodes`` episodes, exact KL against
   the assistant, the common starting point): helpful gold (``hh_helpful``), harmless gold
   (``hh_harmless``), their combination (``helpful_harmless``) and KL for

   * the reference (the assistant);
   * SL-CAI: the assistant fine-tuned (``sft``) on its own revisions of the train prompts;
   * RL-CAI: PPO from SL-CAI (KL against SL-CAI) on a reward model trained on AI labels of
     SL-CAI's samples (zero human labels);
   * RLHF (harmlessness labels): PPO from the assistant on a reward model trained on simulated
     human labels that judge harmlessness only, as the CAI paper's baseline on human
     harmlessness labels;
   * RLHF (helpful+harmless labels): the same with labels from the combined gold.

   Each row says how many human labels it used.

Writes ``benchmarks/results/cai.json`` (``--json`` prints it too) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf_gym.cai.label import AILabelConfig, label
from rlhf_gym.cai.revise import ReviseConfig, revise
from rlhf_gym.envs.gold import GOLD_LABELERS
from rlhf_gym.feedback.records import read_preferences
from rlhf_gym.feedback.simulate import SimulateConfig, simulate

ROOT = Path(__file__).resolve().parent.parent
ENV = "RLHFHelpfulHarmless-v0"
TASK = "helpful_harmless"


def quiet(_: str) -> None:
    pass


def outcome(policy: str | None, episodes: int, seed: int) -> dict[str, float]:
    """Helpful, harmless and combined gold and exact KL (against the assistant) of ``policy``
    (``None``: the assistant itself) on the held-out prompts, one sample per episode
    (:func:`rlhf_gym.evaluate.evaluate`, keeping every episode's text)."""
    from rlhf_gym.evaluate import evaluate

    stats = evaluate(
        ENV, policy, episodes, num_envs=64, seed=seed, n_samples=episodes,
        prompts=f"{TASK}-eval", device="cpu",
    )  # fmt: skip
    helpful, harmless = GOLD_LABELERS["hh_helpful"], GOLD_LABELERS["hh_harmless"]
    return {
        "helpful": float(np.mean([helpful(p, r) for p, r, _ in stats.samples])),
        "harmless": float(np.mean([harmless(p, r) for p, r, _ in stats.samples])),
        "gold": float(np.mean(stats.gold_scores)),
        "kl": float(np.mean(stats.kls)),
        "length": float(np.mean(stats.lengths)),
        "kl_std": float(np.std(stats.kls)),
        "episodes": len(stats.samples),
    }


def reward_model(data: Path, out: Path, seed: int, policy: str | None = None) -> dict[str, Any]:
    """``rlhf-gym reward train --data DATA --out OUT --task helpful_harmless [--policy P]``
    (scores normalised on the samples of ``policy``, where RL starts); its summary."""
    from rlhf_gym.feedback.cli import TrainCommand, train_command
    from rlhf_gym.feedback.trainer import RewardTrainConfig

    return train_command(
        TrainCommand(
            data=str(data), out=str(out), task=TASK, policy=policy, logdir=str(out.parent / "runs")
        ),
        RewardTrainConfig(seed=seed),
    )


def ppo(model: str, rm: Path, episodes: int, seed: int, logdir: Path) -> str:
    """``rlhf-gym train --env RLHFHelpfulHarmless-v0 --model MODEL --reward-model RM``; the
    final checkpoint (a Hugging Face policy directory)."""
    from rlhf_gym.agents.ppo import PPOConfig
    from rlhf_gym.train import train

    cfg = PPOConfig(
        env_id=ENV,
        model=model,
        reward_model=str(rm),
        total_episodes=episodes,
        seed=seed,
        device="cpu",
    )
    summary = train("ppo", cfg, logdir=logdir, eval_episodes=64, quiet=True)
    return str(Path(summary["checkpoint"]) / "policy")


def label_agreement(path: Path, gold: str) -> float:
    """Share of decided pairs whose label (p_a > 0.5) agrees with the gold labeler ``gold``."""
    g = GOLD_LABELERS[gold]
    hits = []
    for r in read_preferences(path).records:
        ga, gb = g(r.prompt, r.response_a), g(r.prompt, r.response_b)
        if ga != gb and r.p_a != 0.5:
            hits.append(float((r.p_a > 0.5) == (ga > gb)))
    return float(np.mean(hits)) if hits else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--revise-prompts", type=int, default=256)
    parser.add_argument("--ai-pairs", type=int, default=2048, help="AI labels for RL-CAI")
    parser.add_argument("--human-pairs", type=int, default=2048, help="simulated human labels")
    parser.add_argument("--label-pairs", type=int, default=512, help="held-out pairs (quality)")
    parser.add_argument("--episodes", type=int, default=4096, help="PPO budget per run")
    parser.add_argument("--eval-episodes", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.revise_prompts, args.ai_pairs, args.human_pairs = 32, 128, 128
        args.label_pairs, args.episodes, args.eval_episodes = 64, 128, 64
    torch.set_num_threads(1)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: list[float] = [started]) -> None:  # noqa: B006
        now = time.perf_counter()
        timings[name] = round(now - since[0], 1)
        since[0] = now
        print(f"  {name}: {timings[name]:.0f} s", flush=True)

    results: dict[str, Any] = {"machine": platform.platform(), "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # 1. generalisation of the demonstrations on held-out requests
        held = revise(
            ReviseConfig(
                out=str(tmp / "rev_eval.jsonl"),
                prompts=f"{TASK}-eval",
                num_prompts=128 if not args.quick else 16,
                seed=args.seed,
                device="cpu",
            ),
            log=quiet,
        )
        results["heldout_revision"] = {
            k: held[k] for k in ("prompts", "gold_initial", "gold_revision", "improved_fraction")
        }
        lap("revise_heldout")

        # 2. AI label quality against simulated human labels, same pairs count, held-out prompts
        ai = label(
            AILabelConfig(
                policy="assistant",
                out=str(tmp / "ai_eval.jsonl"),
                num_pairs=args.label_pairs,
                prompts=f"{TASK}-eval",
                seed=args.seed + 1,
                device="cpu",
            ),
            log=quiet,
        )
        simulate(
            SimulateConfig(
                out=str(tmp / "human_eval.jsonl"),
                task=TASK,
                pairs=ai["pairs"],
                prompts=f"{TASK}-eval",
                seed=args.seed + 1,
            )
        )
        results["label_quality"] = {
            "pairs": ai["pairs"],
            "ai_vs_gold": label_agreement(tmp / "ai_eval.jsonl", TASK),
            "ai_vs_harmless_gold": label_agreement(tmp / "ai_eval.jsonl", "hh_harmless"),
            "ai_mean_confidence": ai["mean_confidence"],
            "ai_position_bias": ai["position_bias"],
            "human_vs_gold": label_agreement(tmp / "human_eval.jsonl", TASK),
        }
        lap("label_quality")

        # 3. the pipeline: SL-CAI, RL-CAI, and RLHF on simulated human labels
        from rlhf_gym.sft import SFTConfig, run_sft

        revise(
            ReviseConfig(
                out=str(tmp / "rev.jsonl"),
                num_prompts=args.revise_prompts,
                seed=args.seed,
                device="cpu",
            ),
            log=quiet,
        )
        sft = run_sft(
            SFTConfig(data=str(tmp / "rev.jsonl"), out=str(tmp / "sl_cai"), device="cpu"),
            quiet=True,
        )
        lap("sl_cai")
        ai_train = label(
            AILabelConfig(
                policy=str(tmp / "sl_cai"),
                out=str(tmp / "ai.jsonl"),
                num_pairs=args.ai_pairs,
                seed=args.seed,
                device="cpu",
            ),
            log=quiet,
        )
        rm_cai = reward_model(tmp / "ai.jsonl", tmp / "rm_cai", args.seed, str(tmp / "sl_cai"))
        rl_cai = ppo(str(tmp / "sl_cai"), tmp / "rm_cai", args.episodes, args.seed, tmp / "runs")
        lap("rl_cai")
        rlhf: dict[str, str] = {}
        rms: dict[str, Any] = {}
        for name, gold in (("harmless", "hh_harmless"), ("helpful_harmless", TASK)):
            data = tmp / f"human_{name}.jsonl"
            simulate(
                SimulateConfig(
                    out=str(data), task=TASK, pairs=args.human_pairs, gold=gold, seed=args.seed
                )
            )
            rms[name] = reward_model(data, tmp / f"rm_{name}", args.seed)
            rlhf[name] = ppo("default", tmp / f"rm_{name}", args.episodes, args.seed, tmp / "runs")
            lap(f"rlhf_{name}")

        rows = [
            ("reference", None, 0),
            ("SL-CAI", str(tmp / "sl_cai"), 0),
            ("RL-CAI", rl_cai, 0),
            ("RLHF (harmlessness labels)", rlhf["harmless"], args.human_pairs),
            ("RLHF (helpful+harmless labels)", rlhf["helpful_harmless"], args.human_pairs),
        ]
        table = []
        for name, policy, human in rows:
            o = outcome(policy, args.eval_episodes, 10_000 + args.seed)
            table.append({"policy": name, "human_labels": human, **o})
        lap("outcomes")
        results["outcomes"] = table
        results["sl_cai"] = {
            "initial_heldout_loss": sft.initial_heldout_loss,
            "final_heldout_loss": sft.final_heldout_loss,
        }
        results["ai_labels_train"] = {
            k: ai_train[k] for k in ("pairs", "mean_confidence", "position_bias")
        }
        results["ai_labels_train"]["agreement_with_gold"] = ai_train.get("agreement_with_gold")
        results["reward_models"] = {
            "rl_cai": _rm_summary(rm_cai),
            **{f"rlhf_{k}": _rm_summary(v) for k, v in rms.items()},
        }
    results["timings_s"] = timings
    results["seconds"] = round(time.perf_counter() - started, 1)

    print(_table(results))
    out = ROOT / "benchmarks" / "results" / ("cai_quick.json" if args.quick else "cai.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    if args.json:
        print(json.dumps(results))


def _rm_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The reward model's training result: pairs, steps, held-out metrics on its own labels."""
    result = summary["result"]
    keep = ("train_pairs", "heldout_pairs", "steps", "best_step", "heldout", "train_accuracy")
    return {k: result[k] for k in keep}


def _table(r: dict[str, Any]) -> str:
    q = r["label_quality"]
    h = r["heldout_revision"]
    lines = [
        f"held-out revisions ({h['prompts']} prompts): gold {h['gold_initial']:+.3f} → "
        f"{h['gold_revision']:+.3f}, better on {100 * h['improved_fraction']:.0f}%",
        f"label agreement with gold on {q['pairs']} held-out pairs: AI {q['ai_vs_gold']:.3f} "
        f"(vs harmless gold {q['ai_vs_harmless_gold']:.3f}), "
        f"simulated human {q['human_vs_gold']:.3f}",
        "",
        f"{'policy':<32}{'human labels':>13}{'helpful':>9}{'harmless':>10}{'gold':>8}{'KL':>7}",
    ]
    for row in r["outcomes"]:
        lines.append(
            f"{row['policy']:<32}{row['human_labels']:>13}{row['helpful']:>+9.3f}"
            f"{row['harmless']:>+10.3f}{row['gold']:>+8.3f}{row['kl']:>7.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
