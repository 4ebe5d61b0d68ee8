#!/usr/bin/env bash
# Issue 13's GPU checks and figures in one call on a lent GPU machine, which has CUDA and PyTorch
# but no cargo: a voltlens built elsewhere with `--features cuda`, and the PyTorch reference on the
# same GPU (through scripts/clt_reference_cuda.py). Each step has a time limit; one that fails or
# runs out is reported and the next one runs.
#
# usage: [SKIP_REFERENCE=1] scripts/gpu_bench.sh VOLTLENS CLT_REFERENCE_PY LOG PHASE...
#   phases: smoke (the autodiff trainer on CUDA beside the CPU one, same seed); topk, relu and
#   topk512 (CLT training at the LBLM study's 24 layers × 8,192 features, d_model 128 or 512, ours
#   decoding sparsely and densely, and the reference's); model (the battery model's training/inference and forward benchmarks on
#   CUDA); pipeline (the quickstart pipeline with every stage on the GPU).
set -u
BIN=$1 REF=$2 LOG=$3
shift 3
HERE=$(cd "$(dirname "$0")" && pwd)
SCRATCH=$(mktemp -d)
exec > >(tee -a "$LOG") 2>&1

# step NAME SECONDS CMD...: runs CMD under a limit, with the peak device memory nvidia-smi saw.
step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$SCRATCH/mem" 2>/dev/null &
    local smi=$! start=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    kill "$smi" 2>/dev/null
    echo "-- $name: rc $rc, $((SECONDS - start)) s, peak GPU memory $(sort -n "$SCRATCH/mem" | tail -1) MiB"
}

# (Arrays, not functions: `timeout` runs programs.)
vl_bench=("$BIN" bench transcoder --work-dir "$SCRATCH/bench")
reference=(python3 "$HERE/clt_reference_cuda.py" "$REF" --synthetic 16384 --warmup 3)

for phase in "$@"; do
    case $phase in
    smoke)
        nvidia-smi -L
        "$BIN" --version
        step autodiff-cuda 70 "${vl_bench[@]}" --device cuda --trainer autodiff --layers 4 --d-model 64 --features 1024 --steps 50
        step sparse-cpu 20 "${vl_bench[@]}" --device cpu --trainer sparse --layers 4 --d-model 64 --features 1024 --steps 50
        ;;
    topk | relu | topk512)
        # CLT training at the LBLM study's 24 layers × 8,192 features per layer, ours and the
        # reference's (dense, and decoding only active features), on the same synthetic problem.
        d=128 act=topk
        [ "$phase" = relu ] && act=relu
        [ "$phase" = topk512 ] && d=512
        step "ours-$act-d$d" 120 "${vl_bench[@]}" --device cuda --layers 24 --d-model "$d" --features 8192 --activation "$act" --k 32 --steps 30
        # The same with every step decoded densely, as before the sparse decoding kernels.
        step "ours-dense-$act-d$d" 120 "${vl_bench[@]}" --device cuda --layers 24 --d-model "$d" --features 8192 --activation "$act" --k 32 --steps 30 --decoding dense
        [ "${SKIP_REFERENCE:-0}" = 1 ] && continue
        step "ref-dense-$act-d$d" 120 "${reference[@]}" --layers 24 --d "$d" --features 8192 --act "$act" --k 32 --steps 30
        step "ref-sparse-$act-d$d" 120 "${reference[@]}" --layers 24 --d "$d" --features 8192 --act "$act" --k 32 --steps 30 --sparse
        ;;
    model)
        step model-train 120 "$BIN" bench model --device cuda --steps 10
        step model-forward 150 "$BIN" bench model --device cuda --forward 3x64x128,12x256x2048,24x512x8192 --steps 3
        ;;
    pipeline)
        # The quickstart with every stage that takes a device on the GPU.
        step quickstart-cuda 300 "$BIN" run pipelines/quickstart.toml --device cuda --runs-dir "$SCRATCH/runs"
        for m in model/eval transcoder; do
            [ -f "$SCRATCH/runs/quickstart/$m/metrics.json" ] && cp "$SCRATCH/runs/quickstart/$m/metrics.json" "$(dirname "$LOG")/quickstart-${m//\//-}.json"
        done
        ;;
    *) echo "unknown phase $phase" ;;
    esac
done
rm -rf "$SCRATCH"
