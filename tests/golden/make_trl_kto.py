#!/usr/bin/env python3
"""make_trl_kto.py OUTDIR -- KTO golden files computed by TRL's own KTOTrainer code.

Pinned: trl==1.16.0 (from pip; run with torch 2.15.0, transformers 5.24.0, datasets 5.2.0,
accelerate 1.16.0). The versions used are recorded in OUTDIR/trl_version.json.

trl 1.16 has no separate `kto_loss` method any more: `KTOTrainer._compute_loss` computes the
batch KL estimate, the per-row losses, the batch loss and the logged metrics inline. So this
script builds a KTOTrainer with `object.__new__` (no model, no dataset, no accelerator set-up),
sets exactly the attributes `_compute_loss` reads, and hands it a stand-in model: a function
whose "per-token log-probs" are the random per-sequence log-probs of the case, one scored
position per sequence. `_compute_loss` then runs unchanged, on float64:

  - the policy log-probs of the completions are a leaf tensor, so `loss.backward()` gives TRL's
    gradient dloss/dpolicy_logps as well;
  - the KL sequences go through the stand-in model inside TRL's own `torch.no_grad()`;
  - reference log-probs arrive precomputed (`precompute_ref_logps = True`, as `dpo` caches them).

The KL pairs (which completion each row's KL sequence gets) come from `KTOTrainer._prepare_dataset`
itself, run on a small text dataset with a byte-level stand-in tokenizer: TRL rotates the
completions by one within each chunk of `per_device_train_batch_size` rows, in dataset order.

Files written into OUTDIR:
  loss_cases.json   per case: beta, weights, labels, policy/reference log-probs of the completions
                    and of the KL sequences; TRL's loss, its gradient, and the metrics it logged
  kl_pairs.json     per case: rows, batch size, and for each row the row whose completion its KL
                    sequence gets
  trl_version.json  the versions used

Run:  VENV/bin/python tests/golden/make_trl_kto.py tests/golden/trl_kto
      (tests/golden/make_golden.py runs it too, when trl is installed)
"""
import json
import os
import sys
from collections import defaultdict
from types import SimpleNamespace

sys.dont_write_bytecode = True

import torch  # noqa: E402

torch.set_default_dtype(torch.float64)

PINNED_TRL = "1.16.0"
SEED = 4321


def trl_kto_trainer():
    """A KTOTrainer with no __init__: only the attributes `_compute_loss` reads are set (by the cases)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trl import KTOTrainer
    return KTOTrainer


class StandInModel:
    """What `_compute_loss` calls as the model: the log-prob of sequence s is `table[input_ids[s, 0]]`
    (input_ids are (S, 2), the second position the one scored position)."""

    training = True

    def __init__(self, table):
        self.table = table

    def __call__(self, input_ids, **_):
        logps = self.table[input_ids[:, 0]].unsqueeze(1)  # (S, 1): log_probs[:, -(T - 1):] with T = 2
        zeros = torch.zeros_like(logps).detach()
        return SimpleNamespace(log_probs=logps, entropy=zeros, mean_logits=zeros)


def run_compute_loss(case):
    """TRL's `_compute_loss` on one case: (loss, dloss/dpolicy_logps, logged metrics)."""
    KTOTrainer = trl_kto_trainer()
    trainer = object.__new__(KTOTrainer)
    n = len(case["labels"])
    policy = torch.tensor(case["policy_logps"], requires_grad=True)
    policy_kl = torch.tensor(case["policy_kl_logps"])
    model = StandInModel(None)
    # Rows 0..n are the completions, n..2n the KL sequences.
    model.table = torch.cat([policy, policy_kl])
    trainer.model = model
    trainer.accelerator = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x)
    trainer.beta = case["beta"]
    trainer.desirable_weight = case["desirable_weight"]
    trainer.undesirable_weight = case["undesirable_weight"]
    trainer.loss_type = "kto"
    trainer.calculate_KL = True
    trainer.precompute_ref_logps = True
    trainer.aux_loss_enabled = False
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer._total_train_tokens = 0
    trainer._tp_size = 1
    ids = lambda first: torch.stack([torch.arange(first, first + n), torch.zeros(n, dtype=torch.long)], 1)  # noqa: E731
    ones = torch.ones(n, 2, dtype=torch.long)
    completion_mask = torch.tensor([[0, 1]] * n)
    inputs = {
        "input_ids": ids(0), "attention_mask": ones, "completion_mask": completion_mask,
        "KL_input_ids": ids(n), "KL_attention_mask": ones, "KL_completion_mask": completion_mask,
        "label": torch.tensor(case["labels"], dtype=torch.bool),
        "ref_logps": torch.tensor(case["reference_logps"]),
        "ref_KL_logps": torch.tensor(case["reference_kl_logps"]),
    }
    loss = trainer._compute_loss(model, inputs, return_outputs=False)
    loss.backward()
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss.item(), policy.grad.tolist(), logged


