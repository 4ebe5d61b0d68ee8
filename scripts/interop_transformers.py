"""Battery models built on Hugging Face transformers' own GPT-2 and Llama blocks, for
scripts/interop_transformers.sh: an input projection from raw channels, `GPT2Model` or
`LlamaModel` (fed `inputs_embeds`), a regression head. Their `state_dict()` is saved as it comes
(the unused token embedding included), with the arch.toml that maps it and a check file of the
model's own outputs, for `voltlens import-model --check`.

usage: python interop_transformers.py OUT_DIR   (writes OUT_DIR/{gpt2,llama}/…)
needs: torch, safetensors, transformers
"""
import pathlib
import sys
import tomllib

import torch
import transformers
from transformers import GPT2Config, GPT2Model, LlamaConfig, LlamaModel

# The reference's architectures (examples/pytorch/reference.py) with [weights] tables that map
# transformers' own state-dict names.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "examples" / "pytorch"))
import reference  # noqa: E402

WEIGHTS = {
    "gpt2": r"""[weights]
conv1d = ['^backbone\.h\.\d+\.(attn|mlp)\.c_\w+\.weight$']
ignore = ['^backbone\.wte\.weight$']
rename = [
  ['^input_proj\.(weight|bias)$', 'embed.$1'],
  ['^backbone\.wpe\.weight$', 'positions'],
  ['^backbone\.h\.(\d+)\.ln_1\.(weight|bias)$', 'blocks.$1.ln_attn.$2'],
  ['^backbone\.h\.(\d+)\.attn\.c_attn\.(weight|bias)$', 'blocks.$1.attn.qkv.$2'],
  ['^backbone\.h\.(\d+)\.attn\.c_proj\.(weight|bias)$', 'blocks.$1.attn.out.$2'],
  ['^backbone\.h\.(\d+)\.ln_2\.(weight|bias)$', 'blocks.$1.ln_mlp.$2'],
  ['^backbone\.h\.(\d+)\.mlp\.c_fc\.(weight|bias)$', 'blocks.$1.mlp.up.$2'],
  ['^backbone\.h\.(\d+)\.mlp\.c_proj\.(weight|bias)$', 'blocks.$1.mlp.down.$2'],
  ['^backbone\.ln_f\.(weight|bias)$', 'ln_final.$1'],
  ['^head\.(weight|bias)$', 'head.$1'],
]
""",
    # transformers' Llama rotates halves (`rotate_half`), not interleaved pairs.
    "llama": r"""[weights]
rope_pairing = "half"
kv_heads = 2
ignore = ['^backbone\.embed_tokens\.weight$']
rename = [
  ['^input_proj\.(weight|bias)$', 'embed.$1'],
  ['^backbone\.layers\.(\d+)\.input_layernorm\.weight$', 'blocks.$1.ln_attn.weight'],
  ['^backbone\.layers\.(\d+)\.self_attn\.([qkv])_proj\.weight$', 'blocks.$1.attn.$2.weight'],
  ['^backbone\.layers\.(\d+)\.self_attn\.o_proj\.weight$', 'blocks.$1.attn.out.weight'],
  ['^backbone\.layers\.(\d+)\.post_attention_layernorm\.weight$', 'blocks.$1.ln_mlp.weight'],
  ['^backbone\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight$', 'blocks.$1.mlp.$2.weight'],
  ['^backbone\.norm\.weight$', 'ln_final.weight'],
  ['^head\.(weight|bias)$', 'head.$1'],
]
""",
}


def arch_text(kind):
    """The reference's architecture for `kind` with transformers' [weights] table."""
    text = reference.ARCHS[kind]
    return text[: text.index("[weights]")] + WEIGHTS[kind]


def backbone(kind, arch):
    m = arch["model"]
    if kind == "gpt2":
        config = GPT2Config(vocab_size=1, n_positions=m["context"], n_embd=m["d_model"], n_layer=m["layers"],
                            n_head=m["heads"], n_inner=m["d_mlp"], activation_function="gelu_new",
                            layer_norm_epsilon=m["norm_eps"], attn_implementation="eager",
                            bos_token_id=None, eos_token_id=None)
        return GPT2Model(config)
    config = LlamaConfig(vocab_size=1, hidden_size=m["d_model"], intermediate_size=m["d_mlp"],
                         num_hidden_layers=m["layers"], num_attention_heads=m["heads"],
                         num_key_value_heads=arch["weights"]["kv_heads"], max_position_embeddings=m["context"],
                         rms_norm_eps=m["norm_eps"], rope_theta=m["rope_theta"], attn_implementation="eager",
                         bos_token_id=None, eos_token_id=None)
    return LlamaModel(config)


class Battery(torch.nn.Module):
    def __init__(self, kind, arch):
        super().__init__()
        d = arch["model"]["d_model"]
        self.input_proj = torch.nn.Linear(len(arch["inputs"]), d)
        self.backbone = backbone(kind, arch)
        self.head = torch.nn.Linear(d, 1)

    def forward(self, x):
        return self.head(self.backbone(inputs_embeds=self.input_proj(x)).last_hidden_state).squeeze(-1)


def main(out):
    torch.manual_seed(0)
    for kind in ["gpt2", "llama"]:
        text = arch_text(kind)
        arch = tomllib.loads(text)
        model = Battery(kind, arch).eval()
        # transformers initialises weights at std 0.02, which makes every output nearly the same;
        # the reference's PyTorch-like scales give the check something to tell apart (HF Conv1D
        # weights are stored [in, out], so their fan-in is the first dimension).
        with torch.no_grad():
            for name, p in model.named_parameters():
                fan_in = (p.shape[0] if ".c_" in name else p.shape[1]) if p.dim() == 2 and "wpe" not in name else None
                p.copy_(reference.random_tensor(name, p.shape, fan_in))
            raw = reference.raw_inputs(arch, 8, arch["model"]["context"], 0)
            outputs = model(reference.normalise(arch, raw)) * arch["head"]["scale"] + arch["head"]["offset"]
        print(f"transformers {transformers.__version__} {type(model.backbone).__name__}, outputs "
              f"{outputs.min():.3f}…{outputs.max():.3f} V:", end=" ")
        reference.save_model(pathlib.Path(out) / kind, text, model.state_dict(), raw, outputs)


if __name__ == "__main__":
    main(sys.argv[1])
