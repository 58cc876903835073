#!/usr/bin/env bash
# The device-machine check (one call): GPU tests, then the GPU benchmarks, results under $OUT.
# Needs gymnasium, farama-notifications and vaderSentiment carried along in .whl/: as wheels
# (installed here), or as an installed folder .whl/site (copied).
set -uo pipefail
if [ -d .whl/site ]; then cp -r .whl/site /tmp/site
else python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
# the embedded models: the package copy, or a carried rebuilt copy in .assets/
[ -d .assets/lm ] && export RLHF_GYM_DATA_DIR="$PWD/.assets"
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m pytest tests/test_gpu.py tests/test_incremental_lm.py -q -p no:cacheprovider -rfEs 2>&1 | tail -40 | tee "$OUT/tests.txt"
cd benchmarks
python3 rollout.py --dtype bfloat16 --device cuda --repeats 5 --cuda-graphs --json | tee "$OUT/rollout_default_cuda.json"
python3 rollout.py --model gpt2-small-random --dtype bfloat16 --device cuda --repeats 5 --cuda-graphs --json | tee "$OUT/rollout_gpt2small_bf16.json"
python3 ppo_speed.py --model gpt2-small-random --dtype bfloat16 --device cuda --updates 3 --reference-passes deferred --cuda-graphs --json | tee "$OUT/ppo_gpt2small_bf16_graphs.json"
python3 ppo_speed.py --dtype bfloat16 --device cuda --updates 3 --reference-passes deferred --cuda-graphs --json | tee "$OUT/ppo_default_cuda_graphs.json"
