"""One-off: where the deferred env's decode step spends its time on the GPU (B=32)."""
import cProfile, io, pstats, sys, tempfile, types
from pathlib import Path
sys.path.insert(0, "benchmarks")
import torch
from _models import gpt2_small_random
from transformers import AutoModelForCausalLM, AutoTokenizer
import rollout as R
from rlhf_gym.envs.lm import DATA_DIR
from rlhf_gym.envs.prompts import load_prompts
from rlhf_gym.envs.rewards import HFRewardModel
from torch.profiler import profile, ProfilerActivity

out = Path(sys.argv[1])
tmp = tempfile.mkdtemp()
for model in ("gpt2-small-random", "default"):
    args = types.SimpleNamespace(new_tokens=32, device="cuda", dtype="bfloat16", dev=torch.device("cuda"))
    args.model_path = gpt2_small_random(Path(tmp) / "g") if model != "default" else str(DATA_DIR / "lm")
    args.prompts_file = str(DATA_DIR / "prompts" / "sentiment-train.txt")
    tok = AutoTokenizer.from_pretrained(args.model_path)
    pm = AutoModelForCausalLM.from_pretrained(args.model_path).to("cuda", torch.bfloat16).eval()
    ref = AutoModelForCausalLM.from_pretrained(args.model_path).to("cuda", torch.bfloat16).eval()
    rm = HFRewardModel.load("sentiment", args.dev, torch.bfloat16)
    prompts = load_prompts(args.prompts_file)[:32]
    for _ in range(2):
        R.run_env(args, 32, pm, prompts, "deferred"); R.run_generate(args, 32, pm, ref, tok, rm, prompts)
    for name, fn in (("env_deferred", lambda: R.run_env(args, 32, pm, prompts, "deferred")),
                     ("generate", lambda: R.run_generate(args, 32, pm, ref, tok, rm, prompts))):
        pr = cProfile.Profile(); pr.enable(); tps = fn(); pr.disable()
        s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(45)
        (out / f"cprof_{model}_{name}.txt").write_text(f"tokens/s {tps}\n" + s.getvalue())
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            fn()
        (out / f"torchprof_{model}_{name}.txt").write_text(
            p.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
            + "\n\n" + p.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    print(model, "done", flush=True)
