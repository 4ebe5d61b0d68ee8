#!/usr/bin/env bash
# circuit-tracer (PyPI) loads VoltLens's transcoder exports with its own loaders and reconstructs
# mlp_out from cached resid_mid as VoltLens does: per-layer FVU within 0.01 of ours is the target.
# Then the other way: a JumpReLU CLT saved by circuit-tracer's own `to_safetensors` (bf16, no
# config.yaml) is imported with `voltlens import-clt`, scored the same, and recorded.
# An attribution graph goes through circuit-tracer's graph model, local server and front end, and
# is rebuilt independently in PyTorch (scripts/interop_attribution.py: every edge, activation,
# score and circuit-tracer's own pruning of the same adjacency).
#
# Usage: scripts/interop_circuit_tracer.sh
#   Trains a small model and three transcoders (ReLU CLT, JumpReLU CLT, PLT) on synthetic cells
#   (a few minutes on 2 cores), caches activations, compares.
# Environment: VENV (default ~/.cache/voltlens/venv-ct, made and filled when it lacks
#   circuit-tracer), TORCH_VENV (a venv whose torch to reuse instead of downloading one),
#   CIRCUIT_TRACER_VERSION (default 0.5.0), WORK (scratch folder, default a new temporary one),
#   VOLTLENS (a built binary; default `cargo run`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/interop_common.sh"
ensure_venv "${VENV:-$HOME/.cache/voltlens/venv-ct}" circuit_tracer "circuit-tracer==${CIRCUIT_TRACER_VERSION:-0.5.0}"
check="$root/scripts/interop_circuit_tracer.py"

voltlens -q synth --cells 8 --seed 3 --out "$work/data"
cat > "$work/model.toml" <<TOML
[arch]
layers = 3
d_model = 32
d_mlp = 128
context = 64
[train]
steps = 200
warmup = 20
val_every = 100
val_windows = 16
TOML
voltlens -q train-model --data "$work/data" --config "$work/model.toml" --out "$work/model" --seed 3 > /dev/null
voltlens -q cache-activations --data "$work/data" --model "$work/model" --out "$work/acts.safetensors" --tokens 8192 --seed 11

status=0
for spec in "clt relu clt" "clt-jump jumprelu clt" "plt relu plt"; do
    read -r name activation variant <<< "$spec"
    case $activation in
        relu) act='activation = { kind = "relu" }' ;;
        jumprelu) act='activation = { kind = "jumprelu", threshold = 0.03, bandwidth = 0.05 }' ;;
    esac
    cat > "$work/$name.toml" <<TOML
eval_tokens = 2048
[config]
variant = "$variant"
features = 128
$act
lambda = 0.0003
batch = 256
steps = 300
TOML
    voltlens -q train-transcoder --data "$work/data" --model "$work/model" --config "$work/$name.toml" --out "$work/$name" --seed 3 > /dev/null
    # Ours: the export read back and scored on the cache, in file order.
    voltlens -q import-clt --from "$work/$name/circuit-tracer" --out "$work/$name-ours" --eval "$work/acts.safetensors" > /dev/null
    "$python" "$check" compare "$work/$name/circuit-tracer" "$work/$name-ours/eval.json" "$work/acts.safetensors" || status=1
done

# An attribution graph through circuit-tracer's graph model, local server and front-end code.
cell=$(basename "$(ls "$work/data/timeseries/"*.parquet | head -1)" .parquet)
voltlens -q circuits graph --data "$work/data" --model "$work/model" --transcoder "$work/clt" --cell "$cell" --step 200 --window 32 --out "$work/graph" > /dev/null
"$python" "$check" graph "$work/graph" || status=1

# The same graphs rebuilt independently in PyTorch: reference.py's model, the transcoders through
# circuit-tracer's loaders, every direct effect by autograd in float64, circuit-tracer's prune_graph.
# attribution_check MODEL TRANSCODER NAME: a pruned and a full graph of MODEL with TRANSCODER.
attribution_check() {
    local model=$1 transcoder=$2 name=$3
    voltlens -q export-model "$model" --out "$work/export-$name" > /dev/null
    voltlens -q circuits graph --data "$work/data" --model "$model" --transcoder "$transcoder" --cell "$cell" --step 200 --window 32 --out "$work/attr-$name" > /dev/null
    voltlens -q circuits graph --data "$work/data" --model "$model" --transcoder "$transcoder" --cell "$cell" --step 200 --window 32 --node-threshold 1.0 --edge-threshold 1.0 --out "$work/attr-$name-full" > /dev/null
    "$python" "$root/scripts/interop_attribution.py" "$work/data" "$work/export-$name" "$transcoder/circuit-tracer" "$work/attr-$name" --full "$work/attr-$name-full" || status=1
}
for name in clt plt; do
    attribution_check "$work/model" "$work/$name" "$name"
done
# A model of eight blocks of two heads (3^8 = 6,561 paths of head choices) is swept, not expanded.
sed 's/^layers = 3$/layers = 8/; s/^steps = 200$/steps = 60/' "$work/model.toml" > "$work/deep-model.toml"
voltlens -q train-model --data "$work/data" --config "$work/deep-model.toml" --out "$work/deep-model" --seed 3 > /dev/null
sed 's/^steps = 300$/steps = 100/' "$work/clt.toml" > "$work/deep-clt.toml"
voltlens -q train-transcoder --data "$work/data" --model "$work/deep-model" --config "$work/deep-clt.toml" --out "$work/deep-clt" --seed 3 > /dev/null
attribution_check "$work/deep-model" "$work/deep-clt" deep-clt

# The other way: circuit-tracer writes a CLT, VoltLens imports it, scores it and records with it.
"$python" "$check" write "$work/clt/circuit-tracer" "$work/foreign" "$work/acts.safetensors"
voltlens -q import-clt --from "$work/foreign" --out "$work/foreign-ours" --eval "$work/acts.safetensors" > /dev/null
"$python" "$check" compare "$work/foreign" "$work/foreign-ours/eval.json" "$work/acts.safetensors" || status=1
voltlens -q record --data "$work/data" --model "$work/model" --transcoder "$work/foreign-ours" --out "$work/foreign-record" > /dev/null
echo "record with the imported CLT: $(ls "$work/foreign-record" | tr '\n' ' ')"
exit $status
