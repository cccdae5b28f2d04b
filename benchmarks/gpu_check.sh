#!/usr/bin/env bash
# The first command of a GPU session, under 8 minutes in all:
#   1. the CUDA tests (they skip without a GPU; here they must run),
#   2. PPO on ALE/Pong-v5 with the Atari preset on all cores for about 5 minutes,
#   3. a summary from the run's metrics.csv: steps/s, the sampling/update split, peak GPU
#      memory and the game-score curve.
# Usage: bash benchmarks/gpu_check.sh [SECONDS_OF_TRAINING (default 300)] [extra train flags]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
seconds="${1:-300}"
shift || true
cores="$(python -c 'import os; print(len(os.sched_getaffinity(0)))')"
run_dir="runs/gpu_check_$(date +%Y%m%d-%H%M%S)"

python - <<'PY'
import torch
assert torch.cuda.is_available(), "torch sees no CUDA GPU"
print(f"gpu: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, cuda {torch.version.cuda}")
PY

echo "== CUDA tests"
timeout 150 python -m pytest -q -rs tests/test_atari_training.py tests/test_buffer.py -k "cuda"

echo "== PPO on ALE/Pong-v5: ${cores} envs (one per core), ${seconds} s, run dir ${run_dir}"
# SIGINT stops the run like Ctrl-C; metrics.csv holds every finished update.
timeout -s INT "${seconds}" python -m vecpg train --env ALE/Pong-v5 --device cuda \
    --num-envs "$(( cores > 8 ? cores : 8 ))" --total-steps 10000000 --run-dir "${run_dir}" \
    --checkpoint-interval 0 --no-tensorboard --quiet "$@" || true

python - "${run_dir}" <<'PY'
import csv
import sys

rows = list(csv.DictReader(open(f"{sys.argv[1]}/metrics.csv")))
if not rows:
    sys.exit("no update finished: nothing to report")
sampling = sum(float(row["sampling_time_s"]) for row in rows)
update = sum(float(row["update_time_s"]) for row in rows)
last = rows[-1]
print(
    f"steps {int(last['global_step']):,} in {sampling + update:.0f} s of training: "
    f"{int(last['global_step']) / (sampling + update):,.0f} steps/s; "
    f"sampling {sampling / (sampling + update):.0%}, update {update / (sampling + update):.0%}; "
    f"peak GPU memory {max(float(row.get('gpu_memory_mib') or 0) for row in rows):,.0f} MiB"
)
print("score curve (mean game score of the last 20 games):")
curve = rows[:: max(1, len(rows) // 15)]
for row in curve + ([last] if curve[-1] is not last else []):
    print(f"  step {int(row['global_step']):>10,}  score {row['episode_return_mean']}")
PY
