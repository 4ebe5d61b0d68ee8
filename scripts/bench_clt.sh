#!/usr/bin/env bash
# VoltLens's transcoder trainer against the dense PyTorch reference (shared/bench/clt_reference.py),
# one after the other on the same activation cache, same shapes and hyper-parameters; prints both
# JSON lines and the tokens/s ratio with FVU and L0 beside it.
#
#   scripts/bench_clt.sh                      # synthetic 100k-token cache, ReLU, 300 steps, 2 threads
#   STEPS=100 ACT=topk K=32 scripts/bench_clt.sh
#   CACHE=/path/acts.safetensors LAYERS=6 D=128 scripts/bench_clt.sh
#
# Needs the reference's venv: python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch numpy safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/voltlens/target}"
PY="${PY:-/tmp/ref/bin/python}"
LAYERS="${LAYERS:-4}" D="${D:-64}" FEATURES="${FEATURES:-1024}" ACT="${ACT:-relu}" K="${K:-32}"
LAM="${LAM:-1e-3}" BATCH="${BATCH:-1024}" STEPS="${STEPS:-300}" THREADS="${THREADS:-2}" TOKENS="${TOKENS:-100000}"
CACHE="${CACHE:-/tmp/voltlens-bench/synthetic-${TOKENS}-${LAYERS}x${D}-f${FEATURES}.safetensors}"
export VOLTLENS_BENCH_CACHE="$CACHE" VOLTLENS_BENCH_LAYERS="$LAYERS" VOLTLENS_BENCH_D="$D" VOLTLENS_BENCH_FEATURES="$FEATURES" \
  VOLTLENS_BENCH_ACT="$ACT" VOLTLENS_BENCH_K="$K" VOLTLENS_BENCH_LAM="$LAM" VOLTLENS_BENCH_BATCH="$BATCH" \
  VOLTLENS_BENCH_STEPS="$STEPS" VOLTLENS_BENCH_THREADS="$THREADS" VOLTLENS_BENCH_TOKENS="$TOKENS"

# Build first (and write the synthetic cache with a 1-step run) so that neither timing includes it.
VOLTLENS_BENCH_STEPS=1 cargo test -q --test transcoder bench_against_reference -- --ignored --nocapture >/dev/null
ours=$(cargo test -q --test transcoder bench_against_reference -- --ignored --nocapture | sed -n 's/^VOLTLENS_BENCH //p')
ref=$("$PY" ../shared/bench/clt_reference.py --acts "$CACHE" --layers "$LAYERS" --d "$D" --features "$FEATURES" \
  --act "$ACT" --k "$K" --lam "$LAM" --batch "$BATCH" --steps "$STEPS" --threads "$THREADS")
echo "voltlens:  $ours"
echo "reference: $ref"
"$PY" - "$ours" "$ref" <<'PY'
import json, sys
o, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
mean = lambda v: sum(v) / len(v)
print(f"tokens/s ratio voltlens/reference = {o['tokens_per_s'] / r['tokens_per_s']:.2f} "
      f"({o['tokens_per_s']:.0f} vs {r['tokens_per_s']:.0f}); "
      f"mean FVU {mean(o['metrics']['fvu_per_layer']):.4f} vs {mean(r['fvu_per_layer']):.4f}; "
      f"mean L0 {mean(o['metrics']['l0_per_layer']):.1f} vs {mean(r['l0_per_layer']):.1f}")
PY
