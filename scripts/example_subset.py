#!/usr/bin/env python3
"""Feature ids for reports/example: the 40 densest live features, every feature node of the
attribution graph, of each graded label form the accepted label with the best held-out AUROC
not already chosen, and the yes/no label firing on the smallest share of the steps it names. usage: scripts/example_subset.py reports/quickstart  (prints the ids for `voltlens report --subset`)"""
import csv, json, sys
rep = sys.argv[1]
feats = [r for r in csv.DictReader(open(f"{rep}/tables/features.csv")) if float(r["density"]) > 0]
fid = lambda r: f"L{r['layer']}_F{r['feature']}"
chosen = [fid(r) for r in sorted(feats, key=lambda r: -float(r["density"]))[:40]]
g = json.load(open(f"{rep}/circuits_graph.json"))
for n in g["nodes"]:
    if n.get("feature_type") == "cross layer transcoder":
        layer, feature = n["node_id"].split("_")[:2]
        if f"L{layer}_F{feature}" not in chosen:
            chosen.append(f"L{layer}_F{feature}")
all_labels = list(csv.DictReader(open(f"{rep}/tables/labels.csv")))
labels = [r for r in all_labels if r["accepted"] == "true"]
forms = {
    "graded": lambda s, c: s.startswith("fires more often") and "+" not in c,
    "graded over two covariates": lambda s, c: s.startswith("fires more often") and "+" in c,
    "graded inside a regime": lambda s, c: s.startswith("fires when") and "more often" in s,
}
# …and the yes/no label that fires on the smallest share of the steps it names ("(on 5 % of the steps it names)").
shares = [r for r in labels if "of the steps it names)" in r["label"] and fid(r) not in chosen]
if shares:
    rare = min(shares, key=lambda r: float(r["best_test_precision"]))
    chosen.append(fid(rare)); print(f"# a share: {fid(rare)} {rare['label']}", file=sys.stderr)
for name, test in forms.items():
    cands = [r for r in labels if test(r["best_sentence"], r["best_covariates"]) and fid(r) not in chosen]
    if cands:
        best = max(cands, key=lambda r: float(r["best_test_auroc"]))
        chosen.append(fid(best)); print(f"# {name}: {fid(best)} {best['best_sentence']} (AUROC {float(best['best_test_auroc']):.3f})", file=sys.stderr)
top40 = set(chosen[:40])
unexplained = sum(1 for r in all_labels if fid(r) in top40 and r["accepted"] != "true")
print(f"# {len(chosen)} ids; {unexplained} of the 40 densest unexplained; {len(feats)} live", file=sys.stderr)
print(",".join(chosen))
