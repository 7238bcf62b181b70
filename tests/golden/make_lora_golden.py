#!/usr/bin/env python3
"""make_lora_golden.py OUTDIR [peft|trl ...] -- LoRA goldens computed by PEFT and TRL.
   make_lora_golden.py roundtrip ADAPTER_DIR BASE_DIR [GOLDEN_JSON] -- PEFT's logits of an adapter.

Pinned: peft==0.21.2, transformers==5.24.0, trl==1.16.0, torch 2.15.0 (the versions used are
recorded in OUTDIR/lora/versions.json and OUTDIR/smollm2/trl_lora/versions.json). Nothing comes
from the hub. The helpers (tiny configs, `randomize`, the float64 patches, SmolLM2 loading, the
HH-RLHF pairs, `write_json`) are imported from make_llama_golden.py beside this file. The parts to
write can be named after OUTDIR (default: both).

LoRA as PEFT computes it, for each targeted linear layer (no dropout here: lora_dropout 0):

    y = x W^T + b + scale * (x A^T) B^T,   A = lora_A.weight (r, in), B = lora_B.weight (out, r)
    scale = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora

(for GPT-2's Conv1D the base weight is stored (in, out) and PEFT sets fan_in_fan_out = true; A and B
keep the shapes above). Adapter files are PEFT's own `save_pretrained`: adapter_config.json +
adapter_model.safetensors with keys `base_model.model.<module>.lora_A.weight` / `.lora_B.weight`.

Part `peft` -> OUTDIR/lora/ (tiny random models, seconds):

  lora/<name>/base/          the base model: tiny_configs()-style random weights (matrices and
                             biases N(0, 0.3^2), norm weights 1 + 0.2 U(-1, 1)), save_pretrained,
                             float32: `llama` (make_llama_golden's llama32: LlamaConfig, llama3 RoPE,
                             GQA 4:2, head_dim 16, untied lm_head), `qwen2` (its qwen2: q/k/v biases,
                             GQA 4:2, tied), `gpt2` (GPT2Config: vocab 64, n_embd 24, 2 layers, 2
                             heads, 32 positions, tied)
  lora/<name>/adapter/       get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                             target_modules=T)) with every lora_A and lora_B redrawn N(0, 0.3^2)
                             (seeded), then save_pretrained: adapter_config.json (PEFT 0.21.2's
                             fields, as written) + adapter_model.safetensors (float32).
                             T: llama "all-linear" (every nn.Linear but lm_head); qwen2
                             ["q_proj", "v_proj"] with use_rslora=True (scale 8 / sqrt(4) = 4);
                             gpt2 ["c_attn", "c_proj"] (suffix match: attn.c_attn, attn.c_proj and
                             mlp.c_proj; Conv1D, so PEFT turns fan_in_fan_out on)
  lora/<name>/merged/        merge_and_unload() of the same model, save_pretrained (float32)
  lora/<name>/golden.json    see GOLDEN_DOC below
  lora/peft_default_init.json  see DEFAULT_INIT_DOC below
  lora/versions.json         the versions used

Part `trl` -> OUTDIR/smollm2/trl_lora/ (needs the GGUF, see make_llama_golden.SMOLLM2_GGUF; a few
minutes on CPU): SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to float32) with a LoRA adapter on
q_proj and v_proj (r 8, alpha 16, dropout 0; lora_A = PEFT's own init under torch.manual_seed(SEED),
lora_B = N(0, 0.02^2) seeded, so the policy stays near the base); TRL 1.16 DPOTrainer, beta 0.1,
sigmoid loss, the 4 pairs as one batch, one SGD step (lr 0.1 = LR, no momentum, no weight decay, no
warmup, constant schedule, max_grad_norm 0 = no clipping, disable_dropout, sequential sampler):

  trl_lora/pairs.jsonl       4 prompt/chosen/rejected rows from HH-RLHF harmless-base (trl_pairs,
                             max 64 tokens), the format of smollm2/trl_eval/pairs.jsonl
  trl_lora/adapter/          the adapter before training (PEFT save_pretrained)
  trl_lora/logps.json        per pair: TRL's prompt/chosen/rejected ids (completion ids end with EOS
                             2) and the float32 summed completion log-probs of the policy (adapter
                             on) and of the reference (adapter off = the base model)
  trl_lora/metrics.json      reference = the base (see REF_DOC): DPOTrainer.evaluate on the 4 rows
                             before the step, the metrics TRL logged for step 1 (computed before the
                             update), the batch order TRL used, the grad norm
  trl_lora/adapter_after_step/  the adapter after the SGD step (save_pretrained, "default" adapter);
                             metrics.json's loss_after_step is the DPO loss recomputed with it
  trl_lora/training_args.json   the DPOConfig used (to_dict), and how the trainer was built
  trl_lora/ref_adapter_copy/    the same with model = PeftModel.from_pretrained(base, adapter/,
                             is_trainable=True) and no ref_model: TRL 1.16 + PEFT >= 0.20 then adds a
                             frozen copy of the adapter named "ref" and uses it as the reference
                             (so before the step policy == reference: loss ln 2, rewards 0);
                             metrics.json (with how far its step lands from case (a)'s; its
                             adapter is not saved, 1.9 MB), training_args.json
  trl_lora/versions.json     the versions used and the GGUF's sha256

Part `roundtrip`: loads a base model directory and an adapter directory written by another program
(the Rust `dpo`) with PeftModel.from_pretrained, runs the ids of a golden.json (default:
BASE_DIR/../golden.json) and writes ADAPTER_DIR/../peft_logits.json: `ids`, `logits_f32` (float32,
per sequence, per position, full vocabulary), and, when the golden has them, the max |difference|
to its `logits_f32`. Example, on one of this script's own adapters:

  cp -r tests/golden/lora/llama /tmp/rt && \\
  VENV/bin/python tests/golden/make_lora_golden.py roundtrip /tmp/rt/adapter /tmp/rt/base
  # writes /tmp/rt/peft_logits.json; max_abs_vs_golden_logits_f32 is 0 for an unchanged adapter

Run:  VENV/bin/python tests/golden/make_lora_golden.py tests/golden   (THREADS=n: torch threads)
"""
import copy
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import make_llama_golden as llama  # noqa: E402
from make_llama_golden import f32_list, f64_list, write_json  # noqa: E402

