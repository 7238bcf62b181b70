"""make_chat_golden.py OUTDIR -- chat-template and conversational-data goldens from transformers and TRL.

Pinned: transformers==5.24.0, trl==1.16.0, tokenizers==0.23.3, datasets==5.2.0 (the versions
are recorded in OUTDIR/versions.json). Run with the venv of benches/requirements.txt:

    VENV/bin/python tests/golden/make_chat_golden.py tests/golden/chat

What it writes, for `tests/chat_goldens.rs` (no Python needed there):

  - five tokenizer directories, each the 420-token byte-level BPE of `hf/policy` with the special
    tokens of one chat-template style added, saved by transformers' `save_pretrained`, the template
    stored in each of the places transformers reads it from:
      smollm2/           SmolLM2-135M-Instruct's own template (ChatML with a default system
                         message), in chat_template.jinja
      smollm2_training/  the same with {% generation %} blocks around the assistant's text
                         (what assistant-only loss needs), in chat_template.jinja
      llama3/            a Llama-3 header template (bos_token, `| trim`), as tokenizer_config.json's
                         chat_template string
      zephyr/            Zephyr's template (one statement per line: trim_blocks matters), as a list
                         of named templates in tokenizer_config.json
      mistral/           a Llama-2/Mistral [INST] template with a system-message branch,
                         `.strip()` and raise_exception on roles that do not alternate, in
                         chat_template.jinja
  - conversations.json: the conversations rendered;
  - render.json: for every style and conversation, `apply_chat_template` with and without
    add_generation_prompt: the text, its ids (tokenize=True), the assistant mask
    (return_assistant_tokens_mask) for the training template, or the error a template raised;
  - rows/*.jsonl: conversational preference, SFT and KTO rows, and data.json: the ids TRL 1.16's
    own `DPOTrainer`, `SFTTrainer` and `KTOTrainer` dataset preparation gives each row with
    each style (prompt_ids/chosen_ids/rejected_ids; input_ids/labels; prompt_ids/completion_ids),
    and (under "assistant_only") the SFT rows with `assistant_only_loss=True` and the training
    template.
"""

import json
import os
import shutil
import sys
import tempfile
import types

import datasets
import tokenizers
import transformers
import trl
from transformers import PreTrainedTokenizerFast
from trl import DPOConfig, KTOConfig, SFTConfig
from trl.trainer.dpo_trainer import DPOTrainer
from trl.trainer.kto_trainer import KTOTrainer
from trl.trainer.sft_trainer import SFTTrainer

HERE = os.path.dirname(os.path.abspath(__file__))
BASE_TOKENIZER = os.path.join(HERE, "hf", "policy", "tokenizer.json")

SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SMOLLM2_TRAINING = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}"
    "{%- generation -%}{{ message['content'] + '<|im_end|>' }}{%- endgeneration -%}{{ '\\n' }}"
    "{% else %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

