#!/usr/bin/env bash
# Hugging Face transformers (PyPI): battery models built on its own GPT2Model and LlamaModel
# (grouped-query attention, half-split rotary), saved as their state_dict() comes, import with
# `voltlens import-model --check` within 1e-4 V of transformers' own outputs.
#
# Usage: scripts/interop_transformers.sh
# Environment: VENV (default ~/.cache/voltlens/venv-transformers, made and filled when it lacks
#   transformers), TORCH_VENV (a venv whose torch to reuse instead of downloading one),
#   TRANSFORMERS_VERSION (default 5.25.0), WORK (scratch folder, default a new temporary one),
#   VOLTLENS (a built binary; default `cargo run`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/interop_common.sh"
ensure_venv "${VENV:-$HOME/.cache/voltlens/venv-transformers}" "transformers, torch, safetensors" \
    "transformers==${TRANSFORMERS_VERSION:-5.25.0}"
"$python" -c "import torch, safetensors" 2>/dev/null || "$python" -m pip install -q torch safetensors

"$python" "$root/scripts/interop_transformers.py" "$work/models"
status=0
for kind in gpt2 llama; do
    dir="$work/models/$kind"
    if voltlens -q import-model --weights "$dir/weights.safetensors" --config "$dir/arch.toml" \
        --check "$dir/check.safetensors" --out "$work/$kind-imported" > "$work/$kind.json"; then
        echo "$kind: imported, $(grep -E 'max_abs_error_v|max_rel_error' "$work/$kind.json" | tr -d ' \n')"
    else
        echo "$kind: import failed"
        status=1
    fi
done
exit $status
