#!/usr/bin/env bash
# Peak memory and wall time of `voltlens mine` and `voltlens label` at 1× and 10× the rows: the
# model and transcoder of a finished run record CELLS and 10·CELLS synthetic cells (same
# generator settings, so 10× the rows of the same kind), then each command runs REPEATS times per
# size, 1× and 10× alternating, under /usr/bin/time -v. Prints the medians and the 10×/1× ratios.
#
#   scripts/bench_mine.sh                       # runs/quickstart, 5 cells vs 50, 3 repeats
#
# CELLS should be a multiple of the synthetic protocol families (5), so that 1× holds the same
# kinds of cell as 10×: mine's peak follows the largest cell.
#   RUN=runs/pybamm-dev CELLS=4 REPEATS=5 scripts/bench_mine.sh
#   SKIP_LABEL=1 scripts/bench_mine.sh          # mine only
#   MODEL=DIR TRANSCODER=DIR scripts/bench_mine.sh   # any train-model / train-transcoder output
#
# Writes only under WORK (default /tmp/voltlens-bench-mine), which it creates.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/voltlens/target}"
RUN="${RUN:-runs/quickstart}" CELLS="${CELLS:-5}" REPEATS="${REPEATS:-3}" WORK="${WORK:-/tmp/voltlens-bench-mine}"
MODEL="${MODEL:-$RUN/model/model}" TRANSCODER="${TRANSCODER:-$RUN/transcoder}"
BIN="$CARGO_TARGET_DIR/debug/voltlens"
cargo build -q
mkdir -p "$WORK"

for n in 1 10; do
  if [ ! -f "$WORK/record-$n/record.json" ]; then
    "$BIN" synth --cells $((CELLS * n)) --seed 1 --out "$WORK/data-$n"
    "$BIN" record --data "$WORK/data-$n" --model "$MODEL" --transcoder "$TRANSCODER" --out "$WORK/record-$n" >/dev/null
  fi
done

# One timed run: appends "command size peak_mb seconds" to $WORK/times.txt.
timed() {
  local name=$1 n=$2; shift 2
  /usr/bin/time -v "$@" >/dev/null 2>"$WORK/time.txt"
  python3 - "$name" "$n" "$WORK/time.txt" >>"$WORK/times.txt" <<'PY'
import re, sys
text = open(sys.argv[3]).read()
kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
wall = re.search(r"Elapsed \(wall clock\) time .*: (\S+)", text).group(1)
secs = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
print(sys.argv[1], sys.argv[2], kb / 1024, secs)
PY
}

: >"$WORK/times.txt"
for rep in $(seq "$REPEATS"); do
  for n in 1 10; do
    timed mine "$n" "$BIN" mine --record "$WORK/record-$n" --out "$WORK/mine-$n"
    if [ -z "${SKIP_LABEL:-}" ]; then
      timed label "$n" "$BIN" label --data "$WORK/data-$n" --record "$WORK/record-$n" --out "$WORK/label-$n"
    fi
  done
done

python3 - "$WORK" <<'PY'
import json, statistics, sys
work = sys.argv[1]
rows = [l.split() for l in open(f"{work}/times.txt")]
steps = {n: json.load(open(f"{work}/record-{n}/record.json")) for n in ("1", "10")}
for n, s in steps.items():
    print(f"{n:>2}x: {len(s['cell_ids'])} cells, {s['steps']} steps, {s['activation_rows']} firing rows")
for cmd in dict.fromkeys(r[0] for r in rows):
    med = {n: [statistics.median(float(r[i]) for r in rows if r[0] == cmd and r[1] == n) for i in (2, 3)] for n in ("1", "10")}
    runs = sum(1 for r in rows if r[0] == cmd) // 2
    print(f"{cmd}: peak RSS {med['1'][0]:.0f} MB -> {med['10'][0]:.0f} MB ({med['10'][0] / med['1'][0]:.2f}x), "
          f"time {med['1'][1]:.2f} s -> {med['10'][1]:.2f} s ({med['10'][1] / med['1'][1]:.1f}x); medians of {runs}")
PY
