#!/usr/bin/env bash
# The GPU check, run on a GPU machine whose python3 holds a CUDA torch 2.x wheel (no network, no
# Debian packages): carry .device-deps (scripts/device-deps.sh makes it) with the tree. It
#  1. builds googletest from .device-deps and configures build-gpu/ against python3's torch
#     (CUDA on), then builds the CLI and the tests labelled gpu with -j$(nproc);
#  2. runs `ctest -L gpu` (CUDA against the CPU, runtime == simulator on CUDA, bfloat16, GPU
#     checkpoints);
#  3. measures a GPT-2-small-sized model (12 layers, 768 wide, 12 heads, context 1024, vocabulary
#     50257, batch 8, Adam): plain backprop in float32, TF32 and bfloat16, Ouroboros K = 3 with both
#     workers on the one GPU in bfloat16, and PyTorch eager on the same model and ops
#     (bench/gpt_pytorch.py) in bfloat16; tokens/s and MFU against the GPU's dense peak.
# Writes device_check.json and the logs to $OUT (else /tmp/device-check). Takes about 6 minutes on
# one H200 with 16 cores. Env: STEPS (10), WARMUP (3), PEAK_BF16_TFLOPS (989.4, H200 dense),
# PEAK_TF32_TFLOPS (494.7, dense), PEAK_FP32_TFLOPS (66.9, H200 without TF32).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/device-check}"
mkdir -p "$out"
steps="${STEPS:-10}"
warmup="${WARMUP:-3}"
jobs="$(nproc)"
log() { echo "device-check: $*" | tee -a "$out/summary.log"; }
start=$(date +%s)

