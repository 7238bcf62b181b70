#!/usr/bin/env python3
"""make_golden.py OUTDIR -- the golden files of the `dpo` command-line tests (tests/cli_golden.rs).

A small, self-contained PyTorch reference for CONTRACT.md, kept beside the Rust code in the spirit
of llm.c's train_gpt2.py: the GPT model (section 1), safetensors checkpoints (section 2), JSONL
preference and SFT data with truncation (section 3), the DPO losses and metrics (section 4), the
SFT loss, and one plain SGD step (section 5). Every number is computed in float64 from the float32
weights exactly as they are stored on disk.

Cases written into OUTDIR (see MANIFEST.json for the exact `dpo` commands):
  ids/    pre-tokenized rows (vocab 40, block 16): empty prompt, implicit prompt, truncated rows;
          `dpo eval` for each loss, --max-prompt-length 5, one SGD step of `dpo train`
  text/   UTF-8 text rows, byte tokenizer (vocab 256, block 32): non-ASCII, an HH-RLHF style
          implicit-prompt row whose texts part inside a multibyte character, truncated rows
  sft/    prompt/completion, text and _ids rows, some truncated; one SGD step of `dpo sft`
  bad/    files with one bad line each: refused with the line number, nothing written

Run:  /work/venv/bin/python tests/golden/make_golden.py tests/golden     (torch, safetensors)
"""
import gzip
import json
import math
import os
import random
import shutil
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

torch.set_default_dtype(torch.float64)
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
# 1. The model: a GPT-2 / nanoGPT decoder, written as a function of a dict of named tensors
# ---------------------------------------------------------------------------------------------


def param_shapes(cfg):
    """The checkpoint's tensors (nanoGPT names) in the contract's order."""
    C, V, L = cfg["n_embd"], cfg["vocab_size"], cfg["block_size"]
    shapes = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (L, C)}
    for i in range(cfg["n_layer"]):
        h = f"transformer.h.{i}."
        shapes.update({
            h + "ln_1.weight": (C,), h + "ln_1.bias": (C,),
            h + "attn.c_attn.weight": (3 * C, C), h + "attn.c_attn.bias": (3 * C,),
            h + "attn.c_proj.weight": (C, C), h + "attn.c_proj.bias": (C,),
            h + "ln_2.weight": (C,), h + "ln_2.bias": (C,),
            h + "mlp.c_fc.weight": (4 * C, C), h + "mlp.c_fc.bias": (4 * C,),
            h + "mlp.c_proj.weight": (C, 4 * C), h + "mlp.c_proj.bias": (C,),
        })
    shapes.update({"transformer.ln_f.weight": (C,), "transformer.ln_f.bias": (C,)})
    return shapes


def gpt_forward(P, cfg, idx):
    """idx (B, T) token ids -> logits (B, T, V)."""
    B, T = idx.shape
    C, NH = cfg["n_embd"], cfg["n_head"]
    hs = C // NH

    def linear(x, name):  # y = x W^T + b, W stored as (out, in)
        return x @ P[name + ".weight"].T + P[name + ".bias"]

    def layer_norm(x, name):
        return F.layer_norm(x, (C,), P[name + ".weight"], P[name + ".bias"], eps=1e-5)

    x = P["transformer.wte.weight"][idx] + P["transformer.wpe.weight"][:T]  # (B, T, C)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(cfg["n_layer"]):
        h = f"transformer.h.{i}."
        q, k, v = linear(layer_norm(x, h + "ln_1"), h + "attn.c_attn").split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, NH, hs).transpose(1, 2) for t in (q, k, v))  # (B, NH, T, hs)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, NH, T, T)
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)  # heads concatenated
        x = x + linear(y, h + "attn.c_proj")
        m = F.gelu(linear(layer_norm(x, h + "ln_2"), h + "mlp.c_fc"), approximate="tanh")
        x = x + linear(m, h + "mlp.c_proj")
    x = layer_norm(x, "transformer.ln_f")
    return x @ P["transformer.wte.weight"].T  # lm_head tied to wte


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


