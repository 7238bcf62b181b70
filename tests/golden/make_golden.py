#!/usr/bin/env python3
"""make_golden.py OUTDIR -- the golden files of the `dpo` command-line tests (tests/cli_golden.rs).

The numbers come from torch_reference.py, the project's PyTorch reference of docs/spec.md
(model, checkpoints, data and truncation, DPO losses and metrics, SFT loss, one SGD step). This
script makes the cases: random models far from nanoGPT's init, data files that exercise each
rule, and the manifest of `dpo` commands with what each must print or write. Every number is
computed in float64 from the float32 weights exactly as they are stored on disk; before writing a
stepped checkpoint, the gradient is checked against central finite differences.

Cases written into OUTDIR (see MANIFEST.json for the exact `dpo` commands):
  ids/    pre-tokenized rows (vocab 40, block 16): empty prompt, implicit prompt, truncated rows;
          `dpo eval` for each loss, --max-prompt-length 5, one SGD step of `dpo train`
  text/   UTF-8 text rows, byte tokenizer (vocab 256, block 32): non-ASCII, an HH-RLHF style
          implicit-prompt row whose texts part inside a multibyte character, truncated rows
  sft/    prompt/completion, text and _ids rows, some truncated; one SGD step of `dpo sft`
  bad/    files with one bad line each: refused with the line number, nothing written

Run:  VENV/bin/python tests/golden/make_golden.py tests/golden     (a Python with torch, safetensors, trl)

At the end it runs make_trl_losses.py into OUTDIR/trl_losses: every preference loss computed by the
pinned trl's own code (see that script).
"""
import gzip
import json
import math
import os
import random
import shutil
import sys

sys.dont_write_bytecode = True  # no __pycache__ beside the golden files

import torch  # noqa: E402

from torch_reference import (  # noqa: E402  (the reference sets torch's default dtype to float64)
    BadLine, dpo_eval, load_checkpoint, load_prefs, load_sft, param_shapes, save_checkpoint,
    sft_loss, sgd_step,
)

torch.set_default_dtype(torch.float64)  # as in torch_reference: every number in float64

KEEP = ("make_golden.py", "torch_reference.py", "README.md",  # what OUTDIR keeps when regenerated
        "make_trl_losses.py", "trl_losses",  # the TRL loss goldens: make_trl_losses.py, called below
        "make_trl_kto.py", "trl_kto",  # KTO goldens from TRL: make_trl_kto.py, called below
        "make_hf_golden.py", "hf",  # Hugging Face GPT-2 goldens: make_hf_golden.py, called below
        "make_llama_golden.py", "llama", "smollm2",  # Llama-family goldens: run on its own (needs the GGUF)
        "make_parquet_golden.py", "parquet",  # Parquet twins of data files: make_parquet_golden.py, called below
        "make_lora_golden.py", "lora")  # LoRA goldens from PEFT and TRL: run on its own
SEED = 1234
BETA = 0.1
LR = 0.5  # plain SGD, so the step is large enough to check to 1%
LOSS_VARIANTS = [  # (file stem, --loss, --label-smoothing)
    ("sigmoid", "sigmoid", 0.0),
    ("ipo", "ipo", 0.0),
    ("hinge", "hinge", 0.0),
    ("robust", "robust", 0.0),
    ("sigmoid_ls0.2", "sigmoid", 0.2),
    ("robust_ls0.2", "robust", 0.2),
]

# ---------------------------------------------------------------------------------------------
# Random models, and the gradient check behind every stepped checkpoint
# ---------------------------------------------------------------------------------------------


def random_model(cfg, gen):
    """Weights far from nanoGPT's near-linear init, so that GELU, LayerNorm and attention are all
    in their curved ranges; rounded to float32, since that is what the checkpoint stores."""
    P = {}
    for name, shape in param_shapes(cfg).items():
        noise = torch.randn(shape, generator=gen)
        if ".ln_" in name or "ln_f" in name:
            P[name] = (1.0 + 0.2 * noise) if name.endswith("weight") else 0.1 * noise
        elif name.endswith("bias"):
            P[name] = 0.1 * noise
        elif name in ("transformer.wte.weight", "transformer.wpe.weight"):
            P[name] = 0.8 * noise
        else:  # Linear weights (out, in)
            P[name] = noise / math.sqrt(shape[1])
    return round_f32(P)


