#!/usr/bin/env python3
"""make_parquet_golden.py GOLDEN_DIR -- Parquet data files written by the `datasets` library,
each beside the JSON Lines file it was made from.

Pinned: datasets==5.2.0 with pyarrow==26.0.1 (from pip; Python 3.11). The versions used are
recorded in GOLDEN_DIR/parquet/versions.json.

Every Parquet file here is `datasets.Dataset.from_json(JSONL).to_parquet(...)`: the `datasets`
library reads the JSON Lines twin (inferring the schema as it does for any `load_dataset("json")`:
a key missing from a row is a null in its column), and writes it with pyarrow (`batch_size`
rows make one row group). datasets 5.2 compresses every column with snappy whatever `to_parquet`
is passed; the zstd and uncompressed files swap that one choice (`codec` below). `crates/dpo/tests/parquet_golden.rs` checks that each Parquet file reads
as exactly the JSON objects of its twin, and that the loaders give the same token rows from both.

Files written into GOLDEN_DIR/parquet/ (TWIN.jsonl and TWIN.CODEC.parquet, CODEC one of
snappy, zstd, none):
  text_prefs       prompt/chosen/rejected strings: accents, CJK, emoji, a newline, a one-character
                   prompt, an implicit-prompt row (no prompt: null in the Parquet file)
  ids_prefs        prompt_ids/chosen_ids/rejected_ids lists, an empty prompt, an implicit row
  kto              prompt/completion/label (KTO's unpaired rows), text and _ids rows mixed
  chat_prefs       conversational preference rows: prompt a list of {role, content} messages
                   (a system message, a multi-turn prompt), chosen/rejected lists of assistant
                   messages
  chat_sft         conversational SFT rows: `messages`, a list of {role, content}
  sharded/         text_prefs.jsonl as the hub lays a dataset out:
                   data/train-00000-of-00002.parquet, data/train-00001-of-00002.parquet
                   (`Dataset.shard(2, i, contiguous=True)`, snappy); the twin is text_prefs.jsonl
  ids_golden.snappy.parquet, text_golden.snappy.parquet, sft_golden.snappy.parquet
                   the CLI goldens' ids/prefs.jsonl, text/prefs.jsonl and sft/sft.jsonl (twins
                   in place; MANIFEST.json evaluates the first two as `dpo eval --data X.parquet`)
  other_types      int32, float32, float64, a list of lists, a map, a struct with a null field,
                   a null bool, written by pyarrow (data page v2, no dictionary, zstd);
                   other_types.jsonl holds the objects they must read as
  bad/             refused files: prompt_int (prompt an int64 column), not_utf8 (prompt a binary
                   column holding \\xff), bad_rows (row 3 has no rejected, row 5 an empty
                   chosen: implicit-prompt errors), empty (zero rows, the schema of text_prefs),
                   big_page.snappy (one row whose prompt is 1 MiB of "a": a 1 MiB page in a 50 KB
                   file, for the hostile-size tests to edit)

Run:  VENV/bin/python tests/golden/make_parquet_golden.py tests/golden
      (VENV: python3 -m venv VENV && VENV/bin/pip install datasets==5.2.0 pyarrow==26.0.1;
      tests/golden/make_golden.py runs it too when datasets is installed)
"""
import contextlib
import json
import os
import shutil
import sys
import tempfile

PINNED = {"datasets": "5.2.0", "pyarrow": "26.0.1"}
CODECS = ("snappy", "zstd", "none")
# A prompt of this many bytes makes a page whose size takes a 4-byte varint in its header, wide
# enough for a test to overwrite with a size past the reader's cap.
BIG_PAGE = (1 << 20) + 1000

TEXT_PREFS = [
    {"prompt": "2+2=", "chosen": "4", "rejected": "5"},
    {"prompt": "Traduis « chat » : ", "chosen": "cat", "rejected": "chien"},
    {"prompt": "日本の首都は", "chosen": "東京です。", "rejected": "大阪です。"},
    {"prompt": "Emoji? ", "chosen": "🙂👍", "rejected": "🙃"},
    {"prompt": "Two lines:\n", "chosen": "a\nb", "rejected": "ab"},
    {"prompt": "?", "chosen": "ok", "rejected": "no"},
    {"chosen": "\n\nHuman: café?\n\nAssistant: oui", "rejected": "\n\nHuman: café?\n\nAssistant: non"},
]

