"""An attribution graph of VoltLens checked against an independent PyTorch replacement model.

  interop_attribution.py DATA EXPORT TRANSCODER GRAPH [--full FULL_GRAPH]

DATA is the dataset, EXPORT the graph's model as `voltlens export-model` writes it, TRANSCODER
the transcoder's circuit-tracer export (read with circuit-tracer's own loaders), GRAPH a folder
written by `voltlens circuits graph --out`, FULL_GRAPH optionally the same graph made with
`--node-threshold 1.0 --edge-threshold 1.0`. The window's inputs are rebuilt from the Parquet
columns, the model is run by examples/pytorch/reference.py and again in float64 with its
LayerNorm denominators and attention patterns frozen and each MLP replaced by transcoder features
plus an error term; autograd then gives every direct effect (source value x gradient of the
target's pre-activation or of the output). Checked, one line each:
  prediction  reference.py's predicted voltage within 1e-3 mV of the graph's
  replacement the frozen replacement model reproduces the real pass, effects sum to their targets
  nodes       the same active features, activations within 1e-4 (relative), cumulative
              influence within 1e-5
  links       every link within 1e-5 of the largest |effect| into its target (row-scaled); in
              FULL_GRAPH also no edge missing among its nodes whose circuit-tracer edge score
              (normalised |effect| x the target's influence) is above 1e-9 of the total
  scores      replacement and completeness within 1e-5
  pruning     circuit-tracer's prune_graph on our adjacency keeps the same feature, error and
              output nodes, and every node and link VoltLens kept
Exits 1 when a check fails, or with "not covered: ..." for what it does not rebuild (RMSNorm,
SwiGLU, skip or TopK transcoders, channels outside VoltLens's default set, ...).
"""
import argparse
import importlib.util
import json
import math
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import circuit_tracer
import numpy as np
import pyarrow.parquet as pq
import torch
import yaml
from circuit_tracer.graph import compute_node_influence, normalize_matrix, prune_graph
from circuit_tracer.transcoder.cross_layer_transcoder import load_clt
from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set
from safetensors import safe_open
from safetensors.torch import load_file

REFERENCE = Path(__file__).resolve().parent.parent / "examples/pytorch/reference.py"
spec = importlib.util.spec_from_file_location("reference", REFERENCE)
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)

CPU, F64 = torch.device("cpu"), torch.float64
TOL = dict(prediction_v=1e-6, activation=1e-4, influence=1e-5, link=1e-5, score=1e-5)


def not_covered(what):
    raise SystemExit(f"not covered: {what}")


def window_inputs(data, cell, step, window, channels):
    """Raw channel values [window, C] ending at `step`, per src/model/inputs.rs's CATALOGUE, and V at `step`."""
    t = pq.read_table(Path(data) / "timeseries" / f"{cell}.parquet")
    col = lambda n: np.asarray(t[n].to_numpy(zero_copy_only=False), dtype=np.float32)
    v, cr, dt, st, soc, temp = (col(n) for n in ("voltage", "c_rate", "dt", "step_time", "soc", "temperature"))
    state, sidx = t["state"].to_pylist(), t["step_index"].to_numpy()
    f32 = np.float32
    l1p = lambda s: f32(np.log1p(max(f32(s), f32(0))))
    defs = {
        "voltage": lambda i: v[i], "c_rate": lambda i: cr[i], "log1p_dt": lambda i: l1p(dt[i]),
        "c_rate_next": lambda i: cr[i + 1], "log1p_dt_next": lambda i: l1p(dt[i + 1]),
        "charge_next": lambda i: f32(cr[i + 1] * max(dt[i + 1], f32(0))) / f32(3600.0),
        "temperature": lambda i: temp[i] if np.isfinite(temp[i]) else f32(0),
        "temperature_present": lambda i: f32(np.isfinite(temp[i])),
        "current_sign_next": lambda i: f32({"charging": 1, "discharging": -1, "resting": 0}[state[i + 1]]),
        "step_change_next": lambda i: f32(sidx[i + 1] != sidx[i]),
        "log1p_step_time": lambda i: l1p(st[i]),
        "soc": lambda i: soc[i] if np.isfinite(soc[i]) else f32(0),
        "soc_present": lambda i: f32(np.isfinite(soc[i])),
    }
    for c in channels:
        if c not in defs:
            not_covered(f"channel {c}")
    rows = range(step + 1 - window, step + 1)
    return torch.tensor([[defs[c](i) for c in channels] for i in rows], dtype=torch.float32), float(v[step])


