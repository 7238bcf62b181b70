#!/usr/bin/env python3
"""make_trl_losses.py OUTDIR -- goldens of every preference loss, computed by TRL's own code.

Pinned: trl==1.16.0 (run with torch 2.15.0, transformers 5.24.0), from pip:
    VENV/bin/pip install trl==1.16.0
    VENV/bin/python tests/golden/make_trl_losses.py tests/golden/trl_losses

For each case this script builds the trainer TRL uses for that loss (`DPOTrainer` for its 15
`loss_type`s and their weighted combinations, `CPOTrainer` for SimPO, `ORPOTrainer` for ORPO) with
`object.__new__`, sets only the attributes its loss code reads, and runs TRL's own loss path on
random float64 per-token log-probs of a small batch:

  DPOTrainer._compute_loss(model, inputs)       with a stand-in model whose fused LM head returns
                                                the per-token log-probs, reference log-probs
                                                precomputed (TRL's `precompute_ref_log_probs`);
  CPOTrainer.get_batch_loss_metrics(model, b)   with a stand-in model whose logits (vocabulary of 2)
  ORPOTrainer.get_batch_loss_metrics(model, b)  give exactly those per-token log-probs.

It writes one JSON file per case into OUTDIR: the inputs as the Rust side takes them (per-sequence
summed log-probs and scored-token counts; for ORPO also the prompt tokens of the chosen sequences,
which its NLL counts), and what TRL computed: the loss, the per-pair chosen and rejected rewards, the logged metrics,
and the gradient of the loss with respect to each sequence's log-prob (torch autograd through
TRL's code). `crates/dpo/tests/trl_losses.rs` compares the Rust losses with them (rtol 1e-5).

Every prompt has at least 2 tokens, so TRL's completion-token counts (`completion_mask`, labels of
the shifted sequence) and the scored-token counts of docs/spec.md agree.

bco_pair in TRL 1.16 has no reward shift (the running mean of earlier TRL releases is gone): its
goldens are those of `--bco-no-running-mean`. sigmoid is checked without label smoothing (TRL 1.16
ignores it for sigmoid; the cDPO form of the contract is checked by make_golden.py's goldens).
"""
import json
import math
import os
import sys
from collections import defaultdict
from types import SimpleNamespace

sys.dont_write_bytecode = True

import torch  # noqa: E402
import trl  # noqa: E402
from trl import DPOTrainer  # noqa: E402
from trl.experimental.cpo import CPOTrainer  # noqa: E402
from trl.experimental.orpo import ORPOTrainer  # noqa: E402

torch.set_default_dtype(torch.float64)
SEED = 20261202
PAIRS = 6

# (case name, trainer, settings). DPO settings: loss types, weights, beta, label smoothing, discopop tau.
DPO_CASES = [
    ("sigmoid", dict(loss=["sigmoid"])),
    ("sigmoid_beta0.5", dict(loss=["sigmoid"], beta=0.5)),
    ("hinge", dict(loss=["hinge"], beta=0.5)),
    ("ipo", dict(loss=["ipo"], beta=0.5)),
    ("robust_ls0.1", dict(loss=["robust"], label_smoothing=0.1)),
    ("exo_pair_ls0.001", dict(loss=["exo_pair"], label_smoothing=1e-3)),
    ("exo_pair_ls0.2", dict(loss=["exo_pair"], beta=0.5, label_smoothing=0.2)),
    ("nca_pair", dict(loss=["nca_pair"])),
    ("bco_pair", dict(loss=["bco_pair"])),
    ("sppo_hard", dict(loss=["sppo_hard"])),
    ("aot", dict(loss=["aot"])),
    ("aot_ls0.1", dict(loss=["aot"], label_smoothing=0.1)),
    ("aot_unpaired_ls0.1", dict(loss=["aot_unpaired"], label_smoothing=0.1)),
    ("apo_zero", dict(loss=["apo_zero"], beta=0.5)),
    ("apo_down", dict(loss=["apo_down"], beta=0.5)),
    ("discopop", dict(loss=["discopop"])),
    ("discopop_tau0.5", dict(loss=["discopop"], beta=0.5, discopop_tau=0.5)),
    ("sigmoid_norm", dict(loss=["sigmoid_norm"], beta=2.0)),
    ("sft", dict(loss=["sft"])),
    ("sigmoid_sft", dict(loss=["sigmoid", "sft"], weights=[1.0, 0.5])),
    ("mpo", dict(loss=["sigmoid", "bco_pair", "sft"], weights=[0.8, 0.2, 1.0])),
]
CPO_CASES = [  # SimPO: beta, gamma, label smoothing, cpo_alpha (the weight of the NLL; 0 = pure SimPO)
    ("simpo", dict(beta=2.0, simpo_gamma=0.5)),
    ("simpo_gamma1_ls0.1", dict(beta=2.5, simpo_gamma=1.0, label_smoothing=0.1)),
    ("simpo_sft", dict(beta=2.0, simpo_gamma=0.5, cpo_alpha=1.0)),
]
ORPO_CASES = [("orpo", dict(beta=0.1)), ("orpo_beta0.5", dict(beta=0.5))]


