#!/usr/bin/env python3
"""make_hf_golden.py OUTDIR -- Hugging Face GPT-2 goldens computed by transformers, tokenizers and TRL.

Pinned: trl==1.16.0 with the torch, transformers and tokenizers it was run with (recorded in
OUTDIR/versions.json). Nothing comes from the hub:

  - a byte-level BPE (GPT-2's pre-tokenizer, decoder and post-processor) is trained with the
    `tokenizers` library on the local text below, with `<|endoftext|>` as its special token, and
    wrapped in a `PreTrainedTokenizerFast` with that token as EOS;
  - two random `GPT2LMHeadModel`s of a tiny `GPT2Config` (policy and reference), weights drawn far
    from the init so that every layer matters, saved with `save_pretrained`.

Files written into OUTDIR:
  policy/           save_pretrained of the policy (model.safetensors, config.json) plus the
                    tokenizer files (tokenizer.json, tokenizer_config.json, ...)
  ref/              the reference, the same way
  policy_sharded/   the policy saved in shards (model.safetensors.index.json + shards)
  policy_f16/       the policy in float16 (its logits are those of the f16 weights)
  tokens.json       test strings (non-ASCII, whitespace runs, special tokens) and their ids
  logps.json        per pair: TRL's prompt/chosen/rejected ids, and the summed completion log-probs
                    of both models from transformers (float32)
  pairs.jsonl       the preference rows, as `dpo eval --data` reads them
  metrics.json      TRL DPOTrainer.evaluate on pairs.jsonl (beta 0.1, sigmoid, one batch): the six
                    DPO metrics, policy vs reference
  logits.json       the policy's logits (transformers) for a few ids, to check loading and the
                    round trip through `dpo convert`
  versions.json     the versions used

Run:  VENV/bin/python tests/golden/make_hf_golden.py tests/golden/hf
      (tests/golden/make_golden.py runs it too, when trl is installed)
"""
import json
import os
import re
import shutil
import sys
import tempfile

sys.dont_write_bytecode = True

import torch  # noqa: E402

SEED = 1234
BETA = 0.1

TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away.",
    "Human: What is the capital of France?\n\nAssistant: The capital of France is Paris.",
    "Human: Can you help me write a poem?\n\nAssistant: Of course! Here is a short poem about the sea.",
    "It's a truth universally acknowledged that we'll need more data, and they're right.",
    "Numbers like 12345, 3.14159 and 2024 appear in text too; so do dates: 2026-12-02.",
    "Le café est très bon, déjà vu, naïve façade, où est la gare? Ça va bien, merci.",
    "Die Straße ist schön und grün; Ärger über Öl und Übungen.",
    "日本語のテキストも少しあります。東京は大きい都市です。",
    "Emoji: 🙂 👍🏽 🚀 — and some dashes – and quotes “like these”.",
    "    indented code\n\tdef f(x):\n\t\treturn x * 2\n\n",
] * 3

TEST_STRINGS = [
    "Hello world",
    "The capital of France is Paris.",
    "  two leading spaces and trailing  ",
    "tabs\tand\nnewlines\n\n\nthree",
    "naïve café — déjà vu",
    "日本語のテキスト",
    "emoji 🙂👍🏽🚀",
    "numbers 12345 and 3.14",
    "it's we'll they're I'M",
    "<|endoftext|>inside<|endoftext|> text",
    "mixed   \n  whitespace \t end",
    "Ünïcödé ÀÉÎÕÜ ß",
    "\n\nHuman: hi\n\nAssistant:",
    "",
]

PAIRS = [
    {"prompt": "Human: What is the capital of France?\n\nAssistant:",
     "chosen": " The capital of France is Paris.", "rejected": " I don't know."},
    {"prompt": "Le café est", "chosen": " très bon.", "rejected": " froid 🙂"},
    {"prompt": "Numbers: ", "chosen": "12345", "rejected": "3.14 and 2024"},
    {"prompt": "日本語の", "chosen": "テキスト", "rejected": "東京は大きい"},
    {"prompt": "The quick brown fox", "chosen": " jumps over the lazy dog.", "rejected": " sleeps."},
]