def check_arch(arch):
    m = arch["model"]
    for key, value, covered in [("norm", m.get("norm", "layer_norm"), ["layer_norm"]),
                                ("mlp", m.get("mlp", "gelu"), ["gelu", "gelu_tanh", "relu"]),
                                ("positional", m.get("positional", "rotary"), ["rotary", "learned", "none"]),
                                ("final_norm", m.get("final_norm", True), [True]),
                                ("kv_heads", reference.kv_heads(arch), [m["heads"]]),
                                ("head target", arch["head"].get("target", "delta_v"), ["delta_v"])]:
        if value not in covered:
            not_covered(f"model {key} = {value!r}")


def forward(arch, w, x, mlp=None, frozen=None):
    """The model on normalised inputs x [T, C]; with mlp(l), block l's MLP output is taken from it.
    Returns the output [T] and what it met: resid_mid, mlp_out, LayerNorm denominators and
    attention patterns; with `frozen`, the last two are taken from it (the replacement model)."""
    m = arch["model"]
    T, d, H = x.shape[0], m["d_model"], m["heads"]
    rec = dict(mid=[], mlp=[], sig={}, pat=[])
    lin = lambda h, name: h @ w[name + ".weight"].T + w.get(name + ".bias", 0)
    rotary = reference.Reference(arch, "voltlens", w).rotary
    act = {"gelu": torch.nn.functional.gelu, "relu": torch.relu,
           "gelu_tanh": lambda z: torch.nn.functional.gelu(z, approximate="tanh")}[m.get("mlp", "gelu")]

    def norm(h, name):
        c = h - h.mean(-1, keepdim=True)
        sig = frozen["sig"][name] if frozen else (c.pow(2).mean(-1, keepdim=True) + m.get("norm_eps", 1e-5)).sqrt()
        rec["sig"][name] = sig
        return c / sig * w[name + ".weight"] + w[name + ".bias"]

    h = lin(x, "embed") + (w["positions"][:T] if m.get("positional", "rotary") == "learned" else 0)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for l in range(m["layers"]):
        b = f"blocks.{l}."
        q, k, v = (z.view(T, H, d // H).transpose(0, 1) for z in lin(norm(h, b + "ln_attn"), b + "attn.qkv").split(d, -1))
        if frozen:
            pat = frozen["pat"][l]
        else:
            if m.get("positional", "rotary") == "rotary":
                q, k = rotary(q), rotary(k)
            pat = torch.softmax((q @ k.transpose(-1, -2) / math.sqrt(d // H)).masked_fill(~causal, -math.inf), -1)
        rec["pat"].append(pat)
        mid = h + lin((pat @ v).transpose(0, 1).reshape(T, d), b + "attn.out")
        out = mlp(l) if mlp else lin(act(lin(norm(mid, b + "ln_mlp"), b + "mlp.up")), b + "mlp.down")
        rec["mid"].append(mid)
        rec["mlp"].append(out)
        h = mid + out
    return lin(norm(h, "ln_final"), "head").squeeze(-1), rec


def load_transcoder(folder, L):
    """Per layer: encoder [F, d], b_enc, JumpReLU threshold or None, b_dec; dec[k][l] [F, d] maps
    layer k's features into mlp_out of layer l. Read by circuit-tracer's loaders."""
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    kind = cfg.get("model_kind")
    if kind not in ("cross_layer_transcoder", "transcoder_set"):
        not_covered(f"transcoder model_kind {kind}")
    if (cfg.get("feature_input_hook"), cfg.get("feature_output_hook")) != ("hook_resid_mid", "hook_mlp_out"):
        not_covered(f"transcoder hooks {cfg.get('feature_input_hook')} -> {cfg.get('feature_output_hook')}")
    if cfg.get("voltlens_activation", "relu") not in ("relu", "jump_relu"):
        not_covered(f"transcoder activation {cfg['voltlens_activation']}")
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            if any(k.startswith("W_skip") for k in f.keys()):
                not_covered(f"skip transcoder ({path.name} holds W_skip)")
    hooks = dict(feature_input_hook="hook_resid_mid", feature_output_hook="hook_mlp_out")
    g = lambda t: t.detach().to(F64)
    if kind == "cross_layer_transcoder":
        clt = load_clt(str(folder), device=CPU, dtype=torch.float32, lazy_decoder=False, **hooks)
        th = getattr(clt.activation_function, "threshold", None)
        layers = [(g(clt.W_enc[l]), g(clt.b_enc[l]), None if th is None else g(th[l]).reshape(-1), g(clt.b_dec[l]),
                   {l + j: g(clt.W_dec[l][:, j]) for j in range(L - l)}) for l in range(L)]
    else:
        tset = load_transcoder_set({l: str(folder / f"layer_{l}.safetensors") for l in range(L)}, scan="voltlens",
                                   device=CPU, dtype=torch.float32, lazy_encoder=False, lazy_decoder=False, **hooks)
        layers = []
        for l, t in enumerate(tset.transcoders[:L]):
            th = getattr(t.activation_function, "threshold", None)
            layers.append((g(t.W_enc), g(t.b_enc), None if th is None else g(th).reshape(-1), g(t.b_dec), {l: g(t.W_dec)}))
    enc, b_enc, thr, b_dec, dec = zip(*layers)
    return SimpleNamespace(kind=kind, enc=enc, b_enc=b_enc, thr=thr, b_dec=b_dec, dec=dec)


def line(name, ok, detail):
    print(f"circuit-tracer {circuit_tracer.__version__} attribution {name}: {detail}: {'ok' if ok else 'DIFFERENT'}")
    return 0 if ok else 1


def attribution(arch, w, x, out, hooks, tc, C):
    """Active features (layer, step, index) in VoltLens's order, their activations, and the adjacency
    [target, source] over features, errors (layer, step), inputs (step, channel) and the output;
    with how well the replacement model reproduces the real pass and its effects sum to their targets."""
    L, T = arch["model"]["layers"], x.shape[0]
    zs = [torch.relu(p) if th is None else p * (p > th) for p, th in
          ((hooks["mid"][l] @ tc.enc[l].T + tc.b_enc[l], tc.thr[l]) for l in range(L))]
    decoded = lambda l, z: tc.b_dec[l] + sum(z[k] @ tc.dec[k][l] for k in range(l + 1) if l in tc.dec[k])
    errs = [hooks["mlp"][l] - decoded(l, zs) for l in range(L)]
    feats = sorted((l, t, f) for l in range(L) for t, f in torch.nonzero(zs[l] > 0).tolist())
    nF, n = len(feats), len(feats) + L * T + T * C + 1
    # The replacement model with a gain on every source (features at every layer, step and index, errors,
    # inputs): d target / d gain is the direct effect. Targets: active features' pre-activations, the output.
    nZ = L * T * zs[0].shape[1]
    active = torch.tensor([(l * T + t) * zs[0].shape[1] + f for l, t, f in feats], dtype=torch.long)
    z_val, cols = torch.stack(zs).flatten()[active], torch.cat([active, torch.arange(nZ, nZ + L * T + T * C)])

    def replacement(*gains):
        *gz, ge, gx = gains
        z = [zs[l] * gz[l] for l in range(L)]
        y, rec = forward(arch, w, x * gx, lambda l: decoded(l, z) + errs[l] * ge[l, :, None], frozen=hooks)
        pre = torch.stack([rec["mid"][l] @ tc.enc[l].T for l in range(L)]).flatten()
        return torch.cat([pre.index_select(0, active), y[-1:]]), rec, y

    gains = [torch.ones(shape, dtype=F64, requires_grad=True) for shape in [z.shape for z in zs] + [(L, T), (T, C)]]
    targets, rec, y = replacement(*gains)
    same = max(float((a.detach() - b).abs().max()) for a, b in zip([y] + rec["mid"], [out] + hooks["mid"]))
    A = torch.zeros(n, n, dtype=F64)
    rows = torch.cat([torch.arange(nF), torch.tensor([n - 1])])
    for chunk in torch.eye(nF + 1, dtype=F64).split(512):
        J = torch.autograd.grad(targets, gains, chunk, retain_graph=True, is_grads_batched=True)
        A[rows[chunk.argmax(1)], :n - 1] = torch.cat([j.flatten(1) for j in J], 1)[:, cols]
    with torch.no_grad():
        constant = replacement(*map(torch.zeros_like, gains))[0]
    sums = float((A[rows].sum(1) + constant - targets.detach()).abs().max())
    return feats, z_val, A, same, sums


def check(data, export, tc_dir, gdir, slug, full_dir):
    arch = tomllib.loads((export / "arch.toml").read_text())
    check_arch(arch)
    summary = json.loads((gdir / f"{slug}.summary.json").read_text())
    graph = json.loads((gdir / f"{slug}.json").read_text())
    channels = [i["name"] for i in arch["inputs"]]
    cell, step, T, C, L = summary["cell_id"], summary["step"], summary["window"], len(channels), arch["model"]["layers"]
    print(f"{slug}: cell {cell} step {step}, window {T}, {L} layers, {C} channels, transcoder {tc_dir}")
    status = 0

    # The prediction: reference.py in float32, and our float64 forward beside it.
    raw, v_now = window_inputs(data, cell, step, T, channels)
    w32 = load_file(str(export / "model.safetensors"))
    with torch.no_grad():
        out32 = reference.Reference(arch, "voltlens", w32)(reference.normalise(arch, raw[None]))[0]
    x = reference.normalise(arch, raw[None])[0].to(F64)
    w = {k: v.to(F64) for k, v in w32.items()}
    with torch.no_grad():
        out, hooks = forward(arch, w, x)
    head = arch["head"]
    pred = v_now + float(out32[-1]) * head.get("scale", 1.0) + head.get("offset", 0.0)
    diff, own = abs(pred - summary["predicted_voltage"]), float((out - out32.to(F64)).abs().max())
    status |= line("prediction", diff <= TOL["prediction_v"] and own <= 1e-5 * (1 + float(out.abs().max())),
                   f"reference.py {pred:.6f} V, graph {summary['predicted_voltage']:.6f} V (|diff| {diff * 1e3:.1e} mV); "
                   f"float64 rebuild vs reference.py {own:.1e}")

    tc = load_transcoder(tc_dir, L)
    feats, z_val, A, same, sums = attribution(arch, w, x, out, hooks, tc, C)
    nF = len(feats)
    e0, e1, n = nF, nF + L * T, nF + L * T + T * C + 1
    ids = [f"{l}_{f}_{t}" for l, t, f in feats] + [f"{l}_-1_{t}" for l in range(L) for t in range(T)] + \
          [f"E_{c}_{t}" for t in range(T) for c in range(C)] + [f"{L + 1}_0_{T - 1}"]
    idx = {i: j for j, i in enumerate(ids)}
    kind = np.array(["feature"] * nF + ["error"] * (L * T) + ["input"] * (T * C) + ["output"])
    status |= line("replacement model", same < 1e-9 and sums < 1e-9,
                   f"reproduces the real pass to {same:.1e}, direct effects sum to their targets to {sums:.1e}")

    # Nodes: active features, activations, cumulative influence (circuit-tracer's prune_graph on our adjacency).
    A32 = A.float()
    opts = summary["options"]
    pg = SimpleNamespace(input_tokens=list(range(T * C)), logit_targets=[0], selected_features=list(range(nF)),
                         adjacency_matrix=A32, logit_probabilities=torch.ones(1))
    node_mask, edge_mask, cum = prune_graph(pg, opts["node_threshold"], opts["edge_threshold"])
    unknown = [nd["node_id"] for nd in graph["nodes"] if nd["node_id"] not in idx]
    act_err = max([abs(nd["activation"] / float(z_val[idx[nd["node_id"]]]) - 1) for nd in graph["nodes"]
                   if nd["activation"] is not None and nd["node_id"] in idx], default=0.0)
    infl_err = max([abs(nd["influence"] - float(cum[idx[nd["node_id"]]])) for nd in graph["nodes"]
                    if nd["influence"] is not None and nd["node_id"] in idx], default=0.0)
    status |= line("nodes", nF == summary["active_features"] and n == summary["total_nodes"] and not unknown
                   and act_err <= TOL["activation"] and infl_err <= TOL["influence"],
                   f"active features ours {nF} graph {summary['active_features']}, nodes ours {n} graph "
                   f"{summary['total_nodes']}{f', unknown ids {unknown[:5]}' if unknown else ''}; activation rel "
                   f"{act_err:.1e}, cumulative influence {infl_err:.1e}")

    # Scores as circuit-tracer's compute_graph_scores, with T*C input nodes.
    lw = torch.zeros(n, dtype=F64)
    lw[-1] = 1
    infl, nm = compute_node_influence(A, lw), normalize_matrix(A)
    replacement_score = float(infl[e1:n - 1].sum() / (infl[e1:n - 1].sum() + infl[e0:e1].sum()))
    completeness = float(((1 - nm[:, e0:e1].sum(-1)) * (infl + lw)).sum() / (infl + lw).sum())
    sc = summary["scores"]
    status |= line("scores", abs(replacement_score - sc["replacement"]) <= TOL["score"] and abs(completeness - sc["completeness"]) <= TOL["score"],
                   f"replacement ours {replacement_score:.6f} graph {sc['replacement']:.6f}, completeness ours "
                   f"{completeness:.6f} graph {sc['completeness']:.6f}")

    # Links, scaled by the largest |effect| into their target.
    rowmax = A.abs().max(1).values.clamp(min=1e-30).numpy()

    def links(name, g, complete):
        known = [e for e in g["links"] if e["source"] in idx and e["target"] in idx]
        s = np.array([idx[e["source"]] for e in known], dtype=np.int64)
        t = np.array([idx[e["target"]] for e in known], dtype=np.int64)
        err = np.abs(np.array([e["weight"] for e in known]) - A.numpy()[t, s]) / rowmax[t]
        types = np.char.add(np.char.add(kind[s], "->"), kind[t])
        per = ", ".join(f"{k} {(types == k).sum()} max {err[types == k].max():.1e}" for k in sorted(set(types)))
        detail = f"{len(g['links'])} links ({per})"
        ok = len(known) == len(g["links"]) and (err.max(initial=0) <= TOL["link"])
        if len(known) < len(g["links"]):
            detail += f"; {len(g['links']) - len(known)} with unknown ids"
        if err.max(initial=0) > TOL["link"]:
            j = int(err.argmax())
            detail += f"; worst {ids[s[j]]} -> {ids[t[j]]}: graph {known[j]['weight']:+.6e}, ours {float(A[t[j], s[j]]):+.6e} (row-scaled {err[j]:.1e})"
        if complete:
            keep = np.array(sorted(idx[nd["node_id"]] for nd in g["nodes"] if nd["node_id"] in idx))
            present = np.zeros((n, n), dtype=bool)
            present[t, s] = True
            # Edge scores as circuit-tracer's (normalised |effect| x the target's influence); ~1e-17 ones may go.
            score = nm.numpy()[np.ix_(keep, keep)] * (infl + lw).numpy()[keep, None]
            missing = int(((score > 1e-9 * float((infl + lw).sum())) & ~present[np.ix_(keep, keep)]).sum())
            detail += f"; effects among its {len(keep)} nodes with an edge score above 1e-9 of the total missing from it: {missing}"
            ok &= missing == 0
        return line(name, ok, detail)

    status |= links("links", graph, False)
    if full_dir:
        status |= links("links (full graph)", json.loads((full_dir / f"{slug}.json").read_text()), True)

    # Pruning: circuit-tracer's node and edge masks vs the nodes and links VoltLens kept.
    ct_nodes = set(torch.nonzero(node_mask).flatten().tolist())
    dst, src = torch.nonzero(edge_mask, as_tuple=True)
    ct_edges = {(a, b) for a, b in zip(src.tolist(), dst.tolist()) if a in ct_nodes and b in ct_nodes}
    used = {a for a, _ in ct_edges} | {b for _, b in ct_edges}
    ct_nodes = {i for i in ct_nodes if i in used or kind[i] in ("input", "output")}
    vl_nodes = {idx[nd["node_id"]] for nd in graph["nodes"] if nd["node_id"] in idx}
    vl_edges = {(idx[e["source"]], idx[e["target"]]) for e in graph["links"] if e["source"] in idx and e["target"] in idx}
    core = lambda s: {i for i in s if kind[i] != "input"}
    names = lambda s: sorted(ids[i] for i in s)[:5]
    extra_nodes, extra_edges = vl_nodes - ct_nodes, vl_edges - ct_edges
    detail = (f"prune_graph({opts['node_threshold']}, {opts['edge_threshold']}) keeps {len(core(ct_nodes))} feature/error/"
              f"output nodes, VoltLens {len(core(vl_nodes))}; VoltLens's {len(vl_nodes)} nodes and {len(vl_edges)} links "
              f"among circuit-tracer's {len(ct_nodes)} and {len(ct_edges)}")
    if core(ct_nodes) != core(vl_nodes):
        detail += f"; only circuit-tracer {names(core(ct_nodes) - vl_nodes)}, only VoltLens {names(core(vl_nodes) - ct_nodes)}"
    if extra_nodes or extra_edges:
        detail += f"; not among them {names(extra_nodes)} {[f'{ids[a]} -> {ids[b]}' for a, b in sorted(extra_edges)[:5]]}"
    status |= line("pruning", core(ct_nodes) == core(vl_nodes) and not extra_nodes and not extra_edges, detail)
    return status


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("data", "export", "transcoder", "graph"):
        p.add_argument(name, type=Path)
    p.add_argument("--full", type=Path, help="the same graph with --node-threshold 1.0 --edge-threshold 1.0")
    a = p.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    slugs = [g["slug"] for g in json.loads((a.graph / "graph-metadata.json").read_text())["graphs"]]
    status = 0
    for slug in slugs:
        status |= check(a.data, a.export, a.transcoder, a.graph, slug, a.full)
    return status


if __name__ == "__main__":
    sys.exit(main())