class Accelerator:
    """What the trainers ask of accelerate on one CPU process. It keeps what `gather` saw: the
    DPOTrainer gathers the per-pair chosen rewards, then the rejected rewards, first."""

    device = torch.device("cpu")

    def __init__(self):
        self.gathered = []

    def gather(self, x):
        self.gathered.append(x.detach().clone())
        return x

    @staticmethod
    def gather_for_metrics(x):
        return x


def random_batch(gen):
    """Prompt and response lengths, per-token log-probs of the policy and of the reference.

    Returns lists per sequence, chosen rows first: prompt lengths (chosen and rejected share the
    prompt), response lengths, and per-token log-probs of every token after the first
    (prompt tokens first, then response tokens), in [-3, -0.02]."""
    prompt = [int(torch.randint(2, 6, (1,), generator=gen)) for _ in range(PAIRS)]
    response = [int(torch.randint(1, 8, (1,), generator=gen)) for _ in range(2 * PAIRS)]

    def token_logps():
        return [
            -0.02 - 2.98 * torch.rand(prompt[s % PAIRS] + response[s] - 1, generator=gen)
            for s in range(2 * PAIRS)
        ]

    return prompt * 2, response, token_logps(), token_logps()


def inputs_record(prompt, response, policy_tokens, ref_tokens, with_ref):
    """The per-sequence inputs of the Rust side: response sums, counts, chosen prompt sums."""
    b = PAIRS
    resp = [float(policy_tokens[s][prompt[s] - 1:].sum()) for s in range(2 * b)]
    ref = [float(ref_tokens[s][prompt[s] - 1:].sum()) if with_ref else 0.0 for s in range(2 * b)]
    return {
        "policy_chosen": resp[:b], "policy_rejected": resp[b:],
        "ref_chosen": ref[:b], "ref_rejected": ref[b:],
        "n_chosen": response[:b], "n_rejected": response[b:],
        "prompt_chosen": [float(policy_tokens[s][:prompt[s] - 1].sum()) for s in range(b)],
        "n_prompt": [prompt[s] - 1 for s in range(b)],
    }


def padded_token_logps(prompt, response, tokens, T):
    """(2B, T-1): the log-prob of the token at t+1 at position t, 0 at padding."""
    out = torch.zeros(2 * PAIRS, T - 1)
    for s in range(2 * PAIRS):
        out[s, : prompt[s] + response[s] - 1] = tokens[s]
    return out


def grads_record(prompt, grad, with_prompt):
    """dloss/d(sequence log-prob) = the gradient at any of its response tokens (the first);
    with_prompt (ORPO, CPO): for the chosen sequences' prompts, at their first scored prompt token."""
    b = PAIRS
    g = [float(grad[s, prompt[s] - 1]) for s in range(2 * b)]
    record = {"grad_policy_chosen": g[:b], "grad_policy_rejected": g[b:]}
    if with_prompt:
        record["grad_prompt_chosen"] = [float(grad[s, 0]) for s in range(b)]
    return record