# ---------------------------------------------------------------------------------------------
# 2. Checkpoints: config.json + model.safetensors (float32, nanoGPT names, no lm_head.weight)
# ---------------------------------------------------------------------------------------------


def save_checkpoint(P, cfg, d):
    os.makedirs(d, exist_ok=True)
    save_file({n: P[n].detach().to(torch.float32).contiguous() for n in param_shapes(cfg)},
              os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
        f.write("\n")


def load_checkpoint(d):
    """Strict: every tensor, the right shape, F32, nothing else. Returns (params in float64, cfg)."""
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    stored = load_file(os.path.join(d, "model.safetensors"))
    shapes = param_shapes(cfg)
    assert set(stored) == set(shapes), f"{d}: tensor names differ from the contract's"
    for name, shape in shapes.items():
        assert stored[name].dtype == torch.float32 and tuple(stored[name].shape) == shape, name
    return {n: stored[n].to(torch.float64) for n in shapes}, cfg


# ---------------------------------------------------------------------------------------------
# 3. Data: JSONL rows -> token ids, bad lines refused with their number, per-row truncation
# ---------------------------------------------------------------------------------------------


class BadLine(ValueError):
    def __init__(self, line, why):
        super().__init__(f"line {line}: {why}")
        self.line = line


def read_jsonl(path):
    """(line number, object) for each non-blank line; blank lines still count."""
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise BadLine(line, f"not JSON ({e})")
            if not isinstance(row, dict):
                raise BadLine(line, "not a JSON object")
            yield line, row


def field_ids(row, field, vocab_size, line):
    """`field_ids` verbatim, or the UTF-8 bytes of `field`; a row is all text or all _ids."""
    if field in row and field + "_ids" in row:
        raise BadLine(line, f"both {field} and {field}_ids")
    if field + "_ids" in row:
        ids = row[field + "_ids"]
    elif field in row:
        ids = list(row[field].encode("utf-8"))
    else:
        raise BadLine(line, f"missing {field}")
    if any(not (0 <= i < vocab_size) for i in ids):
        raise BadLine(line, f"{field}: token id out of range [0, {vocab_size})")
    return ids


def scored(prompt, response):
    """Response tokens that get a log-prob: the sequence's first token is never scored."""
    return len(response) - (0 if prompt else 1)


def common_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def load_prefs(path, vocab_size):
    """[(prompt, chosen, rejected)]. Rows with only chosen/rejected take their longest common
    prefix as the prompt, by Unicode character (by id for _ids rows)."""
    rows = []
    for line, row in read_jsonl(path):
        fields = ("prompt", "chosen", "rejected")
        if any(f in row for f in fields) and any(f + "_ids" in row for f in fields):
            raise BadLine(line, "text and _ids fields mixed")
        if "prompt" in row or "prompt_ids" in row:
            p, c, r = (field_ids(row, f, vocab_size, line) for f in ("prompt", "chosen", "rejected"))
        elif "chosen" in row and "rejected" in row:  # implicit prompt, text
            k = common_prefix(row["chosen"], row["rejected"])  # Python str: by character
            p, c, r = (list(s.encode("utf-8")) for s in (row["chosen"][:k], row["chosen"][k:], row["rejected"][k:]))
        elif "chosen_ids" in row and "rejected_ids" in row:  # implicit prompt, ids
            c, r = field_ids(row, "chosen", vocab_size, line), field_ids(row, "rejected", vocab_size, line)
            k = common_prefix(c, r)
            p, c, r = c[:k], c[k:], r[k:]
        else:
            raise BadLine(line, "missing chosen or rejected")
        if scored(p, c) < 1 or scored(p, r) < 1:
            raise BadLine(line, "a response has no scored token")
        rows.append((p, c, r))
    return rows


def load_sft(path, vocab_size):
    """[(prompt, completion)]; a text row is all completion (empty prompt)."""
    rows = []
    for line, row in read_jsonl(path):
        if "text" in row or "text_ids" in row:
            p, c = [], field_ids(row, "text", vocab_size, line)
        else:
            p, c = field_ids(row, "prompt", vocab_size, line), field_ids(row, "completion", vocab_size, line)
        if scored(p, c) < 1:
            raise BadLine(line, "no scored token")
        rows.append((p, c))
    return rows


def truncate_row(prompt, responses, block_size, max_prompt_length=None):
    """If prompt + the longest response overflow the block, the prompt keeps its last P tokens,
    then each response is cut from the right to fit. Returns (prompt, responses, was_cut)."""
    P = block_size // 2 if max_prompt_length is None else max_prompt_length
    if len(prompt) + max(len(r) for r in responses) <= block_size:
        return prompt, responses, False
    prompt = prompt[max(0, len(prompt) - P):]
    return prompt, [r[: block_size - len(prompt)] for r in responses], True


# ---------------------------------------------------------------------------------------------
# Log-probs, the DPO losses and metrics (section 4), the SFT loss
# ---------------------------------------------------------------------------------------------


def batch(seqs):
    """[(prompt, response)] -> idx (N, T) right-padded with 0, labels (N, T): -100 except on the response."""
    T = max(len(p) + len(r) for p, r in seqs)
    idx = torch.zeros(len(seqs), T, dtype=torch.long)
    labels = torch.full((len(seqs), T), -100, dtype=torch.long)
    for b, (p, r) in enumerate(seqs):
        idx[b, : len(p) + len(r)] = torch.tensor(p + r, dtype=torch.long)
        labels[b, len(p): len(p) + len(r)] = torch.tensor(r, dtype=torch.long)
    return idx, labels


def get_log_probs(logits, labels):
    """The seed's get_log_probs: logits at t score the label at t+1; summed over labels != -100."""
    labels, logits = labels[:, 1:], logits[:, :-1]
    mask = labels != -100
    logp = logits.log_softmax(-1).gather(2, labels.clamp(min=0).unsqueeze(2)).squeeze(2)
    return (logp * mask).sum(-1), mask.sum(-1)


def pair_logps(P, cfg, rows, max_prompt_length=None):
    """Summed log-probs of chosen and rejected (N each), their scored-token counts, truncated rows."""
    seqs, n_cut = [], 0
    for p, c, r in rows:
        p, (c, r), cut = truncate_row(p, [c, r], cfg["block_size"], max_prompt_length)
        seqs += [(p, c), (p, r)]
        n_cut += cut
    idx, labels = batch(seqs)  # (2N, T): chosen and rejected of each row side by side
    logps, n = get_log_probs(gpt_forward(P, cfg, idx), labels)
    return logps[0::2], logps[1::2], n[0::2], n[1::2], n_cut


def dpo_losses(pi_c, pi_r, ref_c, ref_r, n_c, n_r, loss, e):
    """Per-pair losses (TRL DPOTrainer up to 0.28): d = logratio_chosen - logratio_rejected."""
    d = (pi_c - ref_c) - (pi_r - ref_r)
    if loss == "sigmoid":  # DPO; conservative DPO (cDPO) when e > 0
        return -(1 - e) * F.logsigmoid(BETA * d) - e * F.logsigmoid(-BETA * d)
    if loss == "robust":  # robust DPO, unbiased under a share e of flipped labels
        return ((1 - e) * -F.logsigmoid(BETA * d) + e * F.logsigmoid(-BETA * d)) / (1 - 2 * e)
    if loss == "hinge":
        return torch.relu(1 - BETA * d)
    if loss == "ipo":  # per-token averaged log-ratios
        d_avg = (pi_c - ref_c) / n_c - (pi_r - ref_r) / n_r
        return (d_avg - 1 / (2 * BETA)) ** 2
    raise ValueError(loss)


def dpo_eval(policy, ref, cfg, rows, loss="sigmoid", e=0.0, max_prompt_length=None):
    """The mean loss (a tensor, differentiable w.r.t. policy), the metrics dict, and the margins
    beta * d per pair (to keep them clear of the accuracy and hinge thresholds)."""
    pi_c, pi_r, n_c, n_r, n_cut = pair_logps(policy, cfg, rows, max_prompt_length)
    with torch.no_grad():
        ref_c, ref_r, _, _, _ = pair_logps(ref, cfg, rows, max_prompt_length)
    losses = dpo_losses(pi_c, pi_r, ref_c, ref_r, n_c, n_r, loss, e)
    chosen_rewards, rejected_rewards = BETA * (pi_c - ref_c).detach(), BETA * (pi_r - ref_r).detach()
    metrics = {
        "loss": losses.mean().item(),
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).double().mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
        "logps/chosen": pi_c.mean().item(),
        "logps/rejected": pi_r.mean().item(),
        "num_pairs": len(rows),
        "truncated_rows": n_cut,
    }
    return losses.mean(), metrics, BETA * (pi_c - ref_c - pi_r + ref_r).detach()


