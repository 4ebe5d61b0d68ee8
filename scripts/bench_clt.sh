#!/usr/bin/env bash
# VoltLens's CPU transcoder trainer against the PyTorch reference (shared/bench/clt_reference.py),
# dense and --sparse, on real activations of a battery model (a `voltlens cache-activations`
# cache), same shapes and hyper-parameters, every (F, activation) point run REPEATS times with the
# three sides alternating in rotating order. Prints one table: median tokens/s of each side, the
# ratio to the better reference, and FVU / L0 of each beside it (a faster trainer at worse FVU has
# not won). Before it: the machine's GEMM rate (torch) and our encoder's rate at each F. Raw JSON
# lines go to $OUT/results.jsonl.
#
#   scripts/bench_clt.sh                                    # F 1024 4096 16384 × relu topk, 300 steps
#   CACHE=acts.safetensors LAYERS=3 FEATURES=4096 ACTS=topk REPEATS=3 scripts/bench_clt.sh
#   MODEL=runs/x/model/model DATA=runs/x/data/dataset scripts/bench_clt.sh   # caches that model
#   SYNTHETIC=100000 scripts/bench_clt.sh                   # the reference's synthetic problem
#   FEATURES=1024 ACTS=relu STEPS=3000 SIDES="ours dense" scripts/bench_clt.sh   # a longer run, one reference
#
# Without CACHE, MODEL and DATA default to the quickstart pipeline's (voltlens run pipelines/quickstart.toml).
# Needs torch, numpy and safetensors for the reference: PY=/path/to/python (default: the venv
# .ci/run makes, ~/.cache/voltlens/venv-torch).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/voltlens/target}"
PY="${PY:-$HOME/.cache/voltlens/venv-torch/bin/python}"
FEATURES="${FEATURES:-1024 4096 16384}" ACTS="${ACTS:-relu topk}" K="${K:-32}" LAM="${LAM:-1e-3}"
BATCH="${BATCH:-1024}" STEPS="${STEPS:-300}" THREADS="${THREADS:-2}" REPEATS="${REPEATS:-1}"
TOKENS="${TOKENS:-200000}" OUT="${OUT:-/tmp/voltlens-bench}" SIDES="${SIDES:-ours dense sparse}"
mkdir -p "$OUT"
"$PY" -c "import torch, numpy, safetensors" || { echo "PY=$PY lacks torch/numpy/safetensors" >&2; exit 1; }

cargo build -q
VOLTLENS="$CARGO_TARGET_DIR/debug/voltlens"
if [[ -n "${SYNTHETIC:-}" ]]; then
  LAYERS="${LAYERS:-4}" D="${D:-64}"
  CACHE="$OUT/synthetic-$SYNTHETIC-${LAYERS}x$D.safetensors"
  [[ -f "$CACHE" ]] || VOLTLENS_BENCH_CACHE="$CACHE" VOLTLENS_BENCH_TOKENS="$SYNTHETIC" VOLTLENS_BENCH_LAYERS="$LAYERS" \
    VOLTLENS_BENCH_D="$D" VOLTLENS_BENCH_STEPS=1 cargo test -q --test transcoder bench_against_reference -- --ignored >/dev/null
elif [[ -z "${CACHE:-}" ]]; then
  MODEL="${MODEL:-runs/quickstart/model/model}" DATA="${DATA:-runs/quickstart/data/dataset}"
  [[ -d "$MODEL" && -d "$DATA" ]] || { echo "no activations: set CACHE, or MODEL and DATA (or run the quickstart pipeline first)" >&2; exit 1; }
  CACHE="$OUT/acts-$(echo "$MODEL" | tr / _)-$TOKENS.safetensors"
  [[ -f "$CACHE" ]] || "$VOLTLENS" -q cache-activations --data "$DATA" --model "$MODEL" --out "$CACHE" --tokens "$TOKENS"
