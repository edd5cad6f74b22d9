#!/usr/bin/env bash
# GPU figures in one run, for a host with an NVIDIA GPU (see README "GPU hosts"):
#   1. the environment (nvidia-smi, torch CUDA, PyAV's hardware devices) -> $OUT/env.txt
#   2. the GPU code paths' tests (they skip without CUDA)                 -> $OUT/pytest-gpu.txt
#   3. tsmindex bench decode --device cuda: NVDEC + GPU resize vs CPU     -> $OUT/decode.json
#   4. tsmindex bench serve: TorchServe (fp16, batch 16) vs in-process    -> $OUT/serve.json
# Every step runs even if an earlier one failed; the exit status says whether all passed.
# Usage: OUT=/some/dir infra/scripts/gpu-bench.sh   (default OUT: bench-results/gpu)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-bench-results/gpu}"
WORK="${WORK:-var/bench/decode}"
PY="${PYTHON:-.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
CLI="from workers.cli.app import main; main()"  # the tsmindex command, with this interpreter
mkdir -p "$OUT"
status=0
step() {  # step NAME COMMAND...: run, keep its output, remember a failure
    local name=$1; shift
    echo "== $name: $*" | tee -a "$OUT/steps.log"
    local started=$SECONDS
    "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - started)) s" | tee -a "$OUT/steps.log"
    tail -n 25 "$OUT/$name.txt"
    [[ $rc -eq 0 ]] || status=1
}

step env bash -c "nvidia-smi; $PY -c 'import torch, av; from av.codec.hwaccel import hwdevices_available as h; \
print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else None); \
print(\"pyav\", av.__version__, h())'"
step pytest-gpu "$PY" -m pytest -p no:randomly -q -rs tests/workers/media/test_gpu.py tests/model_store/test_inference.py
step decode "$PY" -c "$CLI" bench decode --device cuda --no-corpus --repeats 3 \
    --video 1080p-60s --video 720p-gop30 --workdir "$WORK" --out "$OUT/decode.json"
if command -v java >/dev/null; then
    step serve "$PY" -c "$CLI" bench serve --batch-sizes 8,16 --clips 64 --rounds 3 --device cuda \
        --out "$OUT/serve.json"
else
    echo "== serve: skipped, TorchServe needs java (openjdk-17-jre-headless)" | tee -a "$OUT/steps.log"
    status=1
fi
exit $status
