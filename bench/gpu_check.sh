#!/usr/bin/env bash
# The GPU check: what a lent GPU machine can prove in one go, in under 8
# minutes, written to one JSON file.
#
#   1. environment: nvidia-smi, TensorFlow's devices, painless_tf's Environment;
#   2. the engine's equivalence tests on the GPU (tests/test_engine.py on one
#      device: float32, mixed_float16 with loss scaling, mixed_bfloat16; XLA
#      off and on; k = 1 and 4), with TensorFloat-32 off, since the float32
#      claims are about float32;
#   3. the plan's GPU decisions (precision, XLA, micro-batch) with a probe that
#      trains one update per candidate and counts an OOM as "does not fit",
#      at the defaults and for a batch too large for the device;
#   4. the benchmark at BERT-base size (built from a config, random weights):
#      keras-hub default (float32), hand-picked (seq 128, mixed_bfloat16) and
#      the painless plan, side by side.
#
#   bench/gpu_check.sh [--out=bench/results/gpu_check.json]
#   bench/gpu_check.sh --dry_run --out=/tmp/gpu_check.json  # CPU, tiny sizes
#
# Installs nothing: it uses the project's virtual environment (.venv, or
# $PYTHON), whose TensorFlow must be a CUDA build that sees the GPU. Each step
# has a time limit in seconds (the LIMIT_* variables below), and each bench
# configuration one more (CONFIG_TIMEOUT), so that the check fits the lent
# device time; a step that fails or runs out of time is recorded and the check
# goes on. 0 turns a limit off (what tests/test_bench.py does with --dry_run,
# whose times depend on the CPU's load). Exit status 0 when every step and
# every engine test passed.
set -uo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[[ -x "$PY" ]] || PY=$(command -v python3)
dry_run=0
out=bench/results/gpu_check.json
for arg in "$@"; do
  case "$arg" in
    --dry_run) dry_run=1 ;;
    --out=*) out=${arg#--out=} ;;
    *) echo "usage: $0 [--dry_run] [--out=FILE.json]" >&2; exit 2 ;;
  esac
done

# Seconds per step; they add up to 460 s, plus start-up and the merge.
LIMIT_INPUTS=${LIMIT_INPUTS:-40}
LIMIT_ENV=${LIMIT_ENV:-20}
LIMIT_ENGINE=${LIMIT_ENGINE:-90}
LIMIT_PLAN=${LIMIT_PLAN:-80}
LIMIT_BENCH=${LIMIT_BENCH:-230}

work=$(mktemp -d -t painless_gpu_check-XXXXXX)
trap 'rm -rf "$work"' EXIT
export TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=tensorflow
flag=()
if (( dry_run )); then
  flag=(--dry_run)
  # Three engine tests stand for the matrix: mixed_float16 + XLA + k=4, and
  # a non-finite micro-batch skipping the whole update (k=1 and k=2).
  engine_tests="(matrix and none-mixed_float16-True-4) or (non_finite and none)"
  # The plan's config alone: the suite's wiring and the merge are what the
  # dry run proves; the tiny model's other configs are the quick suite's.
  bench_updates=(--warmup=1 --updates=2
                 --config_timeout="${CONFIG_TIMEOUT:-120}"
                 --only=painless)
  export CUDA_VISIBLE_DEVICES=""
else
  # Single device only: the "mirrored" cases pin two logical CPU devices.
  engine_tests="not mirrored"
  bench_updates=(--warmup=2 --updates=10
                 --config_timeout="${CONFIG_TIMEOUT:-75}"
                 --only=keras_hub_default,keras_hub_hand_picked,painless)
fi

# step NAME LIMIT COMMAND...: runs, times and records one step.
step() {
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit} s; 0: none)" >&2
  local start rc
  start=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" >"$work/$name.log" 2>&1
  rc=$?
  tail -n 5 "$work/$name.log" >&2
  "$PY" - "$work" "$name" "$rc" "$start" "$limit" <<'EOF'
import json, sys, time
work, name, rc, start, limit = sys.argv[1:]
with open(f"{work}/{name}.log", errors="replace") as f:
    tail = [line.rstrip() for line in f][-15:]
with open(f"{work}/steps.jsonl", "a") as f:
    f.write(json.dumps({
        "name": name, "rc": int(rc), "seconds": time.time() - float(start),
        "limit_seconds": int(limit), "timed_out": int(rc) in (124, 137),
        "log_tail": tail}) + "\n")
EOF
}

step inputs "$LIMIT_INPUTS" "$PY" -m bench.gpu_check inputs --work="$work" "${flag[@]}"

step environment "$LIMIT_ENV" "$PY" - "$work" <<'EOF'
import json, subprocess, sys
import tensorflow as tf
from painless_tf import hardware
env = hardware.detect_environment()
try:
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
         "--format=csv,noheader"], capture_output=True, text=True,
        timeout=10).stdout.strip().splitlines()
except (OSError, subprocess.SubprocessError):
    smi = None
json.dump({
    "nvidia_smi": smi,
    "tensorflow": tf.__version__,
    "tf_gpus": [tf.config.experimental.get_device_details(g)
                for g in tf.config.list_physical_devices("GPU")],
    "platform": env.platform,
    "cpu_model": env.cpu_model,
    "cpu_count": env.cpu_count,
    "memory_bytes": env.memory_bytes,
}, open(sys.argv[1] + "/env.json", "w"), indent=2, default=str)
EOF

NVIDIA_TF32_OVERRIDE=0 step engine_tests "$LIMIT_ENGINE" \
  "$PY" -m pytest tests/test_engine.py -q -p no:cacheprovider \
  -k "$engine_tests" --junitxml="$work/engine.xml"

step plan "$LIMIT_PLAN" "$PY" -m bench.gpu_check plan --work="$work" "${flag[@]}"

model=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["model_path"])' "$work/inputs.json" 2>/dev/null)
data=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["train_data"] or "")' "$work/inputs.json" 2>/dev/null)
step bench "$LIMIT_BENCH" "$PY" -m bench.run --suite=cpu --model="$model" \
  ${data:+--train_data="$data"} \
  "${bench_updates[@]}" --out="$work/bench.json"

"$PY" -m bench.gpu_check merge --work="$work" --out="$out" "${flag[@]}"
status=$?
echo "wrote $out" >&2
exit $status