def sft_loss(P, cfg, rows, max_prompt_length=None):
    """Mean token cross-entropy over every scored completion token of the batch; truncated rows."""
    seqs, n_cut = [], 0
    for p, c in rows:
        p, (c,), cut = truncate_row(p, [c], cfg["block_size"], max_prompt_length)
        seqs.append((p, c))
        n_cut += cut
    idx, labels = batch(seqs)
    logits = gpt_forward(P, cfg, idx)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100)
    return loss, n_cut


def sgd_step(P, loss_fn):
    """One step of w -= lr * grad(loss), and a finite-difference check of two gradient entries."""
    P = {n: t.clone().requires_grad_(True) for n, t in P.items()}
    loss = loss_fn(P)
    grads = dict(zip(P, torch.autograd.grad(loss, list(P.values()))))
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
        return loss.item(), {n: t - LR * grads[n] for n, t in P.items()}


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
        margins = torch.cat([dpo_eval(policy, ref, cfg, rows, max_prompt_length=m)[2]
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
            _, metrics, _ = dpo_eval(policy, ref, cfg, rows, loss, e, mpl)
        write_json(os.path.join(d, f"eval_{stem}.json"), metrics)
        argv = ["eval"] + base + ["--loss", loss, "--label-smoothing", str(e)]
        argv += ["--max-prompt-length", str(mpl)] if mpl is not None else []
        manifest["checks"].append({"name": f"{name}/eval_{stem}", "kind": "eval_metrics", "argv": argv,
                                   "expected": f"{name}/eval_{stem}.json"})

    first_loss, stepped = sgd_step(policy, lambda P: dpo_eval(P, ref, cfg, rows)[0])
    save_checkpoint(stepped, cfg, os.path.join(d, "after_sgd"))
    manifest["checks"].append({
        "name": f"{name}/train_sgd_step", "kind": "train_step",
        "argv": ["train"] + base + ["--out", "{OUT}", "--batch-size", str(len(rows))] + SGD_FLAGS,
        "expected": f"{name}/after_sgd", "input": f"{name}/policy",
        "first_loss": first_loss, "truncated_rows": dpo_eval(policy, ref, cfg, rows)[1]["truncated_rows"]})
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
    loss, stepped = sgd_step(init, lambda P: sft_loss(P, cfg, rows)[0])
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


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_golden.py OUTDIR")
    out = sys.argv[1]
    for entry in os.listdir(out) if os.path.isdir(out) else []:  # keep this script and the README
        if entry not in ("make_golden.py", "README.md"):
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
    write_json(os.path.join(out, "MANIFEST.json"), manifest)
    print(f"wrote {len(manifest['checks'])} checks to {out}")


if __name__ == "__main__":
    main()