ZEPHYR = """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""

MISTRAL = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

# style: (template, where it is stored, bos, eos, extra special tokens)
STYLES = {
    "smollm2": (SMOLLM2, "jinja", "<|im_start|>", "<|im_end|>", []),
    "smollm2_training": (SMOLLM2_TRAINING, "jinja", "<|im_start|>", "<|im_end|>", []),
    "llama3": (LLAMA3, "config", "<|begin_of_text|>", "<|eot_id|>", ["<|start_header_id|>", "<|end_header_id|>"]),
    "zephyr": (ZEPHYR, "named", "<s>", "</s>", ["<|user|>", "<|system|>", "<|assistant|>"]),
    "mistral": (MISTRAL, "jinja", "<s>", "</s>", []),
}


def msg(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = {
    "user": [msg("user", "What is the capital of France?")],
    "user_assistant": [msg("user", "What is 2+2?"), msg("assistant", "It is 4.")],
    "system": [msg("system", "Answer briefly."), msg("user", "Name a colour."), msg("assistant", "Blue.")],
    "multi_turn": [
        msg("user", "Hi!"),
        msg("assistant", "Hello, how can I help?"),
        msg("user", "Tell me a joke."),
        msg("assistant", "Why did the chicken cross the road?"),
    ],
    "unicode": [msg("user", "Grüße → 你好 🌍, naïve café?"), msg("assistant", "Ça va — très bien ✓")],
    "empty_content": [msg("user", ""), msg("assistant", "Nothing was asked.")],
    "whitespace": [msg("user", "  padded question \n"), msg("assistant", " answer with spaces  ")],
    "not_alternating": [msg("user", "one"), msg("user", "two")],
}

PREFERENCE_ROWS = [
    {  # explicit prompt
        "prompt": [msg("user", "What is 2+2?")],
        "chosen": [msg("assistant", "4")],
        "rejected": [msg("assistant", "5")],
    },
    {  # explicit prompt with a system message
        "prompt": [msg("system", "Answer briefly."), msg("user", "Name a colour.")],
        "chosen": [msg("assistant", "Blue.")],
        "rejected": [msg("assistant", "I would rather not say what colour I like.")],
    },
    {  # unicode
        "prompt": [msg("user", "Grüße → 你好 🌍, naïve café?")],
        "chosen": [msg("assistant", "Ça va — très bien ✓")],
        "rejected": [msg("assistant", "🌍🌍🌍")],
    },
    {  # empty user content, whitespace around the answers
        "prompt": [msg("user", "")],
        "chosen": [msg("assistant", " Nothing was asked. ")],
        "rejected": [msg("assistant", "?")],
    },
]

# Rows without a prompt are a file of their own: a dataset's rows share one schema, so TRL takes
# the prompt out (`extract_prompt`) only when the first row has none.
IMPLICIT_PREFERENCE_ROWS = [
    {  # implicit prompt, multi-turn
        "chosen": [
            msg("user", "Hi!"),
            msg("assistant", "Hello, how can I help?"),
            msg("user", "Tell me a joke."),
            msg("assistant", "Why did the chicken cross the road? To get to the other side."),
        ],
        "rejected": [
            msg("user", "Hi!"),
            msg("assistant", "Hello, how can I help?"),
            msg("user", "Tell me a joke."),
            msg("assistant", "No."),
        ],
    },
    {  # implicit prompt, single turn with a system message
        "chosen": [msg("system", "Be kind."), msg("user", "Rate my poem."), msg("assistant", "It is lovely.")],
        "rejected": [msg("system", "Be kind."), msg("user", "Rate my poem."), msg("assistant", "Bad.")],
    },
]

SFT_ROWS = [
    {"messages": CONVERSATIONS["user_assistant"]},
    {"messages": CONVERSATIONS["system"]},
    {"messages": CONVERSATIONS["multi_turn"]},
    {"messages": CONVERSATIONS["unicode"]},
    {"messages": CONVERSATIONS["empty_content"]},
]

SFT_PROMPT_COMPLETION_ROWS = [
    {"prompt": [msg("user", "What is 2+2?")], "completion": [msg("assistant", "It is 4.")]},
    {
        "prompt": [msg("system", "Answer briefly."), msg("user", "Name a colour.")],
        "completion": [msg("assistant", "Blue.")],
    },
    {"prompt": CONVERSATIONS["multi_turn"][:3], "completion": CONVERSATIONS["multi_turn"][3:]},
    {"prompt": [msg("user", "Grüße → 你好 🌍")], "completion": [msg("assistant", " Ça va ✓ ")]},
]

KTO_ROWS = [
    {"prompt": [msg("user", "What is 2+2?")], "completion": [msg("assistant", "4")], "label": True},
    {"prompt": [msg("user", "What is 2+2?")], "completion": [msg("assistant", "5")], "label": False},
    {
        "prompt": [msg("system", "Answer briefly."), msg("user", "Name a colour.")],
        "completion": [msg("assistant", "Blue.")],
        "label": True,
    },
    {"prompt": [msg("user", "Grüße → 你好 🌍")], "completion": [msg("assistant", "Ça va ✓")], "label": False},
]


def make_tokenizer(out_dir, style):
    template, where, bos, eos, extra = STYLES[style]
    tok = PreTrainedTokenizerFast(tokenizer_file=BASE_TOKENIZER)
    tok.add_special_tokens({"additional_special_tokens": [bos, eos] + extra})
    tok.bos_token, tok.eos_token, tok.unk_token = bos, eos, "<|endoftext|>"
    tok.chat_template = template
    path = os.path.join(out_dir, style)
    shutil.rmtree(path, ignore_errors=True)
    tok.save_pretrained(path)
    jinja = os.path.join(path, "chat_template.jinja")
    config_path = os.path.join(path, "tokenizer_config.json")
    if where != "jinja":
        os.remove(jinja)
        with open(config_path) as f:
            config = json.load(f)
        config["chat_template"] = template if where == "config" else [{"name": "default", "template": template}]
        with open(config_path, "w") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)
            f.write("\n")
    # Read back from the directory, as a user's tokenizer is.
    reloaded = transformers.AutoTokenizer.from_pretrained(path)
    loaded = reloaded.chat_template
    assert (loaded["default"] if isinstance(loaded, dict) else loaded) == template, style
    return reloaded


def render_cases(tok, style):
    cases = []
    for name, conversation in CONVERSATIONS.items():
        for add_generation_prompt in (False, True):
            case = {"conversation": name, "add_generation_prompt": add_generation_prompt}
            try:
                text = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=add_generation_prompt)
                out = tok.apply_chat_template(
                    conversation,
                    tokenize=True,
                    return_dict=True,
                    add_generation_prompt=add_generation_prompt,
                    return_assistant_tokens_mask=style == "smollm2_training",
                )
                case["text"] = text
                case["ids"] = list(out["input_ids"])
                if "assistant_masks" in out:
                    case["assistant_masks"] = list(out["assistant_masks"])
            except Exception as e:  # a template's raise_exception
                case["error"] = str(e)
            cases.append(case)
    return cases


def fake_trainer(tok):
    """The attributes the trainers' `_prepare_dataset` reads of `self`."""
    return types.SimpleNamespace(_tokenizer=tok, chat_template=None, completion_only_loss=True, calculate_KL=False)