fi
# The cache's [tokens, layers, d].
read -r LAYERS D < <("$PY" -c "
from safetensors import safe_open
with safe_open('$CACHE', 'np') as f: s = f.get_slice('resid_mid').get_shape()
print(s[1], s[2])")
echo "cache $CACHE: $LAYERS layers × d $D; $STEPS steps of $BATCH tokens, $THREADS threads, $REPEATS repeat(s)"
# Build the bench test once so that no timing includes compilation.
cargo test -q --test transcoder --no-run 2>/dev/null

# The reference trains 10 untimed warm-up steps before its STEPS timed ones; ours trains as many in
# all, so that both FVUs come from the same number of updates.
ours() {
  VOLTLENS_BENCH_CACHE="$CACHE" VOLTLENS_BENCH_FEATURES="$1" VOLTLENS_BENCH_ACT="$2" VOLTLENS_BENCH_K="$K" \
  VOLTLENS_BENCH_LAM="$LAM" VOLTLENS_BENCH_BATCH="$BATCH" VOLTLENS_BENCH_STEPS="$((STEPS + 10))" VOLTLENS_BENCH_THREADS="$THREADS" \
    cargo test -q --test transcoder bench_against_reference -- --ignored --nocapture | sed -n 's/^VOLTLENS_BENCH //p'
}
reference() {
  "$PY" ../shared/bench/clt_reference.py --acts "$CACHE" --layers "$LAYERS" --d "$D" --features "$1" \
    --act "$2" --k "$K" --lam "$LAM" --batch "$BATCH" --steps "$STEPS" --threads "$THREADS" ${3:+--sparse}
}
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
for f in $FEATURES; do
  for act in $ACTS; do
    for r in $(seq 1 "$REPEATS"); do
      # Rotate the order each repeat so that no side always runs first (or last) on a warming machine.
      sides=($SIDES); rot=$(( (r - 1) % ${#sides[@]} )); sides=("${sides[@]:$rot}" "${sides[@]:0:$rot}")
      for side in "${sides[@]}"; do
        case $side in
          ours) line=$(ours "$f" "$act") ;;
          dense) line=$(reference "$f" "$act") ;;
          sparse) line=$(reference "$f" "$act" sparse) ;;
        esac
        echo "{\"side\": \"$side\", \"features\": $f, \"act\": \"$act\", \"repeat\": $r, \"result\": $line}" >> "$RESULTS"
        echo "  F $f $act repeat $r: $side done" >&2
      done
    done
  done
done
# The machine's GEMM rate (torch, 2,048³, THREADS threads) and our encoder's (product and TopK
# selection on 1,024 tokens of the cache), for the target "encoder at ≥ 50 % of the machine's rate".
"$PY" -c "
import torch, time
torch.set_num_threads($THREADS); a, b = torch.randn(2048, 2048), torch.randn(2048, 2048); a @ b
t = time.perf_counter(); r = 0
while time.perf_counter() - t < 2: a @ b; r += 1
print(f'machine GEMM (torch 2048³, $THREADS threads): {2 * 2048**3 * r / (time.perf_counter() - t) / 1e9:.1f} GFLOP/s')"
for f in $FEATURES; do
  VOLTLENS_BENCH_CACHE="$CACHE" VOLTLENS_BENCH_FEATURES="$f" VOLTLENS_BENCH_THREADS="$THREADS" \
    cargo test -q --test transcoder bench_encoder -- --ignored --nocapture | sed -n 's/^VOLTLENS_ENCODER /encoder /p'
done
"$PY" - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
mean = lambda v: sum(v) / len(v)
def fvu(r): return mean(r["metrics"]["fvu_per_layer"] if "metrics" in r else r["fvu_per_layer"])
def l0(r): return mean(r["metrics"]["l0_per_layer"] if "metrics" in r else r["l0_per_layer"])
print(f"{'F':>6} {'act':<5} {'ours tok/s':>11} {'dense':>8} {'sparse':>8} {'ratio':>6}  {'FVU ours/dense/sparse':<24} {'L0 ours/dense/sparse'}")
for key in dict.fromkeys((r["features"], r["act"]) for r in rows):
    by = {s: [r["result"] for r in rows if (r["features"], r["act"]) == key and r["side"] == s] for s in ("ours", "dense", "sparse")}
    tps = {s: statistics.median(x["tokens_per_s"] for x in v) for s, v in by.items() if v}
    med = {s: sorted(v, key=lambda x: x["tokens_per_s"])[len(v) // 2] for s, v in by.items() if v}
    refs = [tps[s] for s in ("dense", "sparse") if s in tps]
    ratio = f"{tps['ours'] / max(refs):>5.2f}×" if "ours" in tps and refs else "    -"
    f = "/".join(f"{fvu(med[s]):.4f}" if s in med else "-" for s in by)
    l = "/".join(f"{l0(med[s]):.1f}" if s in med else "-" for s in by)
    cell = lambda s: f"{tps[s]:.0f}" if s in tps else "-"
    print(f"{key[0]:>6} {key[1]:<5} {cell('ours'):>11} {cell('dense'):>8} {cell('sparse'):>8} {ratio}  {f:<24} {l}")
PY