IDS_PREFS = [
    {"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6]},
    {"prompt_ids": [], "chosen_ids": [7, 8, 9], "rejected_ids": [10, 11]},
    {"chosen_ids": [12, 13, 14], "rejected_ids": [12, 13, 15, 16]},
    {"prompt_ids": [255, 0], "chosen_ids": [200], "rejected_ids": [100, 101, 102]},
]

KTO = [
    {"prompt": "2+2=", "completion": "4", "label": True},
    {"prompt": "2+2=", "completion": "5", "label": False},
    {"prompt": "Grüße: ", "completion": "Hallo!", "label": True},
    {"prompt": "", "completion": "no prompt", "label": False},
    {"prompt_ids": [50, 43, 50, 61], "completion_ids": [52], "label": True},
]


def message(role, content):
    return {"role": role, "content": content}


CHAT_PREFS = [
    {
        "prompt": [message("system", "You are terse."), message("user", "2+2?")],
        "chosen": [message("assistant", "4")],
        "rejected": [message("assistant", "5")],
    },
    {
        "prompt": [
            message("user", "Hi!"),
            message("assistant", "Hello. How can I help?"),
            message("user", "Say « oui » in English."),
        ],
        "chosen": [message("assistant", "yes")],
        "rejected": [message("assistant", "non 🙃")],
    },
    {
        "prompt": [message("user", "日本の首都は？")],
        "chosen": [message("assistant", "東京")],
        "rejected": [message("assistant", "")],
    },
]

CHAT_SFT = [
    {"messages": [message("system", "Be kind."), message("user", "Hi"), message("assistant", "Hello!")]},
    {"messages": [message("user", "2+2?"), message("assistant", "4"), message("user", "and 3+3?"),
                  message("assistant", "6")]},
    {"messages": [message("user", "Grüße?"), message("assistant", "Grüße aus Köln!")]},
]

BAD_ROWS = [
    {"chosen": "ab", "rejected": "ac"},
    {"chosen": "xy", "rejected": "xz"},
    {"chosen": "no rejected"},
    {"chosen": "pq", "rejected": "pr"},
    {"chosen": "same", "rejected": "same and more"},
    {"chosen": "uv", "rejected": "uw"},
]


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def codec(compression):
    """`to_parquet` with every column compressed by `compression`.

    datasets 5.2 chooses each column's codec itself (snappy; `get_parquet_column_options`) and
    hands it to pyarrow's ParquetWriter beside the caller's kwargs, so `compression=` cannot
    be passed through. Inside this block its choice is replaced, and nothing else: the
    writer, its content-defined chunking, dictionary encoding and page index stay datasets' own.
    """
    import datasets.io.parquet as writer

    chosen = writer.get_parquet_column_options

    def options(features, schema):
        options = chosen(features, schema)
        options["compression"] = {leaf: compression for leaf in options["compression"]}
        return options

    writer.get_parquet_column_options = options
    try:
        yield
    finally:
        writer.get_parquet_column_options = chosen


def to_parquet(jsonl, path, compression="snappy", batch_size=2):
    """`datasets` reads the JSON Lines file and writes it as Parquet, `batch_size` rows a row group."""
    import datasets

    dataset = datasets.Dataset.from_json(jsonl)
    with codec(compression):
        dataset.to_parquet(path, batch_size=batch_size)
    return dataset


# Column types `datasets` does not write from JSON (int32, float32, maps, lists of lists) and a
# layout it does not use (data page v2, no dictionary), written by pyarrow itself, with the
# JSON objects they must read as: a null column or struct field is an absent key.
OTHER_TYPES_EXPECTED = [
    {"i32": 1, "f32": 0.25, "f64": 0.5, "nested": [[1], [2, 3]], "map": {"k": 1},
     "struct": {"a": "x"}, "flag": True},
    {"i32": -2, "f32": 2.5, "f64": 1e300, "nested": [], "map": {"x": None}},
]


def write_other_types(out):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "i32": pa.array([1, -2], type=pa.int32()),
        "f32": pa.array([0.25, 2.5], type=pa.float32()),
        "f64": pa.array([0.5, 1e300], type=pa.float64()),
        "nested": pa.array([[[1], [2, 3]], []], type=pa.list_(pa.list_(pa.int64()))),
        "map": pa.array([[("k", 1)], [("x", None)]], type=pa.map_(pa.string(), pa.int64())),
        "struct": pa.array([{"a": "x", "b": None}, None], type=pa.struct([("a", pa.string()), ("b", pa.int64())])),
        "flag": pa.array([True, None], type=pa.bool_()),
    })
    pq.write_table(table, os.path.join(out, "other_types.parquet"), compression="zstd",
                   data_page_version="2.0", use_dictionary=False)
    write_jsonl(os.path.join(out, "other_types.jsonl"), OTHER_TYPES_EXPECTED)


