"""circuit-tracer's side of scripts/interop_circuit_tracer.sh.

compare EXPORT EVAL_JSON ACTS: loads EXPORT with circuit-tracer's own loader (`load_clt` for a CLT,
    `load_transcoder_set` for a transcoder set), reconstructs mlp_out from the cached resid_mid
    with circuit-tracer's forward, and compares per-layer FVU with VoltLens's (EVAL_JSON, written
    by `voltlens import-clt --eval` on the same cache). Exits 1 when a layer differs by 0.01 or more.
graph DIR: an attribution graph written by `voltlens circuits graph --out DIR`, read by circuit-tracer's
    own graph model (pydantic `frontend.graph_models.Model`), served by its local server
    (`frontend.local_server.serve`, which the front end fetches from), and turned into what its
    page draws by its front-end code (scripts/interop_graph_frontend.js). Exits 1 on any failure.
write SOURCE OUT ACTS: a JumpReLU CLT made and saved by circuit-tracer itself (`to_safetensors`,
    bf16, no config.yaml) from SOURCE's weights, thresholds at each feature's 90th percentile
    pre-activation on ACTS.
"""
import json
import sys
from pathlib import Path

import circuit_tracer
import torch
import yaml
from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder, load_clt
from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set
from safetensors.torch import load_file

CPU = torch.device("cpu")
TOLERANCE = 0.01


def activations(path):
    """resid_mid and mlp_out as circuit-tracer takes them: [L, tokens, d]."""
    acts = load_file(path)
    return acts["resid_mid"].permute(1, 0, 2).contiguous(), acts["mlp_out"].permute(1, 0, 2).contiguous()


def fvu(y, y_hat):
    """Per layer: squared error over the variance of the same tokens (VoltLens's definition)."""
    y, y_hat = y.double(), y_hat.double()
    return (((y - y_hat) ** 2).sum(dim=(1, 2)) / ((y - y.mean(dim=1, keepdim=True)) ** 2).sum(dim=(1, 2))).tolist()


def reconstruct(export: Path, x):
    config = yaml.safe_load((export / "config.yaml").read_text()) if (export / "config.yaml").exists() else {}
    kind = config.get("model_kind", "cross_layer_transcoder")
    hooks = dict(feature_input_hook=config.get("feature_input_hook", "hook_resid_mid"),
                 feature_output_hook=config.get("feature_output_hook", "hook_mlp_out"))
    with torch.no_grad():
        if kind == "cross_layer_transcoder":
            clt = load_clt(str(export), device=CPU, dtype=torch.float32, lazy_decoder=False, **hooks)
            return kind, clt.forward(x)
        if kind == "transcoder_set":
            paths = {l: str(export / f"layer_{l}.safetensors") for l in range(x.shape[0])}
            tset = load_transcoder_set(paths, scan="voltlens", device=CPU, dtype=torch.float32,
                                       lazy_encoder=False, lazy_decoder=False, **hooks)
            return kind, torch.stack([tset.transcoders[l].forward(x[l]) for l in range(x.shape[0])])
    raise SystemExit(f"{export}: model_kind {kind!r} has no circuit-tracer loader")


def compare(export, eval_json, acts):
    export = Path(export)
    x, y = activations(acts)
    kind, y_hat = reconstruct(export, x)
    if y_hat.shape != y.shape:
        raise SystemExit(f"{export}: circuit-tracer reconstructed {tuple(y_hat.shape)}, expected {tuple(y.shape)}")
    theirs = fvu(y, y_hat)
    ours = json.loads(Path(eval_json).read_text())["fvu_per_layer"]
    worst = max(abs(a - b) for a, b in zip(ours, theirs))
    verdict = "ok" if worst < TOLERANCE and len(ours) == len(theirs) else "DIFFERENT"
    print(f"circuit-tracer {circuit_tracer.__version__} {kind} {export}: {x.shape[1]} tokens; FVU per layer "
          f"voltlens {[round(v, 5) for v in ours]} circuit-tracer {[round(v, 5) for v in theirs]}; "
          f"max |diff| {worst:.2e}: {verdict}")
    return 0 if verdict == "ok" else 1


def graph(directory):
    import subprocess
    import urllib.request
    from importlib.resources import files

    from circuit_tracer.frontend.graph_models import Model
    from circuit_tracer.frontend.local_server import serve

    directory = Path(directory)
    slugs = [g["slug"] for g in json.loads((directory / "graph-metadata.json").read_text())["graphs"]]
    status = 0
    for slug in slugs:
        model = Model.model_validate_json((directory / f"{slug}.json").read_text())
        ids = {n.node_id for n in model.nodes}
        dangling = sum(l["source"] not in ids or l["target"] not in ids for l in model.links)
        print(f"circuit-tracer {circuit_tracer.__version__} graph model: {slug}: {len(model.nodes)} nodes "
              f"({len(ids)} distinct ids), {len(model.links)} links, {dangling} dangling")
        status |= int(len(ids) != len(model.nodes) or dangling > 0)
    server = serve(data_dir=str(directory), port=8047)
    try:
        for path in ["data/graph-metadata.json"] + [f"graph_data/{slug}.json" for slug in slugs]:
            with urllib.request.urlopen(f"http://localhost:8047/{path}") as response:
                json.loads(response.read())
                print(f"circuit-tracer local server: /{path} {response.status}")
    finally:
        server.stop()
    util_cg = files("circuit_tracer") / "frontend/assets/attribution_graph/util-cg.js"
    frontend = Path(__file__).with_name("interop_graph_frontend.js")
    for slug in slugs:
        status |= subprocess.run(["node", str(frontend), str(util_cg), str(directory / f"{slug}.json")]).returncode
    return status


def write(source, out, acts):
    src = load_clt(str(source), device=CPU, dtype=torch.float32, lazy_decoder=False)
    x, _ = activations(acts)
    clt = CrossLayerTranscoder(src.n_layers, src.d_transcoder, src.d_model, activation_function="jump_relu",
                               lazy_decoder=False, device=CPU, dtype=torch.bfloat16)
    with torch.no_grad():
        clt.W_enc.copy_(src.W_enc)
        clt.b_enc.copy_(src.b_enc)
        clt.b_dec.copy_(src.b_dec)
        for l in range(src.n_layers):
            clt.W_dec[l].copy_(src.W_dec[l])
        pre = torch.einsum("lbd,lfd->lbf", x, src.W_enc) + src.b_enc[:, None]
        threshold = pre.quantile(0.9, dim=1).clamp(min=1e-3)
        clt.activation_function.threshold.copy_(threshold[:, None, :])
    clt.to_safetensors(str(out))
    print(f"circuit-tracer {circuit_tracer.__version__} wrote a bf16 JumpReLU CLT to {out}")
    return 0


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    sys.exit({"compare": compare, "graph": graph, "write": write}[command](*args))
