#!/usr/bin/env bash
# The GPU checks in one run of about 8 minutes on one H100/H200, for a machine with no network whose
# python3 already holds torch, transformers, accelerate, peft, typer and rich (no install step):
#   1. the GPU tests (`-m gpu`): bf16 mixed-precision healing hands back a checkpoint that verifies,
#      packed healing on flash-attention 2 equals the padded heal (skipped without flash_attn);
#   2. benchmarks/gpu_heal_throughput.py: samples/s, data wait, padding, MFU of a Qwen3-VL-8B-shaped heal;
#   3. benchmarks/gpu_qwen3vl_speed.py: prefill/decode speedup of 9 of 36 layers removed, 8B shapes.
# Run from the repository root:  OUT=gpu-out bash scripts/gpu_checks.sh
# Every step writes its log (and JSON) under $OUT and has its own time limit, so one that hangs
# leaves the others' results. docs/benchmarks.md says where the numbers go.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-python3}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: $PY sees no CUDA device; these checks need one (run them on the GPU machine)" >&2
    exit 2
fi
"$PY" - <<'EOF' | tee "$OUT/versions.txt"
import importlib, torch
print("gpu", torch.cuda.get_device_name(0), "torch", torch.__version__)
for name in ("transformers", "accelerate", "peft", "typer", "rich", "safetensors", "datasets", "flash_attn"):
    try:
        print(name, importlib.import_module(name).__version__)
    except ImportError:
        print(name, "MISSING")
EOF

step() {  # step NAME SECONDS COMMAND...: run it under a limit, log under $OUT, note its exit status
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "$name exit $?" | tee -a "$OUT/status.txt"
    tail -n 25 "$OUT/$name.log"
}

step gpu-tests 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu -k "not fsdp" tests/
step heal-throughput 210 "$PY" benchmarks/gpu_heal_throughput.py --samples 128 --rounds 1 --variants before,after,packed --json "$OUT/heal.json"
step speed 150 "$PY" benchmarks/gpu_qwen3vl_speed.py --sizes 8b --images 448x448 --repeats 3 --json "$OUT/speed.json"
cat "$OUT/status.txt"
