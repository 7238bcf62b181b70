#!/usr/bin/env python3
"""make_gguf_golden.py OUTDIR -- GGUF dequantization goldens written and read back by gguf-py.

Pinned: gguf==0.19.0 (llama.cpp's gguf-py) and numpy (recorded in OUTDIR/versions.json).

Writes with gguf-py's GGUFWriter a small GGUF v3 file, OUTDIR/quants.gguf, holding one tensor per
ggml type the Rust reader dequantizes (crates/transformer/src/gguf/quants.rs), then reads the file
back with gguf-py's GGUFReader and dequantizes every tensor with gguf-py's numpy `dequantize`:

  - F32, F16, BF16: random values plus -0.0, +-inf, the smallest subnormals and the largest
    finite values of the type (no NaN: its payload is not what is being tested);
  - Q8_0, Q4_0, Q4_1: random values quantized by gguf-py's own `quantize`;
  - Q4_K, Q5_K, Q6_K (gguf-py cannot quantize these): random block bytes with sane f16 scales
    (|d| < 0.1), written as raw quantized data;
  - one 3-D F32 tensor, to check that shapes come back in PyTorch order (ggml's ne reversed).

Files written into OUTDIR:
  quants.gguf          the tensors (a few KiB each)
  quants.json          per tensor: name, ggml type, PyTorch shape, and where its expected values are
                       in quants_expected.f32 (offset and count, in values)
  quants_expected.f32  the expected values, little-endian f32, compared bitwise by
                       crates/transformer/tests/gguf.rs (gguf_golden_dequantization)
  versions.json        the versions used

Run:  VENV/bin/python tests/golden/make_gguf_golden.py tests/golden/gguf
"""
import json
import os
import sys

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

QK_K = 256


def f16_scales(rng, n):
    """n f16 scales in (-0.1, 0.1), as their bytes (n, 2)."""
    return (rng.uniform(-0.1, 0.1, size=(n, 1))).astype(np.float16).view(np.uint8)


def random_blocks(rng, qtype, n_blocks):
    """Random block bytes of a k-quant, with its f16 scales replaced by sane ones."""
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    if qtype in (T.Q4_K, T.Q5_K):
        blocks[:, 0:2] = f16_scales(rng, n_blocks)  # d
        blocks[:, 2:4] = f16_scales(rng, n_blocks)  # dmin
    elif qtype == T.Q6_K:
        blocks[:, type_size - 2:] = f16_scales(rng, n_blocks)  # d, last
    else:
        raise ValueError(qtype)
    return blocks


def edge_values(dtype):
    info = np.finfo(dtype)
    return np.array([0.0, -0.0, np.inf, -np.inf, info.max, -info.max, info.tiny, info.smallest_subnormal,
                     -info.smallest_subnormal, 1.0, -1.0, 0.5], dtype=np.float32)


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    rng = np.random.default_rng(20261206)
    writer = gguf.GGUFWriter(os.path.join(outdir, "quants.gguf"), "llama")
    writer.add_string("golden.note", "dequantization goldens: see tests/golden/make_gguf_golden.py")
    writer.add_array("golden.array", [1, 2, 3])
    writer.add_float64("golden.f64", 0.125)
    writer.add_bool("golden.bool", True)

    # F32 / F16 / BF16: (rows, cols) = (2, 48), the edge values first.
    for name, qtype in [("f32", T.F32), ("f16", T.F16), ("bf16", T.BF16)]:
        values = rng.normal(size=(2, 48)).astype(np.float32) * 3
        values.flat[:12] = edge_values(np.float16 if qtype == T.F16 else np.float32)
        if qtype == T.F32:
            writer.add_tensor(name, values)
        elif qtype == T.F16:
            writer.add_tensor(name, values.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(values, T.BF16), raw_dtype=T.BF16)

    # Quantized by gguf-py: (rows, cols) = (3, 64), two 32-blocks a row.
    for name, qtype in [("q8_0", T.Q8_0), ("q4_0", T.Q4_0), ("q4_1", T.Q4_1)]:
        values = rng.normal(size=(3, 64)).astype(np.float32)
        writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)

    # k-quants from random bytes: (rows, cols) = (2, 512), two super-blocks a row.
    for name, qtype in [("q4_k", T.Q4_K), ("q5_k", T.Q5_K), ("q6_k", T.Q6_K)]:
        _, type_size = gguf.GGML_QUANT_SIZES[qtype]
        blocks = random_blocks(rng, qtype, 4).reshape(2, 2 * type_size)
        writer.add_tensor(name, blocks, raw_dtype=qtype)

    writer.add_tensor("f32_3d", rng.normal(size=(2, 3, 4)).astype(np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    reader = gguf.GGUFReader(os.path.join(outdir, "quants.gguf"))
    manifest, expected, offset = [], [], 0
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32).ravel()
        shape = [int(d) for d in reversed(tensor.shape)]
        assert int(np.prod(shape)) == values.size, (tensor.name, shape, values.size)
        manifest.append({"name": tensor.name, "type": tensor.tensor_type.name, "shape": shape,
                         "offset": offset, "count": int(values.size)})
        expected.append(values)
        offset += values.size
    with open(os.path.join(outdir, "quants.json"), "w") as f:
        json.dump({"tensors": manifest}, f, indent=1)
        f.write("\n")
    np.concatenate(expected).astype("<f4").tofile(os.path.join(outdir, "quants_expected.f32"))
    versions = {"gguf": gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0",
                "numpy": np.__version__}
    try:
        from importlib.metadata import version
        versions["gguf"] = version("gguf")
    except Exception:
        pass
    with open(os.path.join(outdir, "versions.json"), "w") as f:
        json.dump(versions, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "gguf"))
