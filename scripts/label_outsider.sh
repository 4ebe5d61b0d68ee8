#!/usr/bin/env bash
# Labelling coverage on a chemistry nobody tuned for (issue 11): 16 PyBaMM cells generated with
# the team's ../shared/tools/gen_pybamm.py, then the pipeline a new user would write (the default
# model recipe, the shipped pipelines' 256-feature CLT, record, mine, label at seed 31), then the
# same record labelled again at two more label seeds. Prints coverage per seed and its mean.
#
#   scripts/label_outsider.sh /tmp/outsider Marquis2019      # ~20 min on 2 cores
#
# PARAMSET is any PyBaMM parameter set. Prada2013 (LFP) lacks the lumped thermal model's inputs;
# they are taken from Chen2020 (current collectors, densities, heat capacities, conductivities,
# cooling), so the flat-OCV chemistry can be generated too. PyBaMM goes into $PYBAMM_VENV
# (default ~/.cache/voltlens/venv-pybamm). Writes only under OUT (created; reused on rerun).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$1 PARAMSET=$2 GEN_SEED=${3:-7}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/voltlens/target}"
BIN="$CARGO_TARGET_DIR/debug/voltlens"
VENV="${PYBAMM_VENV:-$HOME/.cache/voltlens/venv-pybamm}"
GEN=../shared/tools/gen_pybamm.py
[ -f "$GEN" ] || { echo "needs the team's $GEN"; exit 1; }
cargo build -q
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if ! "$VENV/bin/python" -c "import pybamm, pyarrow" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q pybamm pyarrow numpy
fi
if [ ! -f "$OUT/cells/cells.json" ]; then
    "$VENV/bin/python" - "$GEN" "$OUT/cells" "$PARAMSET" "$GEN_SEED" 16 <<'PY'
import runpy, sys, pybamm
init = pybamm.ParameterValues.__init__
def with_thermal_inputs(self, values, *args, **kwargs):
    init(self, values, *args, **kwargs)
    if values == "Prada2013":
        chen = pybamm.ParameterValues("Chen2020")
        thermal = ("current collector", "density", "heat", "thermal", "cooling", "volume")
        for key, value in chen.items():
            if key not in self.keys() and any(word in key.lower() for word in thermal):
                self[key] = value
pybamm.ParameterValues.__init__ = with_thermal_inputs
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
PY
fi
cat >"$OUT/pipeline.toml" <<EOF
name = "outsider"
seed = 31

[data]
source = "ingest"
inputs = ["$OUT/cells"]

[model]

[transcoder]
eval_tokens = 16384

[transcoder.config]
variant = "clt"
features = 256
steps = 1000
batch = 1024
lambda = 1e-3

[record]

[mine]

[label]
EOF
"$BIN" run -q "$OUT/pipeline.toml" --runs-dir "$OUT/runs"
RUN="$OUT/runs/outsider"
for seed in 1 2; do
    printf 'seed = %s\n' "$seed" >"$OUT/label-seed$seed.toml"
    [ -f "$OUT/label-seed$seed/labels.json" ] || "$BIN" label -q --data "$RUN/data/dataset" --record "$RUN/record" --out "$OUT/label-seed$seed" --config "$OUT/label-seed$seed.toml" >/dev/null
done
python3 - "$RUN/label" "$OUT/label-seed1" "$OUT/label-seed2" <<'PY'
import json, statistics, sys
shares = []
for seed, folder in zip((31, 1, 2), sys.argv[1:]):
    labels = json.load(open(f"{folder}/labels.json"))
    accepted = [f for f in labels if f["accepted"]]
    auroc = [f["candidates"][0]["test"]["auroc"] for f in accepted if f["candidates"][0]["candidate"]["kind"] != "tracker"]
    shares.append(len(accepted) / len(labels))
    print(f"label seed {seed}: {len(accepted)} / {len(labels)} live features labelled ({shares[-1]:.1%}), median held-out AUROC of accepted detectors {statistics.median(auroc):.3f}")
print(f"mean coverage {statistics.mean(shares):.1%} (issue 11 target: 60 % on a generated set)")
PY
