"""The CPU a bench ran on, for every figure it prints: vendor, family, model,
name, and the instruction sets the kernels choose between (machines of the
same kind differ: a Zen 3 has no AVX-512, a Zen 4 runs a 512-bit instruction
as two 256-bit halves, a Zen 5 or a recent Xeon has full-width units).

    python3 benches/cpu.py        # one line, for the shell benches
    import cpu; cpu.describe()    # the same line; cpu.info(), a dict
"""

FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")


def info():
    """vendor_id, cpu family, model, model name and the flags of FLAGS it has."""
    fields = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("vendor_id", "cpu family", "model", "model name", "flags") and key not in fields:
                fields[key] = value.strip()
            if not line.strip() and fields:
                break
    have = set(fields.pop("flags", "").split())
    fields["flags"] = [f for f in FLAGS if f in have]
    return fields


def describe():
    """`CPU: NAME (VENDOR, cpu family F, model M; FLAGS)`."""
    i = info()
    return (f"CPU: {i.get('model name')} ({i.get('vendor_id')}, cpu family {i.get('cpu family')}, "
            f"model {i.get('model')}; {' '.join(i['flags'])})")


if __name__ == "__main__":
    print(describe())