def perturb(P, gen, std=0.05):
    return round_f32({n: t + std * torch.randn(t.shape, generator=gen) for n, t in P.items()})


def round_f32(P):
    return {n: t.to(torch.float32).to(torch.float64) for n, t in P.items()}


def checked_sgd_step(P, loss_fn):
    """One sgd_step of rate LR; its autograd gradient is first checked against central finite
    differences on one entry of each of three tensors."""
    loss, stepped, grads = sgd_step(P, loss_fn, LR)
    P = {n: t.clone() for n, t in P.items()}
    with torch.no_grad():
        for name in ("transformer.wte.weight", "transformer.h.0.attn.c_attn.weight", "transformer.h.1.ln_2.weight"):
            flat, h = P[name].view(-1), 1e-6
            i = int(flat.abs().argmax()) // 2  # some entry, deterministic
            orig = flat[i].item()
            flat[i] = orig + h
            up = loss_fn(P).item()
            flat[i] = orig - h
            down = loss_fn(P).item()
            flat[i] = orig
            fd, g = (up - down) / (2 * h), grads[name].view(-1)[i].item()
            assert abs(fd - g) <= 1e-8 + 1e-5 * abs(g), f"gradient check {name}[{i}]: {g} vs {fd}"
    return loss, stepped


# ---------------------------------------------------------------------------------------------
# Writing the cases
# ---------------------------------------------------------------------------------------------


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")


SGD_FLAGS = ["--steps", "1", "--lr", str(LR), "--optimizer", "sgd", "--weight-decay", "0",
             "--max-grad-norm", "0", "--seed", "0"]


def dpo_case(out, name, cfg, json_rows, gen, manifest, extra_prompt_lengths=()):
    d = os.path.join(out, name)
    os.makedirs(d)
    write_jsonl(os.path.join(d, "prefs.jsonl"), json_rows)
    rows = load_prefs(os.path.join(d, "prefs.jsonl"), cfg["vocab_size"])
    ref = random_model(cfg, gen)
    for _ in range(50):  # a policy whose margins keep clear of the accuracy and hinge thresholds
        policy = perturb(ref, gen)
        margins = torch.cat([dpo_eval(policy, ref, cfg, rows, max_prompt_length=m, beta=BETA)[2]
                             for m in (None,) + tuple(extra_prompt_lengths)])
        if margins.abs().min() > 1e-3 and (margins - 1).abs().min() > 1e-3:
            break
    else:
        raise RuntimeError("no policy with clear margins")
    save_checkpoint(ref, cfg, os.path.join(d, "ref"))
    save_checkpoint(policy, cfg, os.path.join(d, "policy"))
    policy, _ = load_checkpoint(os.path.join(d, "policy"))  # exactly what is on disk
    ref, _ = load_checkpoint(os.path.join(d, "ref"))

    base = ["--policy", f"{name}/policy", "--ref", f"{name}/ref", "--data", f"{name}/prefs.jsonl",
            "--beta", str(BETA)]
    variants = [(stem, loss, e, None) for stem, loss, e in LOSS_VARIANTS]
    variants += [(f"sigmoid_mpl{m}", "sigmoid", 0.0, m) for m in extra_prompt_lengths]
    for stem, loss, e, mpl in variants:
        with torch.no_grad():
            _, metrics, _ = dpo_eval(policy, ref, cfg, rows, loss, e, mpl, beta=BETA)
        write_json(os.path.join(d, f"eval_{stem}.json"), metrics)
        argv = ["eval"] + base + ["--loss", loss, "--label-smoothing", str(e)]
        argv += ["--max-prompt-length", str(mpl)] if mpl is not None else []
        manifest["checks"].append({"name": f"{name}/eval_{stem}", "kind": "eval_metrics", "argv": argv,
                                   "expected": f"{name}/eval_{stem}.json"})

    first_loss, stepped = checked_sgd_step(policy, lambda P: dpo_eval(P, ref, cfg, rows, beta=BETA)[0])
    save_checkpoint(stepped, cfg, os.path.join(d, "after_sgd"))
    manifest["checks"].append({
        "name": f"{name}/train_sgd_step", "kind": "train_step",
        "argv": ["train"] + base + ["--out", "{OUT}", "--batch-size", str(len(rows))] + SGD_FLAGS,
        "expected": f"{name}/after_sgd", "input": f"{name}/policy",
        "first_loss": first_loss,
        "truncated_rows": dpo_eval(policy, ref, cfg, rows, beta=BETA)[1]["truncated_rows"]})
    manifest["cases"][name] = {"config": cfg, "rows": len(rows)}