def dpo_case(settings, gen):
    prompt, response, policy_tokens, ref_tokens = random_batch(gen)
    T = max(p + r for p, r in zip(prompt, response)) + 1  # one padding position at least
    completion_mask = torch.zeros(2 * PAIRS, T, dtype=torch.long)
    attention_mask = torch.zeros(2 * PAIRS, T, dtype=torch.long)
    for s in range(2 * PAIRS):
        completion_mask[s, prompt[s]: prompt[s] + response[s]] = 1
        attention_mask[s, : prompt[s] + response[s]] = 1
    shift_mask = completion_mask[:, 1:].bool()
    # The fused LM head's per-token log-probs: response tokens only (labels are -100 elsewhere).
    per_token = (padded_token_logps(prompt, response, policy_tokens, T) * shift_mask).requires_grad_()
    ref_logps = (padded_token_logps(prompt, response, ref_tokens, T) * shift_mask).sum(dim=1)

    class FusedModel:
        training = True

        def __call__(self, **kwargs):
            zeros = torch.zeros(2 * PAIRS, T - 1)
            return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros,
                                   is_top1=torch.zeros(2 * PAIRS, T - 1, dtype=torch.bool))

    trainer = object.__new__(DPOTrainer)
    model = FusedModel()
    loss_types = settings["loss"]
    trainer.__dict__.update(
        model=model, accelerator=Accelerator(), beta=settings.get("beta", 0.1),
        loss_types=loss_types, loss_weights=settings.get("weights", [1.0] * len(loss_types)),
        label_smoothing=settings.get("label_smoothing", 0.0), ld_alpha=None,
        f_divergence_type="reverse_kl", f_alpha_divergence_coef=0.5, use_weighting=False,
        aux_loss_enabled=False, precompute_ref_logps=True, _tp_size=1, _total_train_tokens=0,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        args=SimpleNamespace(discopop_tau=settings.get("discopop_tau", 0.05)),
    )
    inputs = {
        "input_ids": torch.ones(2 * PAIRS, T, dtype=torch.long), "attention_mask": attention_mask,
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_logps[:PAIRS], "ref_rejected_logps": ref_logps[PAIRS:],
    }
    loss = trainer._compute_loss(model, inputs, return_outputs=False)
    loss.backward()
    chosen_rewards, rejected_rewards = trainer.accelerator.gathered[:2]
    assert chosen_rewards.shape == rejected_rewards.shape == (PAIRS,)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()
               if k.startswith(("rewards/", "logps/"))}
    record = inputs_record(prompt, response, policy_tokens, ref_tokens, with_ref=True)
    beta = trainer.beta
    expected = {"loss": loss.item(), **metrics,
                "chosen_rewards": chosen_rewards.tolist(), "rejected_rewards": rejected_rewards.tolist(),
                **grads_record(prompt, per_token.grad, with_prompt=False)}
    config = {"trainer": "DPOTrainer", "loss": loss_types, "loss_weights": trainer.loss_weights,
              "beta": beta, "label_smoothing": trainer.label_smoothing,
              "discopop_tau": trainer.args.discopop_tau}
    return config, record, expected


def exact_logits(ids, token_logps):
    """Logits over a vocabulary of 2 whose log-softmax at the next token is `token_logps`:
    0 for the next token, log(exp(-l) - 1) for the other one."""
    S, T = ids.shape
    logits = torch.zeros(S, T, 2)
    other = torch.log(torch.expm1(-token_logps))  # (S, T-1), differentiable in the log-probs
    nxt = ids[:, 1:]
    logits = torch.stack([torch.where(nxt == 0, 0.0, other), torch.where(nxt == 1, 0.0, other)], dim=-1)
    return torch.cat([logits, torch.zeros(S, 1, 2)], dim=1)  # the last position predicts nothing