def write_json(path, value):
    """Indented objects, each list of numbers on one line."""
    text = json.dumps(value, indent=1, ensure_ascii=False)
    text = re.sub(r"\[[-0-9.e,\s]*\]", lambda m: re.sub(r"\s+", " ", m.group(0)), text)
    with open(path, "w") as f:
        f.write(text + "\n")


def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=420, min_frequency=2, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TRAINING_TEXT, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", unk_token="<|endoftext|>")


def random_model(config, gen, scale):
    from transformers import GPT2LMHeadModel
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=gen))
    return model.eval()


def completion_logps(model, prompt_ids, completion_ids):
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    total = 0.0
    for t in range(len(prompt_ids), len(prompt_ids) + len(completion_ids)):
        total += logp[t - 1, ids[0, t]].item()
    return total


def trl_metrics(policy, ref, tokenizer, rows, workdir):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=workdir, report_to="none", bf16=False, use_cpu=True, beta=BETA,
                     loss_type="sigmoid", max_length=None, per_device_eval_batch_size=len(rows),
                     per_device_train_batch_size=len(rows), precompute_ref_log_probs=False,
                     dataloader_drop_last=False, seed=SEED)
    dataset = Dataset.from_list(rows)
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=dataset,
                         processing_class=tokenizer)
    prepared = trainer.train_dataset
    metrics = trainer.evaluate(eval_dataset=dataset)
    return prepared, metrics


def write_goldens(out):
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    # make_golden.py computes in float64; these models are float32, as transformers makes them.
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        write_hf_cases(out)
    finally:
        torch.set_default_dtype(default_dtype)


def write_hf_cases(out):
    import tokenizers
    import transformers
    import trl
    from transformers import GPT2Config

    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    tokenizer = train_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=48, n_embd=16, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0)
    policy = random_model(config, gen, 0.3)
    ref = random_model(config, gen, 0.3)
    for name, model in [("policy", policy), ("ref", ref)]:
        model.save_pretrained(os.path.join(out, name))
        tokenizer.save_pretrained(os.path.join(out, name))
    policy.save_pretrained(os.path.join(out, "policy_sharded"), max_shard_size="20KB")
    f16 = random_model(config, torch.Generator().manual_seed(SEED + 1), 0.3).half()
    f16.save_pretrained(os.path.join(out, "policy_f16"))

    write_json(os.path.join(out, "tokens.json"), {
        "eos_id": tokenizer.eos_token_id,
        "cases": [{"text": s, "ids": tokenizer(s, add_special_tokens=False)["input_ids"]}
                  for s in TEST_STRINGS],
    })

    probe = [[0, 5, 17, 3, 250, len(tokenizer) - 1], [7, 7, 7]]
    logits = {}
    for name, model in [("policy", policy), ("policy_f16", f16.float())]:
        logits[name] = []
        for ids in probe:  # the last position's logits: they depend on every position
            with torch.no_grad():
                last = model(torch.tensor([ids])).logits[0, -1].tolist()
            logits[name].append({"ids": ids, "last_logits": last})
    write_json(os.path.join(out, "logits.json"), logits)

    with open(os.path.join(out, "pairs.jsonl"), "w") as f:
        for row in PAIRS:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with tempfile.TemporaryDirectory() as workdir:
        prepared, metrics = trl_metrics(policy, ref, tokenizer, PAIRS, workdir)
    cases = []
    for row in prepared:
        prompt, chosen, rejected = row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]
        cases.append({
            "prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected,
            "policy": {"chosen": completion_logps(policy, prompt, chosen),
                       "rejected": completion_logps(policy, prompt, rejected)},
            "ref": {"chosen": completion_logps(ref, prompt, chosen),
                    "rejected": completion_logps(ref, prompt, rejected)},
        })
    write_json(os.path.join(out, "logps.json"), {"pairs": cases})
    keys = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
            "logps/chosen", "logps/rejected"]
    write_json(os.path.join(out, "metrics.json"), {
        "beta": BETA, "loss_type": "sigmoid", "num_pairs": len(PAIRS),
        "metrics": {k: metrics[f"eval_{k}"] for k in keys},
    })
    write_json(os.path.join(out, "versions.json"), {
        "torch": torch.__version__, "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__, "trl": trl.__version__,
    })
    print(f"wrote the Hugging Face goldens to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_hf_golden.py OUTDIR")
    write_goldens(sys.argv[1])
