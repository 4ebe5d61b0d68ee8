#!/usr/bin/env bash
# battdat (battery-data-toolkit, PyPI) reads VoltLens's battdat export and runs its validators on
# every cell: 0 errors is the target. Prints one line per cell and a total per dataset.
#
# Usage: scripts/interop_battdat.sh [DATASET_DIR ...]
#   Each DATASET_DIR is a canonical dataset (cells.parquet + timeseries/). Without arguments the
#   quickstart inputs (data/pybamm-chen2020 + data/cyclers) and, when present, the dev set
#   ../shared/datasets/pybamm-chen2020 are ingested first.
# Environment: VENV (default ~/.cache/voltlens/venv-battdat, made and filled when it lacks battdat),
#   BATTDAT_VERSION (default 0.4.6), WORK (scratch folder, default a new temporary one),
#   VOLTLENS (a built binary; default `cargo run`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/interop_common.sh"
ensure_venv "${VENV:-$HOME/.cache/voltlens/venv-battdat}" battdat "battery-data-toolkit==${BATTDAT_VERSION:-0.4.6}"

datasets=("$@")
if [ ${#datasets[@]} -eq 0 ]; then
    voltlens -q ingest "$root/data/pybamm-chen2020" "$root/data/cyclers" --out "$work/quickstart"
    datasets+=("$work/quickstart")
    dev="$root/../shared/datasets/pybamm-chen2020"
    if [ -d "$dev" ]; then
        voltlens -q ingest "$dev" --out "$work/dev"
        datasets+=("$work/dev")
    fi
fi

status=0
for dataset in "${datasets[@]}"; do
    out="$work/battdat-$(basename "$dataset")"
    voltlens -q export --format battdat --data "$dataset" --out "$out"
    "$python" "$root/scripts/interop_battdat.py" "$out" || status=1
done
exit $status