SEED = llama.SEED
TINY_SEED = llama.TINY_SEED
LORA_SEED = 4321
LORA_STD = 0.3
SEQ_LENGTHS = [7, 5]
R, ALPHA = 4, 8
TRL_R, TRL_ALPHA, TRL_B_STD = 8, 16, 0.02
LR = 0.1  # one SGD step moves the adapter by about 2% (relative), far above float32 noise
BETA = llama.BETA
TRL_MAX_TOKENS = 64
PINNED = {"transformers": "5.24.0", "trl": "1.16.0", "peft": "0.21.2"}

GOLDEN_DOC = {
    "config": "the base config values that matter (base/config.json holds all of them)",
    "lora": "the LoraConfig given to get_peft_model (target_modules as given)",
    "adapter_config": "adapter/adapter_config.json as PEFT wrote it (target_modules resolved)",
    "targeted_modules": "the modules PEFT wrapped (names in the base model, sorted)",
    "scaling": "per targeted module, module.scaling['default'] (alpha / r, rslora alpha / sqrt(r))",
    "fan_in_fan_out": "per targeted module, the fan_in_fan_out the LoRA layer uses (true for GPT-2 "
                      "Conv1D: base weight stored (in, out))",
    "adapter_tensors": "adapter_model.safetensors: key -> shape (lora_A (r, in), lora_B (out, r))",
    "ids": "2 unpadded sequences (7 and 5 tokens), each run alone (batch 1)",
    "logits_f32": "per sequence, per position, the full-vocabulary logits of the float32 PeftModel "
                  "(adapter on, unmerged), shortest float32 repr",
    "logits_f64": "the same from a float64 copy (model.double(); llama/qwen2 with "
                  "make_llama_golden's float64 patches: sdpa, RMSNorm and RoPE in float64; gpt2 "
                  "plain double with sdpa), 13 significant digits",
    "logprob_sums": "per sequence, sum over t of log p(ids[t+1] | ids[..=t]) from logits_f64",
    "grads_f64": "d(logprob_sums[0] + logprob_sums[1]) / d(tensor) in float64 for every lora_A and "
                 "lora_B tensor, keyed as in adapter_model.safetensors; base weights frozen",
    "checks": "max |logits| (float64) and max |logits| differences: merged vs unmerged in float32 "
              "(merge_and_unload rounds W + scale B A to float32 once) and in float64 (the float64 "
              "copy merged), adapter reloaded with PeftModel.from_pretrained vs the original, "
              "merged/ reloaded vs unmerged, float32 vs logits_f64, adapter on vs off (float32: how "
              "much the adapter changes the output)",
}