[[ -d .device-deps ]] || { log "no .device-deps: run scripts/device-deps.sh here and carry it"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$out/gpu.txt" 2>&1
log "gpu: $(cat "$out/gpu.txt")"
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
log "torch $(python3 -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())')"

# 1. googletest, then the project against python3's torch.
gtest=/tmp/gtest
if [[ ! -f "$gtest/lib/cmake/GTest/GTestConfig.cmake" && ! -f "$gtest/lib64/cmake/GTest/GTestConfig.cmake" ]]; then
  cmake -S .device-deps/googletest -B /tmp/gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$gtest" >"$out/gtest.log" 2>&1 &&
    cmake --build /tmp/gtest-build -j "$jobs" >>"$out/gtest.log" 2>&1 &&
    cmake --install /tmp/gtest-build >>"$out/gtest.log" 2>&1 || { log "googletest build failed"; exit 1; }
fi
site=$(python3 -c 'import site; print(site.getsitepackages()[0])')
cudnn="$site/nvidia/cudnn"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix/../..;$torch_prefix;$PWD/.device-deps;$gtest" \
  -DCMAKE_CXX_FLAGS="-isystem $PWD/.device-deps/include" \
  -DOUROBOROS_SENTENCEPIECE=OFF -DTORCH_CUDA_ARCH_LIST=9.0 \
  -DCUDNN_INCLUDE_DIR="$cudnn/include" -DCUDNN_LIBRARY="$(ls "$cudnn"/lib/libcudnn.so* 2>/dev/null | head -1)" \
  >"$out/configure.log" 2>&1 || { log "configure failed (configure.log)"; tail -20 "$out/configure.log"; exit 1; }
grep "ouroboros:" "$out/configure.log" | tee -a "$out/summary.log"
cmake --build build-gpu -j "$jobs" --target ouroboros gpu_test nccl_test >"$out/build.log" 2>&1 ||
  { log "build failed (build.log)"; grep -m 20 -B2 -A6 "error" "$out/build.log"; exit 1; }
log "built in $(( $(date +%s) - start )) s"

# 2. The tests labelled gpu.
(cd build-gpu && ctest -L gpu --output-on-failure --timeout 300) >"$out/ctest.log" 2>&1
ctest_rc=$?
log "ctest -L gpu: $(grep -E 'tests passed|tests failed' "$out/ctest.log" | tail -1) (rc $ctest_rc)"

# 3. GPT-2 small.
model=(--n-layer 12 --n-head 12 --n-embd 768 --block-size 1024 --vocab-size 50257 --batch-size 8)
bench() {  # name, then ouroboros bench flags
  local name=$1; shift
  timeout 240 build-gpu/ouroboros bench --device cuda "${model[@]}" --steps "$steps" --warmup "$warmup" \
    --peak-seconds 0.05 --threads 1 --out-dir "$out/$name" "$@" >"$out/$name.log" 2>&1 ||
    log "$name failed (rc $?, $name.log)"
  log "$name: $(grep -E '^\| (sequential|ouroboros)' "$out/$name.log" | cut -d'|' -f2,4 | tr -s ' ')"
}
bench fp32 --modes sequential --dtype float32
bench tf32 --modes sequential --dtype float32 --tf32 1
bench bf16 --modes sequential --dtype bfloat16
bench ouroboros_bf16 --modes ouroboros --modules 3 --dtype bfloat16
timeout 240 python3 bench/gpt_pytorch.py --device cuda --dtype bfloat16 --n-layer 12 --n-head 12 \
  --n-embd 768 --block-size 1024 --vocab 50257 --batch-size 8 --steps "$steps" --warmup "$warmup" \
  >"$out/pytorch_bf16.json" 2>"$out/pytorch_bf16.log" || log "pytorch eager failed (pytorch_bf16.log)"

python3 - "$out" "${PEAK_BF16_TFLOPS:-989.4}" "${PEAK_FP32_TFLOPS:-66.9}" "$ctest_rc" \
  "${PEAK_TF32_TFLOPS:-494.7}" <<'PY'
import datetime, json, os, sys
out, peak_bf16, peak_fp32, ctest_rc = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
peak_tf32 = float(sys.argv[5])
def run(name):
    try:
        r = json.load(open(os.path.join(out, name, "bench.json")))["runs"][0]
        return {"tokens_per_s": r["tokens_per_s"], "ms_per_step": r["ms_per_step"],
                "tflops": r["gflops"] / 1e3, "final_loss": r["final_loss"]}
    except Exception as e:
        return {"error": str(e)}
res = {"date": f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC",
       "gpu": open(os.path.join(out, "gpu.txt")).read().strip(), "ctest_gpu_rc": ctest_rc,
       "model": "GPT-2 small: L=12 C=768 H=12 T=1024 V=50257 B=8, Adam",
       "plain_fp32": run("fp32"), "plain_tf32": run("tf32"), "plain_bf16": run("bf16"), "ouroboros_k3_bf16": run("ouroboros_bf16")}
try:
    p = json.loads(open(os.path.join(out, "pytorch_bf16.json")).read().strip().splitlines()[-1])
    res["pytorch_eager_bf16"] = {"tokens_per_s": p["tokens_per_s"], "ms_per_step": p["ms_per_step"],
                                 "tflops": p["gflops"] / 1e3, "final_loss": p["final_loss"]}
except Exception as e:
    res["pytorch_eager_bf16"] = {"error": str(e)}
for k, peak in (("plain_fp32", peak_fp32), ("plain_tf32", peak_tf32), ("plain_bf16", peak_bf16), ("ouroboros_k3_bf16", peak_bf16),
                ("pytorch_eager_bf16", peak_bf16)):
    if "tflops" in res[k]:
        res[k]["mfu"] = res[k]["tflops"] / peak
if "tokens_per_s" in res["plain_bf16"] and "tokens_per_s" in res["pytorch_eager_bf16"]:
    res["plain_bf16_vs_pytorch"] = res["plain_bf16"]["tokens_per_s"] / res["pytorch_eager_bf16"]["tokens_per_s"]
json.dump(res, open(os.path.join(out, "device_check.json"), "w"), indent=2)
print(json.dumps(res, indent=2))
PY
log "done in $(( $(date +%s) - start )) s"
exit $ctest_rc