def trl_assistant_only_rows(tok, work):
    """`SFTTrainer` with `assistant_only_loss=True` (the template has generation blocks)."""
    out = {}
    for name, rows in (("sft_messages", SFT_ROWS), ("sft_prompt_completion", SFT_PROMPT_COMPLETION_ROWS)):
        args = SFTConfig(output_dir=work, max_length=None, report_to=[], use_cpu=True, bf16=False,
                         assistant_only_loss=True)
        sft = SFTTrainer._prepare_dataset(
            fake_trainer(tok), datasets.Dataset.from_list(rows), tok, args, False, None, "train")
        out[name] = [{"input_ids": list(row["input_ids"]), "labels": list(row["labels"])} for row in sft]
    return out


def trl_rows(tok, style, work):
    out = {}
    for name, rows in (("preference", PREFERENCE_ROWS), ("preference_implicit", IMPLICIT_PREFERENCE_ROWS)):
        dpo = DPOTrainer._prepare_dataset(
            fake_trainer(tok), datasets.Dataset.from_list(rows), tok,
            DPOConfig(output_dir=work, max_length=None, report_to=[], use_cpu=True, bf16=False), "train")
        out[name] = [{k: list(row[k]) for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for row in dpo]
    kto = KTOTrainer._prepare_dataset(
        fake_trainer(tok), datasets.Dataset.from_list(KTO_ROWS), tok,
        KTOConfig(output_dir=work, max_length=None, report_to=[], use_cpu=True, bf16=False), "train")
    out["kto"] = [{k: list(row[k]) for k in ("prompt_ids", "completion_ids")} for row in kto]
    for name, rows in (("sft_messages", SFT_ROWS), ("sft_prompt_completion", SFT_PROMPT_COMPLETION_ROWS)):
        args = SFTConfig(output_dir=work, max_length=None, report_to=[], use_cpu=True, bf16=False)
        sft = SFTTrainer._prepare_dataset(
            fake_trainer(tok), datasets.Dataset.from_list(rows), tok, args, False, None, "train")
        out[name] = [{"input_ids": list(row["input_ids"]), "labels": list(row["labels"])} for row in sft]
    return out


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rows_dir = os.path.join(out_dir, "rows")
    os.makedirs(rows_dir, exist_ok=True)
    for name, rows in (
        ("preference", PREFERENCE_ROWS),
        ("preference_implicit", IMPLICIT_PREFERENCE_ROWS),
        ("sft_messages", SFT_ROWS),
        ("sft_prompt_completion", SFT_PROMPT_COMPLETION_ROWS),
        ("kto", KTO_ROWS),
    ):
        with open(os.path.join(rows_dir, f"{name}.jsonl"), "w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    render, data = {}, {}
    with tempfile.TemporaryDirectory() as work:
        for style in STYLES:
            tok = make_tokenizer(out_dir, style)
            render[style] = render_cases(tok, style)
            if style == "smollm2_training":
                data["assistant_only"] = trl_assistant_only_rows(tok, work)
            else:
                data[style] = trl_rows(tok, style, work)
    with open(os.path.join(out_dir, "conversations.json"), "w") as f:
        json.dump(CONVERSATIONS, f, indent=1, ensure_ascii=False)
    with open(os.path.join(out_dir, "render.json"), "w") as f:
        json.dump(render, f, indent=1, ensure_ascii=False)
    with open(os.path.join(out_dir, "data.json"), "w") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
    with open(os.path.join(out_dir, "versions.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "trl": trl.__version__,
                   "tokenizers": tokenizers.__version__, "datasets": datasets.__version__}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "chat"))
