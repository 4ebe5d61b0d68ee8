"""PyTorch reference for `voltlens import-model` and `voltlens export-model`.

One decoder-only battery transformer, its parts chosen by the architecture TOML that VoltLens
reads ([model] norm / mlp / positional …, [head], [[inputs]], [weights] rope_pairing), its tensor
names and storage by a layout:

  gpt2      LayerNorm with bias, fused QKV in HF Conv1D [in, out], learned positions `wpe`, GELU
  llama     RMSNorm, separate wq/wk/wv/wo without bias, grouped-query attention (two key/value
            heads for four query heads), rotary, SwiGLU w1 (gate) / w3 (up) / w2
  voltlens  what `voltlens export-model` writes: VoltLens names, nn.Linear [out, in], fused qkv

  python reference.py make --layout gpt2 --out DIR [--seed 0 --windows 8 --steps 512]
      random weights: DIR/arch.toml, DIR/weights.safetensors and DIR/check.safetensors
      (`inputs` [N, T, C] raw channel values, `outputs` [N, T] predictions in volts)
  python reference.py train --layout llama --data DATASET --out DIR [--steps 600 --seed 0]
      trains the model on a VoltLens dataset (`voltlens ingest` output, read with pyarrow) as a
      user would in their own code: the channels computed from the canonical columns, MSE on
      the head's normalised target over random windows; writes what `make` writes, its check
      file from real windows
  python reference.py check --layout voltlens --arch A.toml --weights W.safetensors \\
      --check C.safetensors [--tolerance 1e-5]
      rebuilds the model, runs the check inputs and compares with the check outputs

Needs torch and safetensors (train: pyarrow too). Everything runs in float32 on the CPU.
"""

import argparse
import math
import pathlib
import sys
import tomllib

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

# Tensor names per layout; {i} is the block. None: the layout has no such tensor.
LAYOUTS = {
    "gpt2": dict(embed="input_proj", positions="wpe.weight", block="h.{i}", ln_attn="ln_1", ln_mlp="ln_2",
                 qkv="attn.c_attn", out="attn.c_proj", up="mlp.c_fc", gate=None, down="mlp.c_proj",
                 ln_final="ln_f", head="head", conv1d=True, bias=True),
    "llama": dict(embed="input_proj", positions=None, block="layers.{i}", ln_attn="attention_norm",
                  ln_mlp="ffn_norm", q="attention.wq", k="attention.wk", v="attention.wv", out="attention.wo",
                  up="feed_forward.w3", gate="feed_forward.w1", down="feed_forward.w2", ln_final="norm",
                  head="output", conv1d=False, bias=False),
    "voltlens": dict(embed="embed", positions="positions", block="blocks.{i}", ln_attn="ln_attn", ln_mlp="ln_mlp",
                     qkv="attn.qkv", out="attn.out", up="mlp.up", gate="mlp.gate", down="mlp.down",
                     ln_final="ln_final", head="head", conv1d=False, bias=True),
}