def write_goldens(golden):
    import datasets
    import pyarrow

    out = os.path.join(golden, "parquet")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "bad"))
    for name, rows in [("text_prefs", TEXT_PREFS), ("ids_prefs", IDS_PREFS), ("kto", KTO),
                       ("chat_prefs", CHAT_PREFS), ("chat_sft", CHAT_SFT)]:
        jsonl = os.path.join(out, f"{name}.jsonl")
        write_jsonl(jsonl, rows)
        for codec in CODECS:
            to_parquet(jsonl, os.path.join(out, f"{name}.{codec}.parquet"), compression=codec)

    dataset = datasets.Dataset.from_json(os.path.join(out, "text_prefs.jsonl"))
    os.makedirs(os.path.join(out, "sharded", "data"))
    for i in range(2):
        shard = dataset.shard(num_shards=2, index=i, contiguous=True)
        shard.to_parquet(os.path.join(out, "sharded", "data", f"train-{i:05d}-of-00002.parquet"))

    for case, jsonl in [("ids", "ids/prefs.jsonl"), ("text", "text/prefs.jsonl"), ("sft", "sft/sft.jsonl")]:
        to_parquet(os.path.join(golden, jsonl), os.path.join(out, f"{case}_golden.snappy.parquet"))

    bad = os.path.join(out, "bad")
    features = datasets.Features({"prompt": datasets.Value("int64"), "chosen": datasets.Value("string"),
                                  "rejected": datasets.Value("string")})
    datasets.Dataset.from_list([{"prompt": 7, "chosen": "a", "rejected": "b"}] * 2, features=features) \
        .to_parquet(os.path.join(bad, "prompt_int.parquet"))
    features = datasets.Features({"prompt": datasets.Value("binary"), "chosen": datasets.Value("string"),
                                  "rejected": datasets.Value("string")})
    rows = [{"prompt": b"ok ", "chosen": "a", "rejected": "b"}, {"prompt": b"\xff", "chosen": "a", "rejected": "b"}]
    datasets.Dataset.from_list(rows, features=features).to_parquet(os.path.join(bad, "not_utf8.parquet"))
    write_jsonl(os.path.join(bad, "bad_rows.jsonl"), BAD_ROWS)
    to_parquet(os.path.join(bad, "bad_rows.jsonl"), os.path.join(bad, "bad_rows.parquet"))
    dataset.select([]).to_parquet(os.path.join(bad, "empty.parquet"))
    write_jsonl(os.path.join(bad, "big_page.jsonl"), [{"prompt": "a" * BIG_PAGE, "chosen": "b", "rejected": "c"}])
    to_parquet(os.path.join(bad, "big_page.jsonl"), os.path.join(bad, "big_page.snappy.parquet"))
    os.remove(os.path.join(bad, "big_page.jsonl"))

    write_other_types(out)

    versions = {"datasets": datasets.__version__, "pyarrow": pyarrow.__version__, "pinned": PINNED,
                "python": sys.version.split()[0]}
    with open(os.path.join(out, "versions.json"), "w") as f:
        json.dump(versions, f, indent=1)
        f.write("\n")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    # The datasets cache (Arrow files of each from_json) stays out of the home directory.
    with tempfile.TemporaryDirectory() as cache:
        os.environ["HF_DATASETS_CACHE"] = cache
        os.environ["HF_HUB_OFFLINE"] = "1"
        write_goldens(sys.argv[1])


if __name__ == "__main__":
    main()