DEFAULT_INIT_DOC = (
    "get_peft_model(base, LoraConfig(r=8, lora_alpha=16)) with PEFT's default init "
    "(init_lora_weights=True: lora_A kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)); "
    "lora_B zeros) under torch.manual_seed(SEED). `modules`: per wrapped module of the llama base, "
    "the shapes of lora_A/lora_B, whether B is all zero, max |A| and the bound 1/sqrt(in_features). "
    "`default_target_modules`: what PEFT resolves when LoraConfig has no target_modules, per "
    "architecture (from get_peft_model on the tiny bases), and the mapping entry of "
    "peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING. "
    "`trl_disable_dropout`: a lora_dropout 0.1 adapter's dropout modules before/after TRL's "
    "disable_dropout_in_model (what DPOTrainer(disable_dropout=True) calls on the model)")

REF_DOC = (
    "What TRL 1.16 DPOTrainer uses as the reference with PEFT and ref_model=None "
    "(trl/trainer/dpo_trainer.py): (a) model = a plain transformers model + peft_config: "
    "get_peft_model makes a new adapter 'default' and the reference log-probs are computed under "
    "use_adapter(model, None) = model.disable_adapter(), i.e. the base model; (b) model = a "
    "PeftModel and no peft_config: with PEFT >= 0.20 (or any LoRA without target_parameters) TRL "
    "calls model.add_adapter('ref', peft_config['default']) and copies every '.default.' parameter "
    "into its '.ref.' twin, and the reference is use_adapter(model, 'ref'): the frozen copy of the "
    "adapter as it was when the trainer was built (not the base). TRL 1.16 has no "
    "ref_adapter_name/model_adapter_name options (older TRL's); the name 'ref' is fixed. This "
    "folder's metrics.json is case (a) with the adapter of adapter/ copied into the new 'default' "
    "adapter after the trainer was built (before train()); ref_adapter_copy/ is case (b).")


def versions(extra=None):
    v = llama.versions(extra)
    from importlib import metadata
    v["peft"] = metadata.version("peft")
    return v


# --------------------------------------------------------------------------------------------
# part peft


def gpt2_config():
    from transformers import GPT2Config
    return GPT2Config(vocab_size=64, n_positions=32, n_embd=24, n_layer=2, n_head=2,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)