# The architectures `make` writes: a GPT-2 style model reading VoltLens's own channels plus raw
# current, and a Llama style one reading raw channels and predicting V_{t+1}.
ARCHS = {
    "gpt2": r"""[model]
layers = 2
d_model = 64
heads = 4
d_mlp = 256
context = 512
positional = "learned"
norm = "layer_norm"
norm_eps = 1e-5
mlp = "gelu_tanh"
final_norm = true

[head]
target = "delta_v"
scale = 0.002
offset = 0.0001

[[inputs]]
name = "voltage"
mean = 3.6
std = 0.4
[[inputs]]
name = "current_a"
scale = 0.5
offset = 0.0
[[inputs]]
name = "log1p_dt_next"
mean = 2.0
std = 1.0
[[inputs]]
name = "temperature"
mean = 25.0
std = 5.0

[weights]
conv1d = ['^h\.\d+\.(attn|mlp)\.c_\w+\.weight$']
rename = [
  ['^input_proj\.(weight|bias)$', 'embed.$1'],
  ['^wpe\.weight$', 'positions'],
  ['^h\.(\d+)\.ln_1\.(weight|bias)$', 'blocks.$1.ln_attn.$2'],
  ['^h\.(\d+)\.attn\.c_attn\.(weight|bias)$', 'blocks.$1.attn.qkv.$2'],
  ['^h\.(\d+)\.attn\.c_proj\.(weight|bias)$', 'blocks.$1.attn.out.$2'],
  ['^h\.(\d+)\.ln_2\.(weight|bias)$', 'blocks.$1.ln_mlp.$2'],
  ['^h\.(\d+)\.mlp\.c_fc\.(weight|bias)$', 'blocks.$1.mlp.up.$2'],
  ['^h\.(\d+)\.mlp\.c_proj\.(weight|bias)$', 'blocks.$1.mlp.down.$2'],
  ['^ln_f\.(weight|bias)$', 'ln_final.$1'],
  ['^head\.(weight|bias)$', 'head.$1'],
]
""",
    "llama": r"""[model]
layers = 2
d_model = 64
heads = 4
d_mlp = 172
context = 512
positional = "rotary"
rope_theta = 10000.0
norm = "rms_norm"
norm_eps = 1e-6
mlp = "swiglu"
final_norm = true

[head]
target = "next_voltage"
scale = 0.05
offset = 3.6

[[inputs]]
name = "voltage"
mean = 3.6
std = 0.4
[[inputs]]
name = "current_a"
mean = 0.0
std = 2.0
[[inputs]]
name = "dt_next_s"
mean = 10.0
std = 8.0
[[inputs]]
name = "soc"
mean = 0.5
std = 0.3
[[inputs]]
name = "step_time_s"
scale = 0.001

[weights]
rope_pairing = "interleaved"
kv_heads = 2
rename = [
  ['^input_proj\.(weight|bias)$', 'embed.$1'],
  ['^layers\.(\d+)\.attention_norm\.weight$', 'blocks.$1.ln_attn.weight'],
  ['^layers\.(\d+)\.attention\.w([qkv])\.weight$', 'blocks.$1.attn.$2.weight'],
  ['^layers\.(\d+)\.attention\.wo\.weight$', 'blocks.$1.attn.out.weight'],
  ['^layers\.(\d+)\.ffn_norm\.weight$', 'blocks.$1.ln_mlp.weight'],
  ['^layers\.(\d+)\.feed_forward\.w1\.weight$', 'blocks.$1.mlp.gate.weight'],
  ['^layers\.(\d+)\.feed_forward\.w3\.weight$', 'blocks.$1.mlp.up.weight'],
  ['^layers\.(\d+)\.feed_forward\.w2\.weight$', 'blocks.$1.mlp.down.weight'],
  ['^norm\.weight$', 'ln_final.weight'],
  ['^output\.weight$', 'head.weight'],
]
""",
}


def shapes(arch, layout):
    """Every tensor of the layout: name -> (shape as stored, fan-in of a weight matrix)."""
    m, names = arch["model"], LAYOUTS[layout]
    d, f, c = m["d_model"], m["d_mlp"], len(arch["inputs"])
    d_kv = kv_heads(arch) * d // m["heads"]
    out = {}

    def linear(name, d_out, d_in, bias, conv1d=names["conv1d"]):
        out[name + ".weight"] = ([d_in, d_out] if conv1d else [d_out, d_in], d_in)
        if bias:
            out[name + ".bias"] = ([d_out], None)

    def norm(name):
        out[name + ".weight"] = ([d], None)
        if m.get("norm", "layer_norm") == "layer_norm":
            out[name + ".bias"] = ([d], None)

    # The input projection and the head are nn.Linear in every layout.
    linear(names["embed"], d, c, True, conv1d=False)
    if m.get("positional", "rotary") == "learned":
        out[names["positions"]] = ([m["context"], d], None)
    bias = names["bias"]
    for i in range(m["layers"]):
        b = names["block"].format(i=i) + "."
        norm(b + names["ln_attn"])
        if "qkv" in names:
            linear(b + names["qkv"], 3 * d, d, bias)
        else:
            for p, d_out in zip("qkv", (d, d_kv, d_kv)):
                linear(b + names[p], d_out, d, bias)
        linear(b + names["out"], d, d, bias)
        norm(b + names["ln_mlp"])
        linear(b + names["up"], f, d, bias)
        if m.get("mlp", "gelu") == "swiglu":
            linear(b + names["gate"], f, d, bias)
        linear(b + names["down"], d, f, bias)
    if m.get("final_norm", True):
        norm(names["ln_final"])
    linear(names["head"], 1, d, bias, conv1d=False)
    return out


