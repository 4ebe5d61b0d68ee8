#!/usr/bin/env bash
# Labels that travel (issue 11): a finished run's model + transcoder recorded over another
# dataset, labelled there with the run's label seed, and the run's accepted labels re-scored
# there by `label --check`. Prints coverage on both, how many features labelled on both keep a
# covariate (and the same sentence), and how many of the run's labels still hold.
#
#   scripts/label_transfer.sh runs/quickstart ../shared/datasets/pybamm-mohtat2020 /tmp/transfer
#
# OTHER is anything `voltlens ingest` reads. Writes only under OUT (created; reused on rerun).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$1 OTHER=$2 OUT=$3
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/voltlens/target}"
BIN="$CARGO_TARGET_DIR/debug/voltlens"
cargo build -q
mkdir -p "$OUT"
python3 -c "import json,sys; print('seed =', json.load(open(sys.argv[1]))['seed'])" "$RUN/label/manifest.json" >"$OUT/label.toml"
[ -f "$OUT/data/cells.parquet" ] || "$BIN" ingest "$OTHER" --out "$OUT/data" -q
[ -f "$OUT/record/record.json" ] || "$BIN" record --data "$OUT/data" --model "$RUN/model/model" --transcoder "$RUN/transcoder" --out "$OUT/record" >/dev/null
"$BIN" label -q --data "$OUT/data" --record "$OUT/record" --out "$OUT/label" --config "$OUT/label.toml" >/dev/null
"$BIN" label -q --check "$RUN/label" --data "$OUT/data" --record "$OUT/record" --out "$OUT/check" >"$OUT/check.json"
python3 - "$RUN/label/labels.json" "$OUT/label/labels.json" "$OUT/check.json" <<'PY'
import json, sys
def load(path):
    return {(f["layer"], f["feature"]): f for f in json.load(open(path))}
def covariates(f):
    c = f["candidates"][0]["candidate"]
    if c["kind"] == "detector":
        return {a["covariate"] for a in c["atoms"] + c.get("or", [])}
    return {c["covariate"]} | ({c["within"]["covariate"]} if c.get("within") else set()) | ({c["and"]["covariate"]} if c.get("and") else set())
# The report's covariate families (src/report/overview.rs `family`): current and C-rate, time
# into the step and since the last current step, are one quantity in other units or anchors.
FAMILY = {"soc": "soc", "c_rate": "current", "abs_c_rate": "current", "c_rate_change_next": "current", "abs_c_rate_change_next": "current", "last_current_step": "current",
          "current": "current", "state": "step", "step_kind": "step", "step_time": "time", "time_since_current_change": "time",
          "dv_dt": "voltage", "dv_next": "voltage", "voltage": "voltage", "above_lowest_voltage": "voltage", "below_highest_voltage": "voltage",
          "temperature": "temperature", "ambient_temperature": "temperature", "cycle_number": "ageing", "soh": "ageing", "protocol": "protocol"}
families = lambda f: {FAMILY.get(c, c) for c in covariates(f)}
first, second = load(sys.argv[1]), load(sys.argv[2])
for name, labels in (("run", first), ("other", second)):
    accepted = sum(f["accepted"] for f in labels.values())
    print(f"{name}: {accepted} of {len(labels)} live features labelled ({accepted / max(1, len(labels)):.1%})")
both = [k for k, f in first.items() if f["accepted"] and k in second and second[k]["accepted"]]
keep = sum(bool(covariates(first[k]) & covariates(second[k])) for k in both)
family = sum(bool(families(first[k]) & families(second[k])) for k in both)
same = sum(first[k]["label"] == second[k]["label"] for k in both)
print(f"labelled on both: {len(both)}; keep a covariate: {keep} ({keep / max(1, len(both)):.0%}); keep a covariate family: {family} ({family / max(1, len(both)):.0%}); same sentence: {same}")
check = json.load(open(sys.argv[3]))
print(f"label --check: {check['still_hold']} of {check['checked']} accepted labels of the run still hold ({check['still_hold_share']:.0%})")
PY