def ids_case(out, gen, rng, manifest):
    """vocab 40, block 16 (default P = 8): lengths picked for each branch of the truncation rule."""
    cfg = {"vocab_size": 40, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 8, "bias": True}
    ids = lambda n: [rng.randrange(40) for _ in range(n)]  # noqa: E731
    rows = []
    for p, c, r in [(4, 5, 3), (0, 4, 3), (12, 6, 4), (3, 15, 5), (10, 10, 12), (8, 8, 2), (2, 1, 2), (5, 7, 6)]:
        # (0, 4, 3): empty prompt; (12, 6, 4): prompt cut; (3, 15, 5): response cut;
        # (10, 10, 12): both cut; (8, 8, 2): exactly fills the block, not cut; (2, 1, 2): 1-token response
        rows.append({"prompt_ids": ids(p), "chosen_ids": ids(c), "rejected_ids": ids(r)})
    shared = ids(3)
    chosen, rejected = shared + [1, 2], shared + [3, 4, 5]
    rows.insert(3, {"chosen_ids": chosen, "rejected_ids": rejected})  # implicit prompt: the 3 shared ids
    rows.insert(6, {"chosen_ids": [5, 6], "rejected_ids": [7, 8, 9]})  # implicit, empty prompt
    dpo_case(out, "ids", cfg, rows, gen, manifest, extra_prompt_lengths=(5,))
    with open(os.path.join(out, "ids", "prefs.jsonl"), "rb") as f, \
            gzip.GzipFile(os.path.join(out, "ids", "prefs.jsonl.gz"), "wb", mtime=0) as gz:
        gz.write(f.read())  # any data file may be gzipped (a name ending in .gz)
    check = dict(next(c for c in manifest["checks"] if c["name"] == "ids/eval_sigmoid"), name="ids/eval_sigmoid_gz")
    check["argv"] = [a.replace("prefs.jsonl", "prefs.jsonl.gz") for a in check["argv"]]
    manifest["checks"].append(check)


def text_case(out, gen, manifest):
    """vocab 256 (bytes), block 32 (default P = 16)."""
    cfg = {"vocab_size": 256, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 16, "bias": True}
    rows = [
        {"prompt": "2+2=", "chosen": "4", "rejected": "5"},
        {"prompt": "Café ", "chosen": "crème brûlée", "rejected": "naïve"},
        {"prompt": "日本語: ", "chosen": "こんにちは", "rejected": "さようなら"},
        # implicit prompt; the texts part inside "é"/"è" (C3 A9 / C3 A8): the prompt ends at "h"
        {"chosen": "\n\nHuman: hi?\n\nAssistant: héllo", "rejected": "\n\nHuman: hi?\n\nAssistant: hèllo"},
        {"prompt": "A long question that overflows: why?", "chosen": "Because.", "rejected": "No idea 🙂"},
        {"prompt": "Tell 🙂: ", "chosen": "a very long answer that will be cut on the right side",
         "rejected": "short"},
        {"prompt": "Q", "chosen": "yes", "rejected": "no"},
    ]
    dpo_case(out, "text", cfg, rows, gen, manifest)