def kv_heads(arch):
    """Key/value heads: fewer than the query heads with grouped-query attention."""
    return arch.get("weights", {}).get("kv_heads", arch["model"]["heads"])


def random_tensor(name, shape, fan_in):
    """PyTorch-like scales: a weight matrix ~ N(0, 1/fan_in), other weights (norm scales) near 1,
    the rest (biases, positions) small."""
    if fan_in:
        return torch.randn(shape) / math.sqrt(fan_in)
    if name.endswith("weight"):
        return 1.0 + 0.1 * torch.randn(shape)
    return 0.1 * torch.randn(shape)


def random_weights(arch, layout, seed):
    """Every tensor of the layout at random (`random_tensor`)."""
    torch.manual_seed(seed)
    w = {}
    for name, (shape, fan_in) in shapes(arch, layout).items():
        w[name] = random_tensor(name, shape, fan_in)
    return w


class Reference(torch.nn.Module):
    """The model as plain PyTorch over a layout's tensors."""

    def __init__(self, arch, layout, weights):
        super().__init__()
        self.arch, self.names, self.w = arch, LAYOUTS[layout], weights
        self.m = arch["model"]

    def linear(self, x, name, block_linear=True):
        weight, bias = self.w[name + ".weight"], self.w.get(name + ".bias")
        y = x @ weight if self.names["conv1d"] and block_linear else x @ weight.T
        return y if bias is None else y + bias

    def norm(self, x, name):
        eps = self.m.get("norm_eps", 1e-5)
        if self.m.get("norm", "layer_norm") == "rms_norm":
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * self.w[name + ".weight"]
        return F.layer_norm(x, (x.shape[-1],), self.w[name + ".weight"], self.w.get(name + ".bias"), eps)

    def rotary(self, x):
        """x [batch, heads, T, hd] rotated by position, pairs as [weights] rope_pairing says."""
        t, hd = x.shape[-2], x.shape[-1]
        theta = self.m.get("rope_theta", 10000.0)
        freqs = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        angles = torch.outer(torch.arange(t, dtype=torch.float64), freqs).float()  # [T, hd/2]
        if self.arch.get("weights", {}).get("rope_pairing", "half") == "interleaved":
            # Meta's Llama: consecutive pairs as complex numbers.
            xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], hd // 2, 2))
            return torch.view_as_real(xc * torch.polar(torch.ones_like(angles), angles)).flatten(-2)
        cos, sin = angles.cos().repeat(1, 2), angles.sin().repeat(1, 2)
        rotated = torch.cat([-x[..., hd // 2:], x[..., : hd // 2]], dim=-1)
        return x * cos + rotated * sin

    def forward(self, x):
        """Normalised inputs [N, T, C] -> the head's output [N, T]."""
        n, t, _ = x.shape
        d, h = self.m["d_model"], self.m["heads"]
        names = self.names
        hidden = self.linear(x, names["embed"], block_linear=False)
        if self.m.get("positional", "rotary") == "learned":
            hidden = hidden + self.w[names["positions"]][:t]
        for i in range(self.m["layers"]):
            b = names["block"].format(i=i) + "."
            a = self.norm(hidden, b + names["ln_attn"])
            if "qkv" in names:
                q, k, v = self.linear(a, b + names["qkv"]).split(d, dim=-1)
            else:
                q, k, v = (self.linear(a, b + names[p]) for p in "qkv")
            kv = kv_heads(self.arch)
            q = q.view(n, t, h, d // h).transpose(1, 2)
            # Each key/value head serves h / kv consecutive query heads (Hugging Face's repeat_kv),
            # or with kv_grouping = "tiled" query heads j, j + kv, … (.repeat()).
            tiled = self.arch.get("weights", {}).get("kv_grouping") == "tiled"
            k, v = (z.view(n, t, kv, d // h).transpose(1, 2) for z in (k, v))
            k, v = (z.repeat(1, h // kv, 1, 1) if tiled else z.repeat_interleave(h // kv, dim=1) for z in (k, v))
            if self.m.get("positional", "rotary") == "rotary":
                q, k = self.rotary(q), self.rotary(k)
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(n, t, d)
            hidden = hidden + self.linear(attn, b + names["out"])
            a = self.norm(hidden, b + names["ln_mlp"])
            mlp = self.m.get("mlp", "gelu")
            if mlp == "swiglu":
                inner = F.silu(self.linear(a, b + names["gate"])) * self.linear(a, b + names["up"])
            elif mlp == "relu":
                inner = F.relu(self.linear(a, b + names["up"]))
            else:
                inner = F.gelu(self.linear(a, b + names["up"]), approximate="tanh" if mlp == "gelu_tanh" else "none")
            hidden = hidden + self.linear(inner, b + names["down"])
        if self.m.get("final_norm", True):
            hidden = self.norm(hidden, names["ln_final"])
        return self.linear(hidden, names["head"], block_linear=False).squeeze(-1)


def normalise(arch, raw):
    """Raw channel values [N, T, C] -> what the model reads, per [[inputs]]."""
    cols = []
    for c, spec in enumerate(arch["inputs"]):
        if "scale" in spec or "offset" in spec:
            cols.append(raw[..., c] * spec.get("scale", 1.0) + spec.get("offset", 0.0))
        else:
            cols.append((raw[..., c] - spec.get("mean", 0.0)) / spec.get("std", 1.0))
    return torch.stack(cols, dim=-1)


def predict(arch, model, raw):
    """Predictions in volts: ΔV, or V_{t+1} for a next_voltage head."""
    head = arch["head"]
    with torch.no_grad():
        return model(normalise(arch, raw)) * head.get("scale", 1.0) + head.get("offset", 0.0)


def raw_inputs(arch, windows, steps, seed):
    """Plausible raw channel values: each channel spread around its normalisation's centre."""
    g = torch.Generator().manual_seed(seed + 1)
    cols = []
    for spec in arch["inputs"]:
        if "scale" in spec or "offset" in spec:
            scale = spec.get("scale", 1.0)
            centre, spread = -spec.get("offset", 0.0) / scale, 1.0 / abs(scale)
        else:
            centre, spread = spec.get("mean", 0.0), spec.get("std", 1.0)
        cols.append(centre + spread * (2 * torch.rand(windows, steps, generator=g) - 1) * 2)
    return torch.stack(cols, dim=-1)


# The catalogue channels the two architectures read, from a cell's canonical columns: the
# definitions `voltlens import-model` lists (row t carries what is known before V_{t+1}).
CHANNELS = {
    "voltage": lambda c: c["voltage"][:-1],
    "current_a": lambda c: c["current"][:-1],
    "dt_next_s": lambda c: c["dt"][1:].clamp(min=0),
    "log1p_dt_next": lambda c: torch.log1p(c["dt"][1:].clamp(min=0)),
    "soc": lambda c: c["soc"][:-1],
    "step_time_s": lambda c: c["step_time"][:-1],
    "temperature": lambda c: c["temperature"][:-1].nan_to_num(0.0),
}


def read_cells(arch, dataset):
    """(raw inputs [T, C], normalised targets [T]) per cell the model can read: every cell whose
    channels are all finite (VoltLens leaves out a cell without an absolute SOC the same way)."""
    import pyarrow.parquet as pq

    head, cells = arch["head"], []
    for path in sorted(pathlib.Path(dataset, "timeseries").glob("*.parquet")):
        table = pq.read_table(path, columns=["voltage", "current", "dt", "step_time", "soc", "temperature"])
        cols = {n: torch.tensor(table[n].to_numpy(zero_copy_only=False), dtype=torch.float32) for n in table.column_names}
        raw = torch.stack([CHANNELS[spec["name"]](cols) for spec in arch["inputs"]], dim=-1)
        v = cols["voltage"]
        target = v[1:] if head["target"] == "next_voltage" else v[1:] - v[:-1]
        if raw.isfinite().all() and len(v) > arch["model"]["context"]:
            cells.append((raw, (target - head.get("offset", 0.0)) / head.get("scale", 1.0)))
        else:
            print(f"left out {path.name}: a channel is not finite or the cell is shorter than the context")
    return cells


def train(args):
    arch = tomllib.loads(ARCHS[args.layout])
    cells = read_cells(arch, args.data)
    if not cells:
        sys.exit(f"{args.data}: no cell the model can read")
    weights = random_weights(arch, args.layout, args.seed)
    for w in weights.values():
        w.requires_grad_(True)
    model = Reference(arch, args.layout, weights)
    opt = torch.optim.AdamW(weights.values(), lr=args.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(args.seed)
    t = arch["model"]["context"]
    sizes = torch.tensor([len(raw) - t for raw, _ in cells], dtype=torch.float64)
    for step in range(args.steps):
        # Windows drawn in proportion to cell length, so long cells are not under-sampled.
        picks = torch.multinomial(sizes, args.batch, replacement=True, generator=g)
        starts = [torch.randint(0, int(sizes[i]) + 1, (1,), generator=g).item() for i in picks]
        x = torch.stack([cells[i][0][s:s + t] for i, s in zip(picks.tolist(), starts)])
        y = torch.stack([cells[i][1][s:s + t] for i, s in zip(picks.tolist(), starts)])
        for group in opt.param_groups:  # linear warm-up, cosine decay
            group["lr"] = args.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        loss = F.mse_loss(model(normalise(arch, x)), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(weights.values(), 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.5f}")
    weights = {k: v.detach() for k, v in weights.items()}
    # The check file: the first window of up to eight cells, with the trained model's outputs.
    raw = torch.stack([c[0][:t] for c in cells[:8]])
    write_model(pathlib.Path(args.out), args.layout, weights, raw)


def write_model(out, layout, weights, raw):
    """The reference model of `layout` with `weights`, its check file on `raw` (`save_model`)."""
    arch = tomllib.loads(ARCHS[layout])
    save_model(out, ARCHS[layout], weights, raw, predict(arch, Reference(arch, layout, weights), raw))


def save_model(out, arch_text, weights, raw, outputs):
    """DIR/arch.toml, DIR/weights.safetensors and DIR/check.safetensors (inputs, outputs): what
    `voltlens import-model --check` reads."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "arch.toml").write_text(arch_text)
    save_file({k: v.contiguous() for k, v in weights.items()}, out / "weights.safetensors")
    save_file({"inputs": raw.contiguous(), "outputs": outputs.contiguous()}, out / "check.safetensors")
    print(f"wrote {out}: {len(weights)} tensors, check inputs {list(raw.shape)}")


def make(args):
    arch = tomllib.loads(ARCHS[args.layout])
    weights = random_weights(arch, args.layout, args.seed)
    raw = raw_inputs(arch, args.windows, min(args.steps, arch["model"]["context"]), args.seed)
    write_model(pathlib.Path(args.out), args.layout, weights, raw)


def check(args):
    arch = tomllib.loads(pathlib.Path(args.arch).read_text())
    weights = load_file(args.weights)
    expected = shapes(arch, args.layout)
    missing = sorted(set(expected) - set(weights))
    wrong = sorted(n for n in expected if n in weights and list(weights[n].shape) != expected[n][0])
    if missing or wrong:
        sys.exit(f"weights do not fit the {args.layout} layout: missing {missing}, wrong shape {wrong}")
    ref = load_file(args.check)
    ours = predict(arch, Reference(arch, args.layout, weights), ref["inputs"])
    err = (ours - ref["outputs"]).abs().max().item()
    rel = err / max(ref["outputs"].abs().max().item(), 1e-30)
    print(f"max abs error {err:.3e} V, max rel error {rel:.3e} (tolerance {args.tolerance:.1e} V)")
    if err > args.tolerance:
        sys.exit(1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("--layout", choices=["gpt2", "llama"], required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--windows", type=int, default=8)
    m.add_argument("--steps", type=int, default=512)
    t = sub.add_parser("train")
    t.add_argument("--layout", choices=["gpt2", "llama"], required=True)
    t.add_argument("--data", required=True, help="a VoltLens dataset directory (cells.parquet + timeseries/)")
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=600)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=1e-3)
    c = sub.add_parser("check")
    c.add_argument("--layout", choices=sorted(LAYOUTS), required=True)
    c.add_argument("--arch", required=True)
    c.add_argument("--weights", required=True)
    c.add_argument("--check", required=True)
    c.add_argument("--tolerance", type=float, default=1e-5)
    args = p.parse_args()
    torch.set_grad_enabled(args.command == "train")
    {"make": make, "train": train, "check": check}[args.command](args)


if __name__ == "__main__":
    main()
