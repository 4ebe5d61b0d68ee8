#!/usr/bin/env python3
"""How many features a yes/no predicate over the covariates could label at all: the labeller's
ceiling under its own measure (issue 11).

`../shared/tools/label_yardstick.py` scores a tree's graded leaf probabilities; the labeller
scores a predicate, which says only yes or no (AUROC = (1 + TPR - FPR) / 2). This fits depth-1,
-2 and -3 decision trees (balanced classes) on the label run's explain cells and scores their
yes/no prediction on its test cells (from `split.csv`), for a sample of features, beside the
labeller's accepted share of the same features. A tree faces no stability, q or raw-V/I test,
so its share is an upper bound, not a target. Beside each yes/no share it prints the same tree's
graded share (its leaf probabilities ranked, as the yardstick scores them): the gap between the two
is what a graded detector ("fires most when …, less when …") could add. Last, it prints the share
reached by the labeller's graded form, one covariate's percentile rank as the score, beside an
additive two-covariate one ("fires more often the lower A and the higher B"), each covariate and
direction chosen on the explain cells (a sample of 15,000 steps) and scored on the test cells.

usage: label_ceiling.py RECORD_DIR LABEL_DIR [N_FEATURES=200] [SEED=0]
needs: pip install numpy pandas pyarrow scikit-learn
"""
import itertools
import json
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score
from sklearn.tree import DecisionTreeClassifier

record, label_dir = sys.argv[1], sys.argv[2]
n_features = int(sys.argv[3]) if len(sys.argv) > 3 else 200
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0

cov = pq.read_table(f"{record}/covariates.parquet").to_pandas()
act = pq.read_table(f"{record}/activations.parquet", columns=["cell_id", "row", "layer", "feature"]).to_pandas()
split = pd.read_csv(f"{label_dir}/split.csv")
held_out = set(split.cell_id[split.half == "test"].astype(str))
labels = {(f["layer"], f["feature"]): f for f in json.load(open(f"{label_dir}/labels.json"))}

position = pd.Series(np.arange(len(cov)), index=pd.MultiIndex.from_arrays([cov.cell_id.astype(str), cov.row]))
X = cov.drop(columns=["cell_id", "row"]).fillna(-999).values.astype(np.float32)
test = cov.cell_id.astype(str).isin(held_out).values
# Percentile ranks of the continuous covariates (a missing value sits in the middle).
continuous = [c for c in ["soc", "c_rate", "abs_c_rate", "step_time", "time_since_current_change", "last_current_step", "dv_dt", "dv_next",
                          "c_rate_change_next", "abs_c_rate_change_next", "temperature", "above_lowest_voltage", "below_highest_voltage", "voltage", "current"] if c in cov]
ranks = np.stack([cov[c].rank(pct=True).fillna(0.5).values for c in continuous], 1).astype(np.float32)
sample = np.random.default_rng(seed + 1).choice(np.flatnonzero(~test), min(int((~test).sum()), 15000), replace=False)
signed = [(k, s) for k in range(len(continuous)) for s in (1, -1)]


def graded_scores(fires):
    """Held-out AUROC of the best one-covariate and the best two-covariate rank score on the sample."""
    y = fires[sample]
    if y.all() or not y.any():
        return np.nan, np.nan
    score = lambda terms, rows: sum(s * ranks[rows, k] for k, s in terms)
    one = max(([t] for t in signed), key=lambda terms: roc_auc_score(y, score(terms, sample)))
    two = max((list(p) for p in itertools.combinations(signed, 2) if p[0][0] != p[1][0]), key=lambda terms: roc_auc_score(y, score(terms, sample)))
    return tuple(roc_auc_score(fires[test], score(terms, test)) for terms in (one, two))


groups = act.groupby(["layer", "feature"])
keys = sorted(groups.groups)
np.random.default_rng(seed).shuffle(keys)

rows = []
for key in keys[:n_features]:
    g = groups.get_group(key)
    fires = np.zeros(len(cov), bool)
    fires[position.reindex(pd.MultiIndex.from_arrays([g.cell_id.astype(str), g.row])).dropna().astype(int).values] = True
    # A yes/no score needs firing and quiet steps on both sides.
    if fires[~test].sum() < 20 or fires[test].sum() < 5 or fires[test].all():
        continue
    row = {"accepted": labels[key]["accepted"]}
    for depth in (1, 2, 3):
        tree = DecisionTreeClassifier(max_depth=depth, class_weight="balanced", min_samples_leaf=50, random_state=seed)
        said = tree.fit(X[~test], fires[~test]).predict(X[test]).astype(bool)
        truth = fires[test]
        row[f"depth{depth}"] = 0.5 * (1 + said[truth].mean() - said[~truth].mean())
        row[f"graded{depth}"] = roc_auc_score(truth, tree.predict_proba(X[test])[:, 1])
    row["rank1"], row["rank2"] = graded_scores(fires)
    rows.append(row)
d = pd.DataFrame(rows)
print(f"{len(d)} features on {len(held_out)} test cells; yes/no AUROC >= 0.85: "
      + ", ".join(f"depth-{k} tree {(d[f'depth{k}'] >= 0.85).mean():.1%} (graded {(d[f'graded{k}'] >= 0.85).mean():.1%})" for k in (1, 2, 3))
      + f"; labeller accepted {d.accepted.mean():.1%} of the same features")
print(f"rank scores >= 0.85 held out: one covariate {(d.rank1 >= 0.85).mean():.1%}, two covariates added {(d.rank2 >= 0.85).mean():.1%}; "
      f"two covariates among features the labeller left unexplained: {((d.rank2 >= 0.85) & ~d.accepted).sum()} of {(~d.accepted).sum()}")
