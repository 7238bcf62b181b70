"""torch_reference.py -- the project's PyTorch reference of docs/spec.md, in float64.

Plain PyTorch, no tricks, in the spirit of llm.c's train_gpt2.py beside train_gpt2.c: what the
`dpo` binary computes, written a second time with another framework's autograd so that the two
can be compared number for number. `make_golden.py` imports it to write the golden files of
tests/cli_golden.rs. Sections follow docs/spec.md:

  1. the model              param_shapes, gpt_forward (a function of a dict of named tensors)
  2. checkpoints            save_checkpoint, load_checkpoint (strict)
  3. data                   BadLine, read_jsonl, load_prefs, load_sft (implicit prompts, bad
                            lines with their number), truncate_row, batch, get_log_probs
  4. loss and metrics       pair_logps, dpo_losses, dpo_eval (4.1, 4.2), sft_loss (4.3)
  5. command line           sgd_step: one `--optimizer sgd --weight-decay 0 --max-grad-norm 0`
                            step on the whole file (5.5)

Every computation runs in float64 (the default dtype is set on import): checkpoints are float32
on disk and are widened exactly when loaded. Needs torch and safetensors. The data readers take
plain (not gzipped) files and refuse the kinds of bad line the golden files hold; every kind of
docs/spec.md section 3.5 is tested on the Rust side, in crates/dpo/tests/data.rs.
"""
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

torch.set_default_dtype(torch.float64)

IGNORE_INDEX = -100  # the label of a position that is not scored (PyTorch's ignore_index)

# ---------------------------------------------------------------------------------------------
# 1. The model: a GPT-2 / nanoGPT decoder, written as a function of a dict of named tensors
# ---------------------------------------------------------------------------------------------


def param_shapes(cfg):
    """The checkpoint's tensors (nanoGPT names) in the order of docs/spec.md section 2."""
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
    assert set(stored) == set(shapes), f"{d}: tensor names differ from docs/spec.md section 2"
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


def batch(seqs):
    """[(prompt, response)] -> idx (N, T) right-padded with 0, labels (N, T): -100 except on the response."""
    T = max(len(p) + len(r) for p, r in seqs)
    idx = torch.zeros(len(seqs), T, dtype=torch.long)
    labels = torch.full((len(seqs), T), IGNORE_INDEX, dtype=torch.long)
    for b, (p, r) in enumerate(seqs):
        idx[b, : len(p) + len(r)] = torch.tensor(p + r, dtype=torch.long)
        labels[b, len(p): len(p) + len(r)] = torch.tensor(r, dtype=torch.long)
    return idx, labels


def get_log_probs(logits, labels):
    """The seed's get_log_probs: logits at t score the label at t+1; summed over labels != -100.
    Returns the summed log-probs (N) and the number of scored tokens (N)."""
    labels, logits = labels[:, 1:], logits[:, :-1]
    mask = labels != IGNORE_INDEX
    logp = logits.log_softmax(-1).gather(2, labels.clamp(min=0).unsqueeze(2)).squeeze(2)
    return (logp * mask).sum(-1), mask.sum(-1)


# ---------------------------------------------------------------------------------------------
# 4. The DPO losses and metrics, the SFT loss
# ---------------------------------------------------------------------------------------------


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


def dpo_losses(pi_c, pi_r, ref_c, ref_r, n_c, n_r, loss, e, beta):
    """Per-pair losses (TRL DPOTrainer up to 0.28): d = logratio_chosen - logratio_rejected."""
    d = (pi_c - ref_c) - (pi_r - ref_r)
    if loss == "sigmoid":  # DPO; conservative DPO (cDPO) when e > 0
        return -(1 - e) * F.logsigmoid(beta * d) - e * F.logsigmoid(-beta * d)
    if loss == "robust":  # robust DPO, unbiased under a share e of flipped labels
        return ((1 - e) * -F.logsigmoid(beta * d) + e * F.logsigmoid(-beta * d)) / (1 - 2 * e)
    if loss == "hinge":
        return torch.relu(1 - beta * d)
    if loss == "ipo":  # per-token averaged log-ratios
        d_avg = (pi_c - ref_c) / n_c - (pi_r - ref_r) / n_r
        return (d_avg - 1 / (2 * beta)) ** 2
    raise ValueError(loss)


def dpo_eval(policy, ref, cfg, rows, loss="sigmoid", e=0.0, max_prompt_length=None, beta=0.1):
    """The mean loss (a tensor, differentiable w.r.t. policy), the metrics dict of `dpo eval`, and
    the margins beta * d per pair (to keep them clear of the accuracy and hinge thresholds)."""
    pi_c, pi_r, n_c, n_r, n_cut = pair_logps(policy, cfg, rows, max_prompt_length)
    with torch.no_grad():
        ref_c, ref_r, _, _, _ = pair_logps(ref, cfg, rows, max_prompt_length)
    losses = dpo_losses(pi_c, pi_r, ref_c, ref_r, n_c, n_r, loss, e, beta)
    chosen_rewards, rejected_rewards = beta * (pi_c - ref_c).detach(), beta * (pi_r - ref_r).detach()
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
    return losses.mean(), metrics, beta * (pi_c - ref_c - pi_r + ref_r).detach()


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
                           ignore_index=IGNORE_INDEX)
    return loss, n_cut


# ---------------------------------------------------------------------------------------------
# 5. One training step of `dpo train` / `dpo sft` with plain SGD
# ---------------------------------------------------------------------------------------------


def sgd_step(P, loss_fn, lr):
    """One step of w -= lr * grad(loss_fn(P)), the whole batch at once. Returns the loss before
    the step (the summary's `first_loss`), the stepped parameters and the gradients."""
    P = {n: t.clone().requires_grad_(True) for n, t in P.items()}
    loss = loss_fn(P)
    grads = dict(zip(P, torch.autograd.grad(loss, list(P.values()))))
    with torch.no_grad():
        return loss.item(), {n: t - lr * grads[n] for n, t in P.items()}, grads