def random_case(gen, name, labels, beta, desirable_weight=1.0, undesirable_weight=1.0, spread=2.0,
                kl_shift=1.0):
    """Log-probs of completions of 3..40 tokens; policy = reference + noise of `spread` nats, so that
    beta * (logratio - kl) covers the sigmoid's curved range. `kl_shift` moves the KL sequences'
    policy log-probs: +1 nat by default, so that the KL estimate is mostly positive; a large
    negative shift makes the raw estimate negative, and TRL clamps it to 0."""
    n = len(labels)
    reference = -torch.rand(n, generator=gen) * 40 - 3
    policy = reference + spread * torch.randn(n, generator=gen)
    reference_kl = -torch.rand(n, generator=gen) * 40 - 3
    policy_kl = reference_kl + spread * torch.randn(n, generator=gen) + kl_shift
    return {
        "name": name, "beta": beta, "desirable_weight": desirable_weight,
        "undesirable_weight": undesirable_weight, "labels": labels,
        "policy_logps": policy.tolist(), "reference_logps": reference.tolist(),
        "policy_kl_logps": policy_kl.tolist(), "reference_kl_logps": reference_kl.tolist(),
    }


def loss_cases(gen):
    T, F = True, False
    cases = [
        random_case(gen, "mixed_b8", [T, F, T, T, F, F, T, F], 0.1),
        random_case(gen, "mixed_b7_weights", [F, T, F, F, T, F, F], 0.5, 1.33, 0.75),
        random_case(gen, "all_desirable_b4", [T, T, T, T], 0.3),
        random_case(gen, "all_undesirable_b5", [F, F, F, F, F], 0.3, 2.0, 0.5),
        random_case(gen, "single_desirable_b1", [T], 0.2),
        random_case(gen, "single_undesirable_b1", [F], 0.2),
        random_case(gen, "kl_clamped_b6", [T, F, F, T, T, F], 0.1, kl_shift=-8.0),
        random_case(gen, "kl_positive_b6", [F, T, T, F, T, F], 0.1, kl_shift=6.0),
        random_case(gen, "saturated_b6", [T, F, T, F, T, F], 2.0, spread=20.0),
        random_case(gen, "mixed_b16_weights", [bool(b) for b in torch.randint(0, 2, (16,), generator=gen)],
                    0.05, 0.8, 1.25, spread=10.0),
    ]
    for case in cases:
        loss, grad, metrics = run_compute_loss(case)
        case["expected"] = {"loss": loss, "grad_policy_logps": grad, "metrics": metrics}
    return cases


class ByteTokenizer:
    """A stand-in tokenizer for `_prepare_dataset`: one id per UTF-8 byte, no EOS text."""

    eos_token = ""

    def __call__(self, text):
        return {"input_ids": list(text.encode("utf-8"))}


def kl_pairs(rows, batch_size):
    """The KL partner of every row, from TRL's `_prepare_dataset` (the completion of which row each
    row's KL sequence gets)."""
    import logging
    from datasets import Dataset, disable_progress_bars
    disable_progress_bars()
    logging.getLogger("trl").setLevel(logging.ERROR)  # its advice on unbalanced labels is not wanted here
    KTOTrainer = trl_kto_trainer()
    trainer = object.__new__(KTOTrainer)
    trainer._tokenizer = ByteTokenizer()
    trainer.calculate_KL = True
    trainer.desirable_weight = trainer.undesirable_weight = 1.0
    args = SimpleNamespace(dataset_num_proc=None, max_length=None, per_device_train_batch_size=batch_size)
    completions = [f"completion {i:02d}" for i in range(rows)]
    dataset = Dataset.from_dict({
        "prompt": [f"prompt {i:02d}: " for i in range(rows)],
        "completion": completions,
        "label": [i % 3 != 0 for i in range(rows)],
    })
    prepared = trainer._prepare_dataset(dataset, ByteTokenizer(), args, "train")
    by_ids = {tuple(ByteTokenizer()(c)["input_ids"]): i for i, c in enumerate(completions)}
    assert [by_ids[tuple(r)] for r in prepared["completion_ids"]] == list(range(rows))
    return [by_ids[tuple(r)] for r in prepared["KL_completion_ids"]]


def write_goldens(out):
    """Writes the three files into `out` (created if needed)."""
    import trl
    if trl.__version__ != PINNED_TRL:
        print(f"warning: trl {trl.__version__}, the goldens were made with {PINNED_TRL}", file=sys.stderr)
    import datasets
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(SEED)

    def write(name, obj):
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")

    cases = loss_cases(gen)
    write("loss_cases.json", {
        "generator": "tests/golden/make_trl_kto.py: trl.KTOTrainer._compute_loss, float64",
        "cases": cases,
    })
    pair_cases = [{"rows": r, "batch_size": b, "kl_partner": kl_pairs(r, b)}
                  for r, b in [(10, 4), (7, 3), (5, 8), (6, 2), (9, 9)]]
    write("kl_pairs.json", {
        "generator": "tests/golden/make_trl_kto.py: trl.KTOTrainer._prepare_dataset",
        "cases": pair_cases,
    })
    write("trl_version.json", {"trl": trl.__version__, "torch": torch.__version__,
                               "datasets": datasets.__version__})
    print(f"wrote {len(cases)} loss cases and {len(pair_cases)} KL-pair cases to {out} (trl {trl.__version__})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_trl_kto.py OUTDIR")
    write_goldens(sys.argv[1])
