#!/usr/bin/env bash
# cpu_engine_bench.sh: the CPU engine benchmark of docs/benchmarks.md ("CPU engine"): for each
# benchmark model, the machine's read bandwidth measured right before and right after the run
# (it moves with the neighbours on a shared VM), then `kinfer bench-infer` (prefill of one
# 128-token prompt; decode with 1, 8 and 32 sequences), and the decode bound that the
# bandwidth sets: bandwidth / weight bytes read per token (every matrix once, and with tied
# embeddings the whole table for the logits). Prints one markdown row per run. Not a test.
#
#   bench/cpu_engine_bench.sh [--build build] [--dir /tmp/kinfer-perf] [--threads 2]
#                             [--gen 32] [--runs 1] [--models q05_q8,q05_f16,q15_q8]
#
# Models (random weights, written once with `kinfer model-gen` if missing, 3.1 GB in all):
#   q05_q8 / q05_f16  Qwen2.5-0.5B shape (896 x 24 layers, 14 heads, 2 KV heads, ff 4864,
#                     tied embeddings, qwen2 vocab) as Q8_0 / F16
#   q15_q8            Qwen2.5-1.5B shape (1536 x 28, 12 heads, 2 KV heads, ff 8960) as Q8_0
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
build="$root/build" dir=/tmp/kinfer-perf threads=2 gen=32 runs=1 models=q05_q8,q05_f16,q15_q8
while [ $# -gt 0 ]; do
	case "$1" in
	--build) build=$2; shift 2 ;;
	--dir) dir=$2; shift 2 ;;
	--threads) threads=$2; shift 2 ;;
	--gen) gen=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--models) models=$2; shift 2 ;;
	-h | --help) sed -n '2,16p' "$0"; exit 0 ;;
	*) echo "cpu_engine_bench.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
kinfer="$build/cli/kinfer" bench_cpu="$build/tests/bench_cpu"
for b in "$kinfer" "$bench_cpu"; do
	[ -x "$b" ] || { echo "cpu_engine_bench.sh: $b not built (cmake --build $build)" >&2; exit 1; }
done
vocab="$root/../shared/testdata/tokenizer/ggml-vocab-qwen2.gguf"
mkdir -p "$dir"

gen_model() { # name -> path (generated on first use)
	local name=$1 out="$dir/$1.gguf" shape type
	case "$name" in
	q05_q8) shape="896 24 14 2 4864" type=q8_0 ;;
	q05_f16) shape="896 24 14 2 4864" type=f16 ;;
	q15_q8) shape="1536 28 12 2 8960" type=q8_0 ;;
	*) echo "cpu_engine_bench.sh: unknown model $name" >&2; exit 2 ;;
	esac
	if [ ! -s "$out" ]; then
		set -- $shape
		echo "writing $out ..." >&2
		"$kinfer" model-gen --arch qwen2 --type "$type" --vocab "$vocab" --n-embd "$1" \
			--n-layer "$2" --n-head "$3" --n-head-kv "$4" --n-ff "$5" --tied --quiet \
			--out "$out.tmp" && mv "$out.tmp" "$out"
	fi
	echo "$out"
}

bw() { # GB/s of $threads threads reading 1 GiB, best of 3
	"$bench_cpu" bw --threads "$threads" --reps 3 | awk '/^read bandwidth/ {
		for (i = 1; i <= NF; i++) if ($(i + 1) == "GB/s") { print $i; exit } }'
}

echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs," \
	"simd: $("$bench_cpu" mm --type q8_0x8 --tok 1 --secs 0.05 | awk -F'simd ' '/simd/ {print $2}')"
echo "| model | bw before / after GB/s | bound t/s | prefill 128 t/s | decode 1 seq t/s |" \
	"share of bound | 8 seqs | 32 seqs | peak RSS MiB | load avg |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
IFS=, read -r -a list <<<"$models"
for ((r = 0; r < runs; r++)); do
	for name in "${list[@]}"; do
		path=$(gen_model "$name")
		b0=$(bw)
		out=$("$kinfer" bench-infer -m "$path" --threads "$threads" --gen "$gen" --warmup 1 \
			--device cpu 2>/dev/null)
		b1=$(bw)
		load=$(cut -d' ' -f1 /proc/loadavg)
		awk -v name="$name" -v b0="$b0" -v b1="$b1" -v la="$load" '
			/^prefill:/ { for (i = 1; i <= NF; i++) if ($i == "tokens/s") pre = $(i - 1) }
			/^decode:/ { n = $2; for (i = 1; i <= NF; i++) if ($i == "tokens/s") { d[n] = $(i - 1); break } }
			/^peak RSS:/ { rss = $3; match($0, /weights: [0-9]+/); wb = substr($0, RSTART + 9, RLENGTH - 9) + 0 }
			END {
				bwm = (b0 + b1) / 2; bound = bwm * 1e9 / wb
				printf "| %s | %.1f / %.1f | %.1f | %.1f | %.1f | %.2f | %.1f | %.1f | %.0f | %s |\n",
					name, b0, b1, bound, pre, d["1"], d["1"] / bound, d["8"], d["32"], rss, la
			}' <<<"$out"
	done
done