def sft_case(out, gen, manifest):
    cfg = {"vocab_size": 256, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 16, "bias": True}
    d = os.path.join(out, "sft")
    os.makedirs(d)
    json_rows = [
        {"prompt": "Q: 2+2?\nA: ", "completion": "4"},
        {"prompt": "Translate: chat → ", "completion": "cat"},
        {"text": "Grüße aus Köln!"},
        {"text_ids": [72, 105, 33, 10]},
        {"text": "This text row is longer than the block and is cut on the right."},
        {"prompt": "A prompt of more than sixteen bytes: ", "completion": "twelve bytes"},
        {"prompt_ids": [1, 2, 3], "completion_ids": [200, 201, 255]},
        {"prompt": "x", "completion": "a completion of forty bytes, give or take"},
    ]
    write_jsonl(os.path.join(d, "sft.jsonl"), json_rows)
    rows = load_sft(os.path.join(d, "sft.jsonl"), cfg["vocab_size"])
    save_checkpoint(random_model(cfg, gen), cfg, os.path.join(d, "init"))
    init, _ = load_checkpoint(os.path.join(d, "init"))
    loss, stepped = checked_sgd_step(init, lambda P: sft_loss(P, cfg, rows)[0])
    save_checkpoint(stepped, cfg, os.path.join(d, "after_sgd"))
    n_cut = sft_loss(init, cfg, rows)[1]
    write_json(os.path.join(d, "sft_loss.json"), {"loss": loss, "truncated_rows": n_cut})
    manifest["checks"].append({
        "name": "sft/sft_sgd_step", "kind": "train_step",
        "argv": ["sft", "--data", "sft/sft.jsonl", "--init", "sft/init", "--out", "{OUT}",
                 "--batch-size", str(len(rows))] + SGD_FLAGS,
        "expected": "sft/after_sgd", "input": "sft/init", "first_loss": loss, "truncated_rows": n_cut})
    manifest["cases"]["sft"] = {"config": cfg, "rows": len(rows)}


def bad_case(out, manifest):
    """One bad line per file, after good ones, so that a lazy reader meets it only after training
    began. Preference files run against text/ (vocab 256) or ids/ (vocab 40), SFT files sft/init."""
    d = os.path.join(out, "bad")
    os.makedirs(d)
    good = {"prompt": "Hi ", "chosen": "there", "rejected": "you"}
    good_ids = {"prompt_ids": [1, 2], "chosen_ids": [3, 4], "rejected_ids": [5]}
    good_sft = {"prompt": "Hi ", "completion": "there"}
    files = [  # stem, model case, lines (1-based position of the bad one is found below)
        ("pref_not_json", "text", [good, good, good, '{"prompt": "a", "chosen": "b", "rejected": "c"', good]),
        ("pref_missing_rejected", "text", [good, good, {"prompt": "a", "chosen": "b"}, good]),
        ("pref_text_and_ids", "text", [good, good, good, good,
                                       {"prompt": "a", "prompt_ids": [97], "chosen": "b", "rejected": "c"}]),
        ("pref_id_out_of_range", "ids", [good_ids, good_ids, good_ids, {"prompt_ids": [1], "chosen_ids": [40],
                                                                        "rejected_ids": [2]}, good_ids]),
        ("pref_no_scored_token", "ids", [good_ids, {"prompt_ids": [], "chosen_ids": [1, 2], "rejected_ids": [3]},
                                         good_ids]),
        ("pref_implicit_empty_response", "text", [good, good, good, {"chosen": "ab", "rejected": "abc"}]),
        # blank lines still count: the bad row is on line 12 (a two-digit number)
        ("pref_blank_lines", "text", [good] * 5 + ["", good, "", good, good, good, {"prompt": "x"}, good]),
        ("sft_missing_completion", "sft", [good_sft, good_sft, good_sft, {"prompt": "a"}, good_sft]),
        ("sft_text_one_token", "sft", [good_sft, good_sft, {"text_ids": [7]}, good_sft]),
    ]
    for stem, model, lines in files:
        path = os.path.join(d, f"{stem}.jsonl")
        write_jsonl(path, lines)
        vocab = 40 if model == "ids" else 256
        loader = load_sft if model == "sft" else load_prefs
        try:
            loader(path, vocab)
            raise AssertionError(f"{path}: the reference accepts it")
        except BadLine as e:
            bad_line = e.line
        data = f"bad/{stem}.jsonl"
        if model == "sft":
            commands = [["sft", "--data", data, "--init", "sft/init", "--out", "{OUT}", "--batch-size", "2"]]
        else:
            models = ["--policy", f"{model}/policy", "--ref", f"{model}/ref", "--data", data]
            commands = [["eval"] + models,
                        ["train"] + models + ["--out", "{OUT}", "--batch-size", "2"]]
        for argv in commands:
            manifest["checks"].append({"name": f"bad/{argv[0]}_{stem}", "kind": "error",
                                       "argv": argv + (SGD_FLAGS if argv[0] != "eval" else []),
                                       "bad_line": bad_line})


