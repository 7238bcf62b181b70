#!/usr/bin/env python3
"""The real SmolLM2-135M-Instruct as a float32 Hugging Face directory, from its GGUF file.

  smollm2_dir.py [OUT] [--gguf FILE]

OUT defaults to $DPO_CACHE/smollm2-f32 (DPO_CACHE defaults to ~/.cache/dpo-rs, as in
scripts/fetch_smollm2.sh), which is where the SmolLM2 benches look for it.

FILE defaults to what scripts/fetch_smollm2.sh prints (it downloads the GGUF once, checked by its
SHA-256). transformers reads the GGUF (`from_pretrained(dir, gguf_file=name)`): the Q4_1 / Q8_0
weights are dequantized to float32 and llama.cpp's row permutation of q_proj / k_proj is undone,
so the tensors are transformers' `LlamaForCausalLM` ones. A model loaded from a GGUF refuses
`save_pretrained`, so its state dict goes into a fresh `LlamaForCausalLM` of the same config,
which saves normally. OUT gets:

  config.json, generation_config.json   LlamaConfig (30 layers, 576 wide, 9 heads / 3 kv heads,
                                         49152 ids, tied embeddings, rope theta 1e5, also as the
                                         top-level `rope_theta` of the hub's files), dtype float32
  model.safetensors                     float32, 134.5M params (the tied lm_head stored once)
  tokenizer.json, tokenizer_config.json, chat_template.jinja (the ChatML template of the GGUF)

These are the inputs of the Python baselines (benches/dpo_vs_trl.py, benches/torch/sft_step.py,
benches/generate_vs_transformers.py); `dpo` reads either this directory or the GGUF itself.
The weights are the Q4_1 model's, dequantized: not the bf16 weights of the HF release, but the
same on both sides of every bench, which is what a speed comparison needs.

Does nothing if OUT/model.safetensors exists already (delete OUT to rebuild). Prints OUT.
"""
import argparse
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_dir():
    """The directory the SmolLM2 benches use when given none: next to scripts/fetch_smollm2.sh's GGUF."""
    return os.path.join(os.environ.get("DPO_CACHE") or os.path.expanduser("~/.cache/dpo-rs"), "smollm2-f32")


def add_rope_theta(path):
    """transformers 5 writes the rope base only inside `rope_parameters`; the hub's config.json of
    SmolLM2 (and of Qwen2.5, Llama 3) has it at the top level as `rope_theta`: both, so that the
    directory reads like a downloaded one (transformers 5 reads it back the same)."""
    import json
    with open(path) as f:
        config = json.load(f)
    config["rope_theta"] = config["rope_parameters"]["rope_theta"]
    with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default=default_dir())
    ap.add_argument("--gguf", help="the GGUF file (default: scripts/fetch_smollm2.sh's)")
    args = ap.parse_args()
    if os.path.exists(os.path.join(args.out, "model.safetensors")):
        print(args.out)
        return
    gguf = args.gguf or subprocess.run([os.path.join(REPO, "scripts", "fetch_smollm2.sh")], check=True,
                                       stdout=subprocess.PIPE, text=True).stdout.strip()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder, name = os.path.split(os.path.abspath(gguf))
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)  # it would make the directory a "GGUF model" again
    # The GGUF stores the epsilon as an f32 (9.9999997e-06); the HF release's config says 1e-05.
    cfg["rms_norm_eps"] = float(f"{cfg['rms_norm_eps']:.6g}")
    config = LlamaConfig(**cfg)
    config.dtype = torch.float32
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    model.save_pretrained(args.out)
    add_rope_theta(os.path.join(args.out, "config.json"))
    tok.save_pretrained(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"SmolLM2-135M-Instruct: {n / 1e6:.1f}M params, float32, from {gguf}", file=sys.stderr)
    print(args.out)


if __name__ == "__main__":
    main()
