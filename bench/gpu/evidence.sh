#!/usr/bin/env bash
# The GPU evidence of issues 16, 30 and 31, on a CUDA machine without network, in one call of the
# device tool: `bash bench/gpu/evidence.sh [STEP ...]` with `.gpu` carried (bench/gpu/bundle.py
# makes it) and $OUT the folder whose files come back. Steps (default: all, in this order):
#   tests       pytest -m gpu tests/gpu (every family's too)       -> $OUT/pytest-gpu.txt
#   throughput  bench/throughput.py --device cuda                  -> $OUT/results-throughput-cuda.json
#   s3t         bench/s3t.py --device cuda --compare-cpu           -> $OUT/results-s3t-cuda.json
#   latency     bench/deletion_latency.py --embedded --device cuda -> $OUT/results-deletion-latency-cuda.json
#   families    bench/families.py --device cuda --quick            -> $OUT/results-families-cuda.json
#               (every architecture family: MiniLM and tiny models built here from their configs;
#               the report so far is in results-families-cuda.partial.json after each family)
#   llm         bench/gpu/llm_cuda.py --device cuda --compare-cpu  -> $OUT/results-llm-cuda.json
#               (a random 8-layer, 512-wide Llama built here: delete -> retrain bitwise in bf16
#               and fp32, checkpointing's bytes and memory, tokens/s with 1 and 8 prompts, and
#               training time against the CPU; progress and figures in llm.log as they come)
# Each step has its own time limit and writes its log to $OUT/<step>.log; a failed step does not
# stop the next one. Budget: about 1.8 + 2 + 2.7 + 3.5 + 1.7 minutes, within 12 with the setup
# (the benchmarks' limits and sizes cut by about a fifth, the tests' by 10 s, to make room for
# the families); `llm` adds at most 2.8 (and the decoder CUDA tests 0.5 to `tests`): with the
# 15 minutes a task is lent, run it with a subset, e.g. `evidence.sh tests llm families`.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-var/gpu-evidence}
mkdir -p "$OUT"
python3 bench/gpu/bundle.py unpack || exit 1  # the xz-compressed weights and data splits
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/wheels/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/.gpu/site:$PWD" BENCH_DATA_DIR="$PWD/.gpu/data"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1

step() {  # name, seconds, output file, command...
    local name=$1 limit=$2 output=$3
    shift 3
    echo "== $name (at most ${limit} s)"
    timeout "$limit" "$@" > "$OUT/$output" 2> "$OUT/$name.log"
    echo "== $name: exit $?"
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests throughput s3t latency families llm)
for s in "${steps[@]}"; do
    case $s in
        tests) step tests 140 pytest-gpu.txt python3 -m pytest -m gpu tests/gpu -p no:cacheprovider -q -rs ;;
        throughput) step throughput 120 results-throughput-cuda.json python3 bench/throughput.py \
            --device cuda --samples 1600 --sequences 1 --batch-sizes 32,64,128,256 --concurrency 1,2,4 ;;
        s3t) step s3t 160 results-s3t-cuda.json python3 bench/s3t.py --device cuda --compare-cpu \
            --train 1300 --test 500 --trials 50 --throughput-seconds 3 ;;
        latency) step latency 210 results-deletion-latency-cuda.json python3 bench/deletion_latency.py \
            --embedded --device cuda --samples 1600 --deletions 190 --rate 2 --shards 8 --slices 4 \
            --settle-s 70 ;;
        families) step families 100 results-families-cuda.json python3 bench/families.py \
            --device cuda --quick --output "$OUT/results-families-cuda.partial.json" ;;
        llm) step llm 170 results-llm-cuda.json python3 bench/gpu/llm_cuda.py --device cuda \
            --compare-cpu ;;
        *) echo "unknown step $s" >&2; exit 2 ;;
    esac
done
tail -n 3 "$OUT"/*.log "$OUT/pytest-gpu.txt"
