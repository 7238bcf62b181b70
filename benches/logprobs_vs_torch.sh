#!/usr/bin/env bash
# Sequence log-probs, forward + backward, on logits (16, 128, 32000) float32:
# `cargo bench --bench logprobs` (benches/logprobs.rs, the fused kernel of
# crates/dpo) against the usual PyTorch formulation, log_softmax + gather with
# autograd (benches/torch/logprobs.py), alternating the two per thread count.
#
# Bytes: the logits are 262 MB. Our forward reads them once and the backward
# reads and writes them once (the gradient overwrites them): ~0.8 GB of memory
# traffic per forward + backward, memory-bound. PyTorch materializes a
# full-size log-softmax and a full-size gradient of the slice on top.
#
# Times: torch, the median and fastest of ITERS iterations after one untimed;
# ours, the median and fastest of criterion's 10 samples (each the mean of its
# iterations) after criterion's warm-up (1 s). Prints one JSON line per thread
# count: the median over REPEATS rounds of the medians, the fastest of all.
#
#   benches/logprobs_vs_torch.sh PYTHON [THREADS="1 2"] [REPEATS=2] [ITERS=5] [MEASURE_S=5]
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# $(python3 benches/cpu.py)"
PY=${1:?usage: benches/logprobs_vs_torch.sh PYTHON [THREADS] [REPEATS] [ITERS] [MEASURE_S]}
THREADS=${2:-1 2}
REPEATS=${3:-2}
ITERS=${4:-5}
MEASURE_S=${5:-5}
TORCH_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
cargo bench --bench logprobs --no-run --quiet 2>/dev/null

for t in $THREADS; do
  torch_ms=(); ours_ms=(); torch_min=(); ours_min=()
  for r in $(seq "$REPEATS"); do
    line=$("${TORCH_ENV[@]}" "$PY" benches/torch/logprobs.py --threads "$t" --iters "$ITERS")
    read -r med fast < <(echo "$line" | python3 -c 'import json,sys; r = json.load(sys.stdin); print(r["ms_median"], r["ms_min"])')
    torch_ms+=("$med"); torch_min+=("$fast")
    samples=${CARGO_TARGET_DIR:-target}/criterion/logprobs_16x128x32000_fwd_bwd/threads_$t/new/sample.json
    rm -f "$samples"
    cargo bench --quiet --bench logprobs -- --warm-up-time 1 --measurement-time "$MEASURE_S" "threads_$t\$" >/dev/null 2>&1
    read -r med fast < <(python3 - "$samples" <<'PY'
import json, statistics, sys
s = json.load(open(sys.argv[1]))
ms = [t / n / 1e6 for t, n in zip(s["times"], s["iters"])]  # ns per sample -> ms per iteration
print(statistics.median(ms), min(ms))
PY
)
    ours_ms+=("$med"); ours_min+=("$fast")
  done
  python3 - "$t" "${torch_ms[*]}" "${ours_ms[*]}" "${torch_min[*]}" "${ours_min[*]}" <<'PY'
import sys, statistics, json
t = int(sys.argv[1])
torch_ms, ours_ms, torch_min, ours_min = ([float(x) for x in a.split()] for a in sys.argv[2:6])
tm, om = statistics.median(torch_ms), statistics.median(ours_ms)
print(json.dumps({"bench": "logprobs", "threads": t, "torch_ms": tm, "dpo_ms": round(om, 2),
                  "speedup": round(tm / om, 1), "torch_ms_fastest": min(torch_min),
                  "dpo_ms_fastest": round(min(ours_min), 2), "torch_runs": torch_ms,
                  "dpo_runs": [round(x, 2) for x in ours_ms]}))
PY
done