def cpo_orpo_case(kind, settings, gen):
    prompt, response, policy_tokens, _ = random_batch(gen)
    T = max(p + r for p, r in zip(prompt, response)) + 1
    ids = torch.randint(0, 2, (2 * PAIRS, T), generator=gen)
    attention = torch.zeros(2 * PAIRS, T, dtype=torch.long)
    labels = torch.full((2 * PAIRS, T), -100)
    for s in range(2 * PAIRS):
        n = prompt[s] + response[s]
        attention[s, :n] = 1
        labels[s, prompt[s]:n] = ids[s, prompt[s]:n]
        ids[s, n:] = 0  # the padding id
    for s in range(PAIRS):  # chosen and rejected share the prompt
        ids[PAIRS + s, : prompt[s]] = ids[s, : prompt[s]]
    # Padding positions get log-prob -1 (any value: they are masked out everywhere).
    token_logps = torch.full((2 * PAIRS, T - 1), -1.0)
    for s in range(2 * PAIRS):
        token_logps[s, : prompt[s] + response[s] - 1] = policy_tokens[s]
    token_logps.requires_grad_()
    logits = exact_logits(ids, token_logps)

    class Model:
        def __call__(self, input_ids, attention_mask=None, **kwargs):
            assert torch.equal(input_ids, ids) and torch.equal(attention_mask, attention)
            return SimpleNamespace(logits=logits)

    batch = {
        "chosen_input_ids": ids[:PAIRS], "chosen_attention_mask": attention[:PAIRS], "chosen_labels": labels[:PAIRS],
        "rejected_input_ids": ids[PAIRS:], "rejected_attention_mask": attention[PAIRS:],
        "rejected_labels": labels[PAIRS:],
    }
    common = dict(accelerator=Accelerator(), beta=settings["beta"], is_encoder_decoder=False,
                  aux_loss_enabled=False, pad_token_id=0, padding_value=0, label_pad_token_id=-100)
    if kind == "cpo":
        trainer = object.__new__(CPOTrainer)
        trainer.__dict__.update(common, loss_type="simpo", simpo_gamma=settings["simpo_gamma"],
                                label_smoothing=settings.get("label_smoothing", 0.0), alpha=0.0,
                                cpo_alpha=settings.get("cpo_alpha", 0.0))
    else:
        trainer = object.__new__(ORPOTrainer)
        trainer.__dict__.update(common)
    loss_method = "cpo_loss" if kind == "cpo" else "odds_ratio_loss"
    returned = []

    def keep_outputs(*args, method=getattr(trainer, loss_method)):
        returned.append(method(*args))
        return returned[-1]

    setattr(trainer, loss_method, keep_outputs)
    loss, metrics = trainer.get_batch_loss_metrics(Model(), batch, train_eval="train")
    loss.backward()
    _, chosen_rewards, rejected_rewards = returned[0][:3]
    record = inputs_record(prompt, response, policy_tokens, policy_tokens, with_ref=False)
    beta = trainer.beta
    keep = ("rewards/", "logps/", "nll_loss", "log_odds_ratio", "log_odds_chosen")
    expected = {"loss": loss.item(), **{k: float(v) for k, v in metrics.items() if k.startswith(keep)},
                "chosen_rewards": chosen_rewards.tolist(), "rejected_rewards": rejected_rewards.tolist(),
                **grads_record(prompt, token_logps.grad, with_prompt=True)}
    if kind == "cpo":
        if trainer.cpo_alpha == 0:
            del expected["nll_loss"]  # TRL logs 0 for the NLL it does not compute
        config = {"trainer": "CPOTrainer", "loss": ["simpo"] + (["sft"] if trainer.cpo_alpha else []),
                  "loss_weights": [1.0] + ([trainer.cpo_alpha] if trainer.cpo_alpha else []),
                  "beta": beta, "label_smoothing": trainer.label_smoothing, "simpo_gamma": trainer.simpo_gamma}
    else:
        config = {"trainer": "ORPOTrainer", "loss": ["orpo"], "loss_weights": [1.0], "beta": beta,
                  "label_smoothing": 0.0}
    return config, record, expected


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=1)
        f.write("\n")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_trl_losses.py OUTDIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for entry in os.listdir(out):
        if entry.endswith(".json"):
            os.remove(os.path.join(out, entry))
    gen = torch.Generator().manual_seed(SEED)
    cases = ([(name, lambda s=s: dpo_case(s, gen)) for name, s in DPO_CASES]
             + [(name, lambda s=s: cpo_orpo_case("cpo", s, gen)) for name, s in CPO_CASES]
             + [(name, lambda s=s: cpo_orpo_case("orpo", s, gen)) for name, s in ORPO_CASES])
    for name, run in cases:
        config, record, expected = run()
        assert all(math.isfinite(v) for v in expected.values() if isinstance(v, float)), (name, expected)
        write_json(os.path.join(out, f"{name}.json"), {
            "generator": "tests/golden/make_trl_losses.py",
            "trl_version": trl.__version__, "torch_version": torch.__version__,
            "name": name, "config": config, "inputs": record, "expected": expected,
        })
    print(f"wrote {len(cases)} cases to {out} (trl {trl.__version__})")


if __name__ == "__main__":
    main()
