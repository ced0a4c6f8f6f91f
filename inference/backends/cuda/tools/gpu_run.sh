#!/usr/bin/env bash
# gpu_run.sh: one-shot build + GPU tests + benchmarks of the CUDA backend on a GPU machine,
# through the standalone build (no Kafka/PostgreSQL packages needed). Run from the repo root:
#   inference/backends/cuda/tools/gpu_run.sh OUTDIR [VOCAB_DIR] [stages]
# stages (default "info build test bench"; also "engine"): any subset, in that order. Everything is logged
# to OUTDIR/log; the benchmark tables to OUTDIR/bench-*.txt.
set -u
OUT=${1:?usage: gpu_run.sh OUTDIR [VOCAB_DIR] [stages]}
VOCAB=${2:-../shared/testdata/tokenizer}
STAGES=${3:-info build test bench}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log") 2>&1
B=build-gpu-dev
has() { case " $STAGES " in *" $1 "*) return 0 ;; esac; return 1; }
t0=$(date +%s)
stamp() { echo "=== [$(( $(date +%s) - t0 ))s] $*"; }

if has info; then
    stamp info
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv
    nvcc --version | tail -2
    cmake --version | head -1
    find / -xdev \( -name 'libcublas.so*' -o -name 'libcublasLt.so.1*' \) 2>/dev/null | grep -v '^/proc' | head
    ls /usr/local/cuda/lib64 2>/dev/null | grep -i cublas
    dpkg -l 2>/dev/null | grep -E 'rdkafka|jansson|avro|libpq|libcurl|cmocka' | awk '{print $2, $3}'
    nproc
fi
if ! ldconfig -p | grep -q 'libcublas.so.1[23]' && [ -z "${KINFER_CUBLAS_PATH:-}" ]; then
    lib=$(find / -xdev -name 'libcublas.so.1[23]' 2>/dev/null | head -1)
    [ -n "$lib" ] && export KINFER_CUBLAS_PATH=$lib && echo "KINFER_CUBLAS_PATH=$lib"
fi
if has build; then
    stamp build
    cmake -S inference/backends/cuda/standalone -B $B -DKF_CUDA_ARCHS=90 \
        -DKF_TESTDATA_TOKENIZER="$(realpath "$VOCAB")" >/dev/null && cmake --build $B -j 16 2>&1 | grep -Ev '^\[' ; \
        echo "build rc=${PIPESTATUS[0]}"
fi
if has test; then
    stamp test
    export KINFER_TESTDATA_TOKENIZER=$(realpath "$VOCAB")
    (cd $B && ctest --output-on-failure -V 2>&1 | grep -Ev '^(UpdateCTestConfiguration|Test project|Constructing|Checking|Parse|test [0-9]|      Start)')
    # Same prompt, greedy, CPU vs CUDA through the engine and CLI.
    $B/kinfer-gpu model-gen --arch llama --type f16 --vocab "$KINFER_TESTDATA_TOKENIZER/ggml-vocab-llama-bpe.gguf" \
        --out /tmp/kf_small.gguf --n-embd 256 --n-head 4 --n-ff 512 --std 0.08 --quiet
    for d in cpu cuda; do
        $B/kinfer-gpu generate -m /tmp/kf_small.gguf -p "The quick brown fox" -n 24 --temp 0 \
            --device $d >/tmp/gen_$d.txt 2>/tmp/gen_$d.err; echo "generate $d rc=$?"; tail -1 /tmp/gen_$d.err
    done
    cmp /tmp/gen_cpu.txt /tmp/gen_cuda.txt && echo "generate: cpu and cuda texts equal" || { echo "generate: texts differ"; cat /tmp/gen_cpu.txt; echo; cat /tmp/gen_cuda.txt; echo; }
fi
if has bench; then
    for ty in f16 q8_0; do
        stamp "model-gen qwen2 1.5B $ty"
        $B/kinfer-gpu model-gen --arch qwen2 --type $ty --vocab "$VOCAB/ggml-vocab-qwen2.gguf" \
            --out /tmp/qwen15_$ty.gguf --n-embd 1536 --n-layer 28 --n-head 12 --n-head-kv 2 \
            --n-ff 8960 --ctx 4096 --quiet || echo "model-gen $ty failed"
        stamp "bench $ty"
        $B/kinfer-cuda-bench -m /tmp/qwen15_$ty.gguf --seqs 1,8,32,64 --prompt-len 128 --gen 64 \
            2>&1 | tee "$OUT/bench-$ty.txt"
        if [ $ty = f16 ]; then
            for g in 0 8; do
                stamp "bench $ty, KINFER_CUDA_GEMV=$g (0: cuBLAS for every batch)"
                KINFER_CUDA_GEMV=$g $B/kinfer-cuda-bench -m /tmp/qwen15_$ty.gguf --seqs 1,2,4,8 \
                    --prompt-len 128 --gen 32 2>&1 | grep -E '^\| [0-9]' | tee "$OUT/bench-$ty-gemv$g.txt"
            done
        fi
    done
fi
if has engine; then
    stamp "engine bench-infer f16"
    timeout 90 $B/kinfer-gpu bench-infer -m /tmp/qwen15_f16.gguf --device cuda --seqs 1,8 \
        --prompt-len 128 --gen 32 --kv-mib 2048 2>&1 | tail -15 | tee "$OUT/bench-engine.txt"
fi
stamp done