def parquet_checks(manifest):
    """`dpo eval` on the Parquet twins of ids/prefs.jsonl and text/prefs.jsonl (written by
    make_parquet_golden.py, with the `datasets` library) must print the JSONL files' metrics."""
    for case in ("ids", "text"):
        check = dict(next(c for c in manifest["checks"] if c["name"] == f"{case}/eval_sigmoid"),
                     name=f"{case}/eval_sigmoid_parquet")
        twin = f"parquet/{case}_golden.snappy.parquet"
        check["argv"] = [twin if a == f"{case}/prefs.jsonl" else a for a in check["argv"]]
        manifest["checks"].append(check)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_golden.py OUTDIR")
    out = sys.argv[1]
    for entry in os.listdir(out) if os.path.isdir(out) else []:  # keep the scripts and the README
        if entry not in KEEP:
            path = os.path.join(out, entry)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    os.makedirs(out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    gen, rng = torch.Generator().manual_seed(SEED), random.Random(SEED)
    manifest = {
        "generator": "tests/golden/make_golden.py (PyTorch, float64)",
        "torch_version": torch.__version__,
        "seed": SEED,
        "beta": BETA,
        "how": "commands run with cwd = tests/golden; {OUT} is a fresh path in an empty temporary directory",
        "tolerances": {
            "metrics": "|a - e| <= 2e-6 + 2e-5 |e|; num_pairs, truncated_rows, steps exact",
            "weights": "elementwise |a - e| <= 1e-5 + 1e-4 |e|, and per tensor "
                       "||a - e|| <= 0.01 ||e - input|| + 1e-7 sqrt(n)",
        },
        "kinds": {
            "eval_metrics": "exit 0; stdout is one JSON object holding every key of `expected`",
            "train_step": "exit 0; the checkpoint in {OUT} matches `expected` (weights tolerance, same "
                          "config.json); stdout's JSON has steps = 1, first_loss = `first_loss`, "
                          "truncated_rows, final_loss, train_runtime, tokens_per_second",
            "error": "non-zero exit; stderr names `bad_line`; no panic; {OUT} not created",
        },
        "cases": {},
        "checks": [],
    }
    ids_case(out, gen, rng, manifest)
    text_case(out, gen, manifest)
    sft_case(out, gen, manifest)
    bad_case(out, manifest)
    parquet_checks(manifest)
    write_json(os.path.join(out, "MANIFEST.json"), manifest)
    print(f"wrote {len(manifest['checks'])} checks to {out}")
    try:  # the TRL goldens need trl from pip (see make_trl_losses.py, make_trl_kto.py)
        import trl  # noqa: F401
    except ImportError:
        print("trl not installed: trl_losses/ and trl_kto/ left as they are")
    else:
        # Every preference loss against TRL's own code (the pinned trl; see that script).
        import subprocess
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_trl_losses.py")
        subprocess.run([sys.executable, script, os.path.join(out, "trl_losses")], check=True)
        from make_trl_kto import write_goldens
        write_goldens(os.path.join(out, "trl_kto"))
        from make_hf_golden import write_goldens as write_hf_goldens
        write_hf_goldens(os.path.join(out, "hf"))
    try:  # the Parquet twins need the datasets library (see make_parquet_golden.py)
        import datasets  # noqa: F401
    except ImportError:
        print("datasets not installed: parquet/ left as it is")
    else:
        import subprocess
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_parquet_golden.py")
        subprocess.run([sys.executable, script, out], check=True)


if __name__ == "__main__":
    main()
