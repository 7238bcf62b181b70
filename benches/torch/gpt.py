"""The GPT of `dpo` in plain PyTorch, for the speed baselines in benches/torch/.

The same model as crates/transformer (docs/spec.md section 1): GPT-2 blocks with pre-LayerNorm
(eps 1e-5), GELU tanh, learned positions, lm_head tied to wte, no dropout. Written the way a
PyTorch user would write it (nanoGPT's model.py), eager mode, float32, so that the baseline is
what plain PyTorch does with the same work, not a tuned variant of it.

Also here: the nanoGPT initialisation, a checkpoint writer in `dpo`'s nanoGPT layout
(config.json + model.safetensors, no lm_head.weight), the usual response log-probs
(log_softmax + gather) and the sigmoid DPO loss.
"""
import json
import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# The built-in presets of `dpo --config` (crates/transformer config.rs) that the benches use.
PRESETS = {
    "small": dict(vocab_size=256, block_size=128, n_layer=4, n_head=4, n_embd=128),
    "medium": dict(vocab_size=512, block_size=256, n_layer=6, n_head=8, n_embd=256),
    "gpt2": dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
}


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    bias: bool = True


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.n_embd = cfg.n_head, cfg.n_embd
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x):
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, NH, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, NH, T, T)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        att = F.softmax(att.masked_fill(~causal, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)  # heads side by side
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=1e-5)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=1e-5)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=nn.LayerNorm(cfg.n_embd, eps=1e-5),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2

    def forward(self, idx):
        """idx (B, T) token ids -> logits (B, T, V)."""
        B, T = idx.shape
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(T))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))

    @torch.no_grad()
    def nanogpt_init_(self, gen):
        """N(0, 0.02) weights, N(0, 0.02 / sqrt(2 n_layer)) for the residual projections (c_proj),
        zero biases, LayerNorm 1 / 0. Drawn in checkpoint order, so a seed fixes the weights."""
        std_proj = 0.02 / math.sqrt(2 * self.config.n_layer)
        params = dict(self.named_parameters())
        for name in checkpoint_names(self.config):
            p = params[name]
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                std = std_proj if name.endswith("c_proj.weight") else 0.02
                p.copy_(torch.randn(p.shape, generator=gen) * std)
        return self


def checkpoint_names(cfg):
    """The tensors of a nanoGPT-layout checkpoint, in order (lm_head is wte and is not stored)."""
    names = ["transformer.wte.weight", "transformer.wpe.weight"]
    for i in range(cfg.n_layer):
        names += [f"transformer.h.{i}.{n}" for n in (
            "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
            "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
            "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias")]
    return names + ["transformer.ln_f.weight", "transformer.ln_f.bias"]


def save_checkpoint(model, out_dir):
    """config.json + model.safetensors, the layout `dpo train --policy DIR` reads."""
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    params = dict(model.named_parameters())
    tensors = {n: params[n].detach().float().contiguous() for n in checkpoint_names(model.config)}
    save_file(tensors, os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(asdict(model.config), f)
        f.write("\n")


def get_log_probs(logits, labels):
    """Summed response log-probs, the usual PyTorch (and TRL) formulation: log_softmax over the
    whole vocabulary, then gather. logits (B, T, V), labels (B, T) with -100 where not scored;
    logits at t score the label at t+1. -> (B,)"""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    mask = labels != -100
    labels[~mask] = 0  # any id; masked out below
    per_token = torch.gather(logits.log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)
    return (per_token * mask).sum(-1)


def dpo_sigmoid_loss(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta):
    """-log sigmoid(beta * ((pi_c - pi_r) - (ref_c - ref_r))) per pair (TRL's "sigmoid")."""
    return -F.logsigmoid(beta * ((pi_chosen - pi_rejected) - (ref_chosen - ref_rejected)))


def time_steps(step, n_steps, warmup):
    """Runs step(0), ..., step(n_steps - 1); returns the wall time in ms of each
    step after the first `warmup` (allocator and first-touch steps are not timed)."""
    import time
    ms = []
    for k in range(n_steps):
        t0 = time.perf_counter()
        step(k)
        if k >= warmup:
            ms.append(1e3 * (time.perf_counter() - t0))
    return ms