def randomize_gpt2(model, gen):
    """make_llama_golden.randomize for GPT-2's names: LayerNorm weights (ln_1, ln_2, ln_f) near 1."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name + "." and name.endswith(".weight") or name.startswith("transformer.ln_f.w"):
                p.copy_(1.0 + llama.NORM_SPREAD * (2 * torch.rand(p.shape, generator=gen) - 1))
            else:
                p.copy_(llama.WEIGHT_STD * torch.randn(p.shape, generator=gen))
    return model.eval()


CASES = {
    "llama": dict(config="llama32", lora=dict(target_modules="all-linear")),
    "qwen2": dict(config="qwen2", lora=dict(target_modules=["q_proj", "v_proj"], use_rslora=True)),
    "gpt2": dict(config="gpt2", lora=dict(target_modules=["c_attn", "c_proj"])),
}


def base_model(name, gen):
    from transformers import AutoModelForCausalLM
    if name == "gpt2":
        config = gpt2_config()
        config._attn_implementation = "sdpa"
        return randomize_gpt2(AutoModelForCausalLM.from_config(config, dtype=torch.float32), gen)
    config = llama.tiny_configs()[CASES[name]["config"]]
    config._attn_implementation = "sdpa"
    return llama.randomize(AutoModelForCausalLM.from_config(config, dtype=torch.float32), gen)


def peft_key(param_name):
    """A PeftModel parameter name -> its adapter_model.safetensors key (no adapter name)."""
    return param_name.replace(".default.", ".")


def lora_layers(peft_model):
    from peft.tuners.lora import LoraLayer
    prefix = "base_model.model."
    return {name[len(prefix):]: m for name, m in peft_model.named_modules()
            if isinstance(m, LoraLayer) and name.startswith(prefix)}


def f64_peft(peft_model, name):
    if name == "gpt2":
        m = copy.deepcopy(peft_model).double()
        m.get_base_model().set_attn_implementation("sdpa")
        return m.eval()
    return llama.float64_model(peft_model)  # forwards .config / set_attn_implementation to the base


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def max_diff(a, b):
    return max((x.double() - y.double()).abs().max().item() for x, y in zip(a, b))


def write_peft_case(root, name, gen, lora_gen):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM
    d = os.path.join(root, name)
    base = base_model(name, gen)
    base.save_pretrained(os.path.join(d, "base"))
    vocab = base.config.vocab_size
    ids_list = [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in SEQ_LENGTHS]
    base_logits = [logits_of(base, ids) for ids in ids_list]

    lora_kwargs = dict(r=R, lora_alpha=ALPHA, lora_dropout=0.0, **CASES[name]["lora"])
    model = get_peft_model(copy.deepcopy(base), LoraConfig(**lora_kwargs))
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if ".lora_A." in pname or ".lora_B." in pname:
                p.copy_(LORA_STD * torch.randn(p.shape, generator=lora_gen))
    model.eval()
    adapter_dir = os.path.join(d, "adapter")
    model.save_pretrained(adapter_dir)
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        adapter_config = json.load(f)
    from safetensors.torch import load_file
    tensors = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))

    layers = lora_layers(model)
    logits32 = [logits_of(model, ids) for ids in ids_list]

    # float64: logits, log-prob sums and gradients of their sum with respect to A and B
    m64 = f64_peft(model, name)
    logits64, sums, total = [], [], 0
    for ids in ids_list:
        l64 = m64(torch.tensor([ids])).logits[0]
        s = llama.seq_logprob_sum(l64, ids)
        total = total + s
        logits64.append(l64.detach())
        sums.append(s.item())
    m64.zero_grad()
    total.backward()
    grads = {}
    for pname, p in m64.named_parameters():
        if p.requires_grad:
            assert ".lora_A.default." in pname or ".lora_B.default." in pname, pname
            key = peft_key(pname)
            assert key in tensors, (key, list(tensors)[:3])
            grads[key] = {"shape": list(p.shape), "grad": f64_list(p.grad)}
    assert sorted(grads) == sorted(tensors), (sorted(grads), sorted(tensors))

    # checks: reload the adapter, merge and reload the merged model
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(
        os.path.join(d, "base"), dtype=torch.float32), adapter_dir).eval()
    reload_diff = max_diff([logits_of(reloaded, ids) for ids in ids_list], logits32)
    merged = copy.deepcopy(model).merge_and_unload().eval()
    merged_logits = [logits_of(merged, ids) for ids in ids_list]
    merged.save_pretrained(os.path.join(d, "merged"))
    merged_re = AutoModelForCausalLM.from_pretrained(os.path.join(d, "merged"), dtype=torch.float32)
    merged_re_diff = max_diff([logits_of(merged_re.eval(), ids) for ids in ids_list], logits32)
    merged64 = copy.deepcopy(m64).merge_and_unload().eval()  # keeps the float64 patches
    merged64_diff = max_diff([logits_of(merged64, ids) for ids in ids_list], logits64)
    scale = max(t.abs().max().item() for t in logits64)
    checks = {"max_abs_logits": scale,
              "max_abs_logits_merged_vs_unmerged": max_diff(merged_logits, logits32),
              "max_abs_logits_merged_vs_unmerged_f64": merged64_diff,
              "max_abs_logits_reloaded_adapter_vs_original": reload_diff,
              "max_abs_logits_merged_dir_reloaded_vs_unmerged": merged_re_diff,
              "max_abs_logits_f32_vs_f64": max_diff(logits32, logits64),
              "max_abs_logits_adapter_on_vs_off": max_diff(logits32, base_logits)}
    # float32 merging rounds W + scale B A once: relative 1e-5 of the logits' size; float64 exact
    assert checks["max_abs_logits_merged_vs_unmerged"] < 1e-5 * scale, checks
    assert checks["max_abs_logits_merged_dir_reloaded_vs_unmerged"] < 1e-5 * scale, checks
    assert merged64_diff < 1e-10, checks
    assert reload_diff == 0.0, checks
    assert checks["max_abs_logits_adapter_on_vs_off"] > 0.5, checks

    cfg = base.config.to_dict()
    keys = llama.CONFIG_KEYS + ["n_embd", "n_layer", "n_head", "n_positions", "n_inner",
                                "activation_function", "layer_norm_epsilon", "architectures"]
    g = {"name": name, "doc": GOLDEN_DOC,
         "config": {k: cfg[k] for k in keys if k in cfg},
         "lora": lora_kwargs,
         "adapter_config": adapter_config,
         "targeted_modules": sorted(layers),
         "scaling": {k: m.scaling["default"] for k, m in sorted(layers.items())},
         "fan_in_fan_out": {k: bool(m.fan_in_fan_out) for k, m in sorted(layers.items())},
         "adapter_tensors": {k: list(v.shape) for k, v in sorted(tensors.items())},
         "ids": ids_list,
         "logits_f32": [f32_list(t) for t in logits32],
         "logits_f64": [f64_list(t) for t in logits64],
         "logprob_sums": sums,
         "grads_f64": grads,
         "checks": checks}
    write_json(os.path.join(d, "golden.json"), g)
    print(f"  {name}: {len(layers)} modules, scale {set(g['scaling'].values())}, "
          f"fan_in_fan_out {set(g['fan_in_fan_out'].values())}, checks {checks}")
    return base


def write_default_init(root, bases):
    from peft import LoraConfig, get_peft_model
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAPPING
    from trl.trainer.utils import disable_dropout_in_model
    torch.manual_seed(SEED)
    model = get_peft_model(copy.deepcopy(bases["llama"]), LoraConfig(r=8, lora_alpha=16))
    modules = {}
    for k, m in sorted(lora_layers(model).items()):
        a, b = m.lora_A["default"].weight, m.lora_B["default"].weight
        modules[k] = {"lora_A_shape": list(a.shape), "lora_B_shape": list(b.shape),
                      "in_features": m.in_features, "out_features": m.out_features,
                      "B_all_zero": bool((b == 0).all()), "max_abs_A": a.abs().max().item(),
                      "bound_1_over_sqrt_in": 1 / m.in_features ** 0.5,
                      "scaling": m.scaling["default"]}
        assert modules[k]["B_all_zero"] and modules[k]["max_abs_A"] <= modules[k]["bound_1_over_sqrt_in"]
    defaults = {}
    for name, base in bases.items():
        pm = get_peft_model(copy.deepcopy(base), LoraConfig(r=8, lora_alpha=16))
        mt = base.config.model_type
        defaults[name] = {"model_type": mt,
                          "resolved_target_modules": sorted(pm.peft_config["default"].target_modules),
                          "wrapped_modules": sorted(lora_layers(pm)),
                          "fan_in_fan_out": pm.peft_config["default"].fan_in_fan_out,
                          "mapping": MAPPING.get(mt)}
    dm = get_peft_model(copy.deepcopy(bases["llama"]),
                        LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["q_proj"]))
    before = sorted({type(m.lora_dropout["default"]).__name__ + f" p={m.lora_dropout['default'].p}"
                     for m in lora_layers(dm).values()})
    disable_dropout_in_model(dm)
    after = sorted({type(m.lora_dropout["default"]).__name__ + f" p={m.lora_dropout['default'].p}"
                    for m in lora_layers(dm).values()})
    write_json(os.path.join(root, "peft_default_init.json"), {
        "doc": DEFAULT_INIT_DOC, "r": 8, "lora_alpha": 16, "seed": SEED,
        "modules": modules, "default_target_modules": defaults,
        "trl_disable_dropout": {"lora_dropout_before": before, "lora_dropout_after": after,
                                "doc": "lora_dropout 0.1 makes torch.nn.Dropout modules (0.0 makes "
                                       "nn.Identity); TRL's disable_dropout_in_model sets p = 0 on "
                                       "every nn.Dropout of the model, these included"}})
    print(f"  default targets: { {k: v['resolved_target_modules'] for k, v in defaults.items()} }; "
          f"dropout {before} -> {after}")


def write_peft(out):
    root = os.path.join(out, "lora")
    if os.path.isdir(root):
        shutil.rmtree(root)
    os.makedirs(root)
    gen = torch.Generator().manual_seed(TINY_SEED)
    lora_gen = torch.Generator().manual_seed(LORA_SEED)
    bases = {name: write_peft_case(root, name, gen, lora_gen) for name in CASES}
    write_default_init(root, bases)
    write_json(os.path.join(root, "versions.json"), versions())


# --------------------------------------------------------------------------------------------
# part roundtrip


def roundtrip(adapter_dir, base_dir, golden_path=None):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    golden_path = golden_path or os.path.join(base_dir, "..", "golden.json")
    with open(golden_path) as f:
        golden = json.load(f)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    logits = [logits_of(model, ids) for ids in golden["ids"]]
    result = {"doc": "PeftModel.from_pretrained(base_dir, adapter_dir) float32 logits of the "
                     "golden's ids (per sequence, per position, full vocabulary)",
              "adapter_dir": os.path.abspath(adapter_dir), "base_dir": os.path.abspath(base_dir),
              "golden": os.path.abspath(golden_path), "versions": versions(),
              "ids": golden["ids"], "logits_f32": [f32_list(t) for t in logits]}
    if "logits_f32" in golden:
        result["max_abs_vs_golden_logits_f32"] = max_diff(
            logits, [torch.tensor(x) for x in golden["logits_f32"]])
    path = os.path.join(adapter_dir, "..", "peft_logits.json")
    write_json(path, result)
    print(f"wrote {os.path.normpath(path)}: max_abs_vs_golden_logits_f32 "
          f"{result.get('max_abs_vs_golden_logits_f32')}")


# --------------------------------------------------------------------------------------------
# part trl


METRIC_KEYS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
               "rewards/margins", "logps/chosen", "logps/rejected"]


def trl_args(workdir, n):
    from trl import DPOConfig
    return DPOConfig(
        output_dir=workdir, report_to="none", bf16=False, fp16=False, use_cpu=True, beta=BETA,
        loss_type="sigmoid", max_length=512, per_device_train_batch_size=n,
        per_device_eval_batch_size=n, gradient_accumulation_steps=1, max_steps=1,
        learning_rate=LR, optim="sgd", weight_decay=0.0, warmup_steps=0,
        lr_scheduler_type="constant", max_grad_norm=0.0, disable_dropout=True,
        precompute_ref_log_probs=False, train_sampling_strategy="sequential",
        gradient_checkpointing=False, dataloader_drop_last=False, logging_steps=1,
        save_strategy="no", seed=SEED, data_seed=SEED)


def recording_trainer():
    from trl import DPOTrainer

    class RecordingDPOTrainer(DPOTrainer):
        """DPOTrainer that records the input_ids of each batch it computes a loss on."""
        batches = []

        def compute_loss(self, model, inputs, *args, **kwargs):
            self.batches.append((self.model.training, inputs["input_ids"].tolist()))
            return super().compute_loss(model, inputs, *args, **kwargs)
    return RecordingDPOTrainer


def batch_order(trainer, prepared):
    """The pair index of each chosen row of the (first) training batch."""
    rows = [list(r["prompt_ids"]) + list(r["chosen_ids"]) for r in prepared]
    train = [ids for training, ids in trainer.batches if training][0]
    order = []
    for ids in train[:len(train) // 2]:
        order.append(next(i for i, r in enumerate(rows) if ids[:len(r)] == r
                          and all(t == trainer.processing_class.pad_token_id for t in ids[len(r):])))
    return order


def adapter_state(model):
    return {peft_key(n): p.detach().clone() for n, p in model.named_parameters()
            if ".lora_A.default." in n or ".lora_B.default." in n}


def run_trl(model, tok, pairs, workdir, peft_config=None, load_adapter=None):
    """One DPOTrainer: evaluate, then one training step. Returns what the goldens need."""
    from datasets import Dataset
    dataset = Dataset.from_list(pairs)
    args = trl_args(workdir, len(pairs))
    trainer_cls = recording_trainer()
    trainer_cls.batches = []
    trainer = trainer_cls(model=model, ref_model=None, args=args, train_dataset=dataset,
                          processing_class=tok, peft_config=peft_config)
    if load_adapter is not None:  # our adapter into TRL's freshly made "default" adapter
        params = dict(trainer.model.named_parameters())
        with torch.no_grad():
            for key, value in load_adapter.items():
                name = key.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")
                assert params[name].shape == value.shape and params[name].requires_grad
                params[name].copy_(value)
            assert len(load_adapter) == sum(".lora_" in n for n in params), "adapter keys"
    unwrapped = trainer.model
    adapters = sorted(unwrapped.peft_config)
    dropouts = sorted({f"{type(m).__name__} p={getattr(m, 'p', None)}"
                       for n, m in unwrapped.named_modules() if n.endswith("lora_dropout.default")})
    before = adapter_state(unwrapped)
    ev = trainer.evaluate(eval_dataset=dataset)
    trainer.train()
    after = adapter_state(unwrapped)
    step_log = next(h for h in trainer.state.log_history if h.get("step") == 1 and "loss" in h)
    delta = max((after[k] - before[k]).abs().max().item() for k in before)
    rel = max(((after[k] - before[k]).norm() / before[k].norm()).item() for k in before)
    summary = {
        "eval_before_step": {k: ev[f"eval_{k}"] for k in METRIC_KEYS},
        "train_step_1_log": {k: step_log[k] for k in METRIC_KEYS + ["grad_norm", "learning_rate"]
                             if k in step_log},
        "train_batch_order": batch_order(trainer, trainer.train_dataset),
        "adapters_in_model": adapters,
        "lora_dropout_modules_after_init": dropouts,
        "max_abs_adapter_change": delta, "max_relative_adapter_change": rel,
    }
    config = json.loads(args.to_json_string().replace(workdir, "OUTPUT_DIR"))
    return trainer, summary, config, after


def write_trl(out):
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file
    root = os.path.join(out, "smollm2", "trl_lora")
    if os.path.isdir(root):
        shutil.rmtree(root)
    os.makedirs(root)
    tok, base = llama.load_smollm2()
    # as make_llama_golden's trl part: the GGUF's weights are plain float32 tensors, but transformers
    # still marks the model as quantized, which the Trainer refuses
    assert all(p.dtype == torch.float32 and type(p) is torch.nn.Parameter for p in base.parameters())
    base.is_quantized, base.hf_quantizer = False, None
    del base.config.quantization_config
    pairs = llama.trl_pairs(tok, n=4, max_tokens=TRL_MAX_TOKENS)
    with open(os.path.join(root, "pairs.jsonl"), "w") as f:
        for row in pairs:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    # the adapter: PEFT's lora_A init (seeded), lora_B N(0, 0.02^2)
    lora_kwargs = dict(r=TRL_R, lora_alpha=TRL_ALPHA, lora_dropout=0.0,
                       target_modules=["q_proj", "v_proj"])
    torch.manual_seed(SEED)
    pm = get_peft_model(copy.deepcopy(base), LoraConfig(**lora_kwargs))
    gen = torch.Generator().manual_seed(LORA_SEED)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if ".lora_B." in n:
                p.copy_(TRL_B_STD * torch.randn(p.shape, generator=gen))
    adapter_dir = os.path.join(root, "adapter")
    pm.save_pretrained(adapter_dir)
    adapter = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    del pm

    # case (a): base + peft_config, our adapter copied in: reference = adapters disabled = the base
    with tempfile.TemporaryDirectory() as workdir:
        trainer, summary, args, after_a = run_trl(copy.deepcopy(base), tok, pairs, workdir,
                                         peft_config=LoraConfig(**lora_kwargs), load_adapter=adapter)
        prepared = trainer.train_dataset
        trainer.model.save_pretrained(os.path.join(root, "adapter_after_step"),
                                      selected_adapters=["default"])
    del trainer
    write_json(os.path.join(root, "metrics.json"), {
        "doc": REF_DOC, "case": "a: DPOTrainer(model=base, peft_config=LoraConfig(...)), adapter/ "
                                "copied into 'default'; reference = the base (adapter disabled)",
        "beta": BETA, "loss_type": "sigmoid", "num_pairs": len(pairs), "max_length": 512,
        "learning_rate": LR, **summary})
    write_json(os.path.join(root, "training_args.json"), {
        "trainer": "DPOTrainer(model=SmolLM2 (float32, quantization flags cleared), ref_model=None, "
                   "args=DPOConfig(...), train_dataset=pairs.jsonl, processing_class=tokenizer, "
                   f"peft_config=LoraConfig(**{lora_kwargs})); then the adapter/ tensors copied "
                   "into the 'default' adapter; trainer.evaluate(eval_dataset=the same rows); "
                   "trainer.train() (max_steps 1)",
        "dpo_config": args})
    print(f"  trl_lora (ref = base): {summary}")

    # logps: policy = adapter on, reference = adapter off, from the saved adapter reloaded
    policy = PeftModel.from_pretrained(copy.deepcopy(base), adapter_dir).eval()
    cases = []
    for row in prepared:
        prompt, chosen, rejected = list(row["prompt_ids"]), list(row["chosen_ids"]), list(row["rejected_ids"])
        c = {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected,
             "policy": {"chosen": llama.completion_logps(policy, prompt, chosen),
                        "rejected": llama.completion_logps(policy, prompt, rejected)}}
        with policy.disable_adapter():
            c["ref"] = {"chosen": llama.completion_logps(policy, prompt, chosen),
                        "rejected": llama.completion_logps(policy, prompt, rejected)}
        cases.append(c)
    write_json(os.path.join(root, "logps.json"), {
        "doc": "TRL's tokenization of pairs.jsonl (prompt ids; completion ids with EOS appended) "
               "and the float32 summed completion log-probs (transformers + PEFT, batch 1) of the "
               "policy (PeftModel.from_pretrained(base, adapter/), adapter on) and the reference "
               "(the same with disable_adapter(): the base model)",
        "pairs": cases})
    n = len(cases)
    lc = sum(c["policy"]["chosen"] for c in cases) / n
    assert abs(lc - summary["eval_before_step"]["logps/chosen"]) < 1e-3, (lc, summary)
    rc = BETA * sum(c["policy"]["chosen"] - c["ref"]["chosen"] for c in cases) / n
    assert abs(rc - summary["eval_before_step"]["rewards/chosen"]) < 1e-4, (rc, summary)  # ref = base

    # the saved step reloads and lowers the loss: recompute it with adapter_after_step/
    stepped = PeftModel.from_pretrained(copy.deepcopy(base),
                                        os.path.join(root, "adapter_after_step")).eval()
    losses = []
    for c in cases:
        pc = llama.completion_logps(stepped, c["prompt_ids"], c["chosen_ids"])
        pr = llama.completion_logps(stepped, c["prompt_ids"], c["rejected_ids"])
        z = BETA * ((pc - c["ref"]["chosen"]) - (pr - c["ref"]["rejected"]))
        losses.append(-torch.nn.functional.logsigmoid(torch.tensor(z, dtype=torch.float64)).item())
    after_loss = sum(losses) / n
    assert after_loss < summary["eval_before_step"]["loss"], (after_loss, summary)
    with open(os.path.join(root, "metrics.json")) as f:
        metrics = json.load(f)
    metrics["loss_after_step"] = {
        "doc": "mean over the pairs of -log sigmoid(beta ((pc - rc) - (pr - rr))) with pc, pr the "
               "float32 summed completion log-probs of PeftModel.from_pretrained(base, "
               "adapter_after_step/) (batch 1) and rc, rr logps.json's ref; float64 arithmetic",
        "loss": after_loss, "per_pair": losses}
    write_json(os.path.join(root, "metrics.json"), metrics)

    # case (b): model = PeftModel(is_trainable=True): TRL adds a frozen copy "ref" as the reference
    sub = os.path.join(root, "ref_adapter_copy")
    model = PeftModel.from_pretrained(copy.deepcopy(base), adapter_dir, is_trainable=True)
    with tempfile.TemporaryDirectory() as workdir:
        trainer, summary_b, args_b, after_b = run_trl(model, tok, pairs, workdir)
    # not saved (1.9 MB): how far its step is from case (a)'s, whose reference differs
    os.makedirs(sub)
    summary_b["adapter_after_step_vs_case_a"] = {
        "max_abs_diff": max((after_b[k] - after_a[k]).abs().max().item() for k in after_a),
        "max_abs_step": summary_b.pop("max_abs_adapter_change"),
        "max_relative_step": summary_b.pop("max_relative_adapter_change")}
    write_json(os.path.join(sub, "metrics.json"), {
        "doc": REF_DOC, "case": "b: DPOTrainer(model=PeftModel.from_pretrained(base, adapter/, "
                                "is_trainable=True), ref_model=None); reference = TRL's 'ref' copy "
                                "of the adapter (policy == reference before the step)",
        "beta": BETA, "loss_type": "sigmoid", "num_pairs": len(pairs), "max_length": 512,
        "learning_rate": LR, **summary_b})
    write_json(os.path.join(sub, "training_args.json"), {
        "trainer": "DPOTrainer(model=PeftModel.from_pretrained(SmolLM2, ../adapter, "
                   "is_trainable=True), ref_model=None, args=DPOConfig(...), train_dataset="
                   "../pairs.jsonl, processing_class=tokenizer); evaluate; train (max_steps 1)",
        "dpo_config": args_b})
    print(f"  trl_lora/ref_adapter_copy: {summary_b}")
    with open(llama.SMOLLM2_GGUF, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    write_json(os.path.join(root, "versions.json"),
               versions({"gguf_file": os.path.basename(llama.SMOLLM2_GGUF), "gguf_sha256": sha,
                         "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    if os.environ.get("PYTHONHASHSEED") != "0":
        # PEFT resolves target_modules into a set (e.g. "all-linear" -> every module name) and
        # writes it in set order: a fixed string hash keeps adapter_config.json the same bytes
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    found = {k: v for k, v in versions().items() if k in PINNED}
    if found != PINNED:
        sys.exit(f"make_lora_golden.py is pinned to {PINNED}, found {found}")
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    if len(sys.argv) >= 4 and sys.argv[1] == "roundtrip":
        roundtrip(*sys.argv[2:5])
        sys.exit(0)
    if len(sys.argv) < 2:
        sys.exit("usage: make_lora_golden.py OUTDIR [peft|trl ...]\n"
                 "       make_lora_golden.py roundtrip ADAPTER_DIR BASE_DIR [GOLDEN_JSON]")
    parts = sys.argv[2:] or ["peft", "trl"]
    torch.manual_seed(SEED)
    for part, fn in (("peft", write_peft), ("trl", write_trl)):
        if part in parts:
            t0 = time.time()
            fn(sys.argv[1])
            print(f"part {part}: {time.time() - t0:.1f} s")
    print(f"wrote {parts} to {sys.argv[1]}")
