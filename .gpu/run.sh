set -uo pipefail
cp -r .whl/site /tmp/site
export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"
timeout 120 python3 -m pytest tests/test_gpu.py -q -p no:cacheprovider -x 2>&1 | tail -4 | tee "$OUT/tests.txt"
timeout 150 python3 .gpu/prof.py $OUT 2>&1 | tail -3
cd benchmarks
timeout 150 python3 rollout.py --model gpt2-small-random --dtype bfloat16 --device cuda --repeats 3 --json | tee "$OUT/rollout_gpt2small_bf16.json"
timeout 80 python3 rollout.py --dtype bfloat16 --device cuda --repeats 3 --json | tee "$OUT/rollout_default_cuda.json"
