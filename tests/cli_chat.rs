//! `dpo chat` and `dpo generate --messages`, end to end.
//!
//! The model is the tiny Llama of tests/golden/llama/llama32 (random
//! weights, a context of 64 tokens) given a tokenizer and a chat template
//! ([`chat_model`]): its replies are gibberish, so the tests use greedy
//! decoding and check the structure of a session, and that each reply
//! `dpo chat` streams is the one `dpo generate --messages` gives for the
//! same conversation. The session tests run `dpo chat` in a pseudo-terminal,
//! as a person would, and with piped input, as a script would.
//!
//! The tests named `smollm2` ask the real SmolLM2-135M-Instruct (ignored
//! without `DPO_SMOLLM2_GGUF`; `.ci/run` sets it): greedy, it answers "What
//! is the capital of France?" with "The capital of France is Paris.".

use crate::common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{dpo, Run};
use rexpect::process::WaitStatus;
use rexpect::session::{spawn_command, PtySession};
use serde_json::{json, Value};

/// The tiny model's chat template: ChatML, as SmolLM2's without its default
/// system message.
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Seconds a pty test waits for any expected output before it fails.
const PTY_TIMEOUT_MS: u64 = 60_000;

/// Tokens of each reply: short enough that a few turns fit the 64 of the context.
const MAX_NEW_TOKENS: &str = "6";

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A `tokenizer.json` of 128 ids, the tiny model's vocabulary: the three
/// ChatML special tokens (`<|im_end|>`, id 2, is the EOS, as in the
/// model's config.json), the role names, the newline, the space and the
/// printable ASCII characters one token each, and 26 short words that
/// decode as themselves (no merges make them, but the model can emit them).
/// Its text is ASCII only, so what the terminal shows is what was printed.
fn tokenizer_json() -> Value {
    let special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    let roles = ["user", "assistant", "system"];
    let words = "the and is of to in it you that was for on are with as by his they be at one have this from or had";
    let characters = ["\n".to_string(), " ".to_string()]
        .into_iter()
        .chain((33u8..127).map(|b| char::from(b).to_string()));
    let tokens: Vec<String> = special
        .iter()
        .chain(&roles)
        .map(|t| t.to_string())
        .chain(characters)
        .chain(words.split(' ').map(str::to_string))
        .collect();
    assert_eq!(tokens.len(), 128, "the model's vocab_size");
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(id, token)| (token.clone(), json!(id)))
        .collect();
    let added: Vec<Value> = special
        .iter()
        .chain(&roles)
        .map(|token| {
            json!({
                "id": vocab[*token], "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": special.contains(token),
            })
        })
        .collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": null, "post_processor": null,
        "decoder": {"type": "Fuse"},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": [],
        },
    })
}

/// The tiny Llama of tests/golden/llama/llama32 in `dir`, with the tokenizer
/// of [`tokenizer_json`] and `template` as its chat template (none: `None`).
fn chat_model(dir: &Path, template: Option<&str>) -> PathBuf {
    let model = dir.join("chat-model");
    fs::create_dir(&model).unwrap();
    let golden = common::golden_dir().join("llama/llama32");
    for file in ["config.json", "model.safetensors"] {
        fs::copy(golden.join(file), model.join(file)).unwrap();
    }
    fs::write(model.join("tokenizer.json"), tokenizer_json().to_string()).unwrap();
    let config = json!({"eos_token": "<|im_end|>", "bos_token": "<|im_start|>"});
    fs::write(model.join("tokenizer_config.json"), config.to_string()).unwrap();
    if let Some(template) = template {
        fs::write(model.join("chat_template.jinja"), template).unwrap();
    }
    model
}

/// Greedy decoding, as most tests ask for.
const GREEDY: [&str; 2] = ["--temperature", "0"];

/// `dpo generate --messages` of `messages`, greedy, with the chat's reply length.
fn generate_messages(model: &Path, messages: &Value) -> serde_json::Map<String, Value> {
    generate_messages_with(model, messages, &GREEDY)
}

/// `dpo generate --messages` of `messages` with the chat's reply length and `flags`.
fn generate_messages_with(
    model: &Path,
    messages: &Value,
    flags: &[&str],
) -> serde_json::Map<String, Value> {
    let messages = messages.to_string();
    let args = ["generate", "--model", s(model), "--messages", &messages];
    let length = ["--max-new-tokens", MAX_NEW_TOKENS, "--print-ids"];
    dpo(&[&args[..], &length, flags].concat())
        .assert_ok()
        .json()
}

/// The reply `dpo generate --messages` gives to `messages`.
fn reply_to(model: &Path, messages: &Value) -> String {
    generate_messages(model, messages)["completion"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `dpo chat --model MODEL` greedy, with `extra` flags, fed `input` on a pipe.
fn chat_piped(model: &Path, extra: &[&str], input: &str) -> Run {
    chat_run(model, &[&GREEDY[..], extra].concat(), input)
}

/// `dpo chat --model MODEL` with the tests' reply length and `flags`, fed
/// `input` on a pipe.
fn chat_run(model: &Path, flags: &[&str], input: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dpo"))
        .args([
            "chat",
            "--model",
            s(model),
            "--max-new-tokens",
            MAX_NEW_TOKENS,
        ])
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the dpo binary");
    let written = child.stdin.take().unwrap().write_all(input.as_bytes());
    // A `dpo` that refuses to start may close its stdin before reading it.
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "stdin: {e}");
    }
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `dpo chat ARGS` in a pseudo-terminal: stdin, stdout and stderr all the
/// terminal, as in a person's shell (rexpect turns the terminal's echo of
/// typed lines off, so what is read back is what `dpo` wrote).
fn chat_in_terminal(args: &[&str]) -> PtySession {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dpo"));
    command.arg("chat").args(args);
    spawn_command(command, Some(PTY_TIMEOUT_MS)).expect("cannot start dpo chat in a pty")
}

/// Text as a terminal shows it: every `\n` written becomes `\r\n`.
fn on_terminal(text: &str) -> String {
    text.replace('\n', "\r\n")
}

/// Types `line` and checks that the reply shown right after it is
/// `expected` and that the prompt comes back.
fn ask(session: &mut PtySession, line: &str, expected: &str) {
    session.send_line(line).unwrap();
    let before = session
        .exp_string(&on_terminal(&format!("{expected}\n")))
        .unwrap_or_else(|e| panic!("no reply {expected:?} to {line:?}: {e}"));
    assert_eq!(before, "", "the reply to {line:?} comes first");
    session.exp_string("> ").unwrap();
}

/// Closes the session with Ctrl-D and checks that `dpo chat` exits with 0.
fn leave(mut session: PtySession) {
    session.send_control('d').unwrap();
    session.exp_eof().unwrap();
    match session.process().wait().unwrap() {
        WaitStatus::Exited(_, code) => assert_eq!(code, 0, "dpo chat's exit code after Ctrl-D"),
        other => panic!("dpo chat did not exit by itself: {other:?}"),
    }
}

#[test]
fn the_tiny_chat_model_tokenizes_its_template_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let model = chat_model(tmp.path(), Some(CHATML));
    let messages =
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]);
    let generated = generate_messages(&model, &messages);
    let prompt = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(generated["prompt"], prompt);
    // Every character of the template's text is a token: 3 + 9 + 2 for the
    // system message, 3 + 2 + 2 for the user's, 3 for the assistant's turn.
    let ids = generated["prompt_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 24);
    assert_eq!(
        ids[..3],
        [json!(1), json!(5), json!(6)],
        "<|im_start|>system\\n"
    );
    assert_eq!(
        generated["text"],
        format!("{prompt}{}", generated["completion"].as_str().unwrap())
    );
}

#[test]
fn chat_in_a_terminal_streams_the_replies_generate_gives_and_follows_its_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let model = chat_model(tmp.path(), Some(CHATML));
    let user = |text: &str| json!({"role": "user", "content": text});
    let assistant = |text: &str| json!({"role": "assistant", "content": text});
    let first = reply_to(&model, &json!([user("Hi")]));
    assert!(!first.is_empty(), "a reply to look for");

    let mut session = chat_in_terminal(&[
        "--model",
        s(&model),
        "--temperature",
        "0",
        "--max-new-tokens",
        MAX_NEW_TOKENS,
    ]);
    session.exp_string("Ctrl-D leaves").unwrap();
    session.exp_string("> ").unwrap();
    ask(&mut session, "Hi", &first);
    // The second turn answers the whole conversation.
    let second = reply_to(
        &model,
        &json!([user("Hi"), assistant(&first), user("And then?")]),
    );
    ask(&mut session, "And then?", &second);
    // An empty line is no message.
    session.send_line("").unwrap();
    session.exp_string("> ").unwrap();

    session.send_line("/reset").unwrap();
    session.exp_string("(new conversation)").unwrap();
    session.exp_string("> ").unwrap();
    ask(&mut session, "Hi", &first);

    session.send_line("/system Be brief.").unwrap();
    session
        .exp_string("(system message set; new conversation)")
        .unwrap();
    session.exp_string("> ").unwrap();
    let system = json!({"role": "system", "content": "Be brief."});
    let briefly = reply_to(&model, &json!([system, user("Hi")]));
    ask(&mut session, "Hi", &briefly);
    // /reset keeps the system message.
    session.send_line("/reset").unwrap();
    session.exp_string("> ").unwrap();
    ask(&mut session, "Hi", &briefly);

    session.send_line("/help").unwrap();
    session.exp_string("(unknown command /help").unwrap();
    session.exp_string("> ").unwrap();
    leave(session);
}

#[test]
fn chat_with_piped_input_prints_only_the_replies_on_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let model = chat_model(tmp.path(), Some(CHATML));
    let first = reply_to(&model, &json!([{"role": "user", "content": "Hi"}]));
    let run = chat_piped(&model, &[], "Hi\n\n/reset\nHi");
    run.assert_ok();
    assert_eq!(run.stdout, format!("{first}\n{first}\n"), "{run}");
    assert!(run.stderr.contains("(new conversation)"), "{run}");
    assert!(
        !run.stderr.contains("> "),
        "no prompt without a terminal:\n{run}"
    );
}

#[test]
fn a_sampled_chat_gives_the_replies_generate_gives_with_the_same_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let model = chat_model(tmp.path(), Some(CHATML));
    let sampling = ["--temperature", "1.5", "--top-k", "40", "--seed", "7"];
    let reply = |messages: Value| {
        let generated = generate_messages_with(&model, &messages, &sampling);
        generated["completion"].as_str().unwrap().to_string()
    };
    let first = reply(json!([{"role": "user", "content": "Hi"}]));
    let second = reply(json!([
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "Why?"},
    ]));
    let run = chat_run(&model, &sampling, "Hi\nWhy?\n");
    run.assert_ok();
    assert_eq!(run.stdout, format!("{first}\n{second}\n"), "{run}");
    // Sampling, not greedy decoding: another seed, another reply.
    let reseeded = ["--temperature", "1.5", "--top-k", "40", "--seed", "8"];
    let other = chat_run(&model, &reseeded, "Hi\nWhy?\n");
    assert_ne!(other.assert_ok().stdout, run.stdout);
}

#[test]
fn chat_starts_over_when_the_conversation_outgrows_the_context() {
    let tmp = tempfile::tempdir().unwrap();
    let model = chat_model(tmp.path(), Some(CHATML));
    // 31 tokens: with the template's 8 and the reply, one turn fits the 64
    // of the context, two never do.
    let message = "Tell me more about this, please";
    let alone = reply_to(&model, &json!([{"role": "user", "content": message}]));
    let run = chat_piped(&model, &[], &format!("{message}\n").repeat(4));
    run.assert_ok();
    let notice = "(the conversation no longer fits the model's context of 64 tokens: a new one starts from your last message)";
    assert_eq!(run.stderr.matches(notice).count(), 3, "{run}");
    // After each new start, the message is answered as if it came first.
    assert_eq!(run.stdout, format!("{alone}\n").repeat(4), "{run}");

    // A message that cannot fit with room for a reply is dropped, with a
    // notice, and the session goes on.
    let long = "x".repeat(80);
    let run = chat_piped(&model, &[], &format!("{long}\nHi\n"));
    run.assert_ok();
    assert!(run.stderr.contains("with no room for a reply"), "{run}");
    let hi = reply_to(&model, &json!([{"role": "user", "content": "Hi"}]));
    assert_eq!(run.stdout, format!("{hi}\n"), "{run}");
}

#[test]
fn replies_end_at_the_eos_of_the_config_too() {
    let tmp = tempfile::tempdir().unwrap();
    let model = chat_model(tmp.path(), Some(CHATML));
    let hi = json!([{"role": "user", "content": "Hi"}]);
    let generated = generate_messages(&model, &hi);
    let first = generated["completion_ids"][0].as_u64().unwrap();
    assert_ne!(first, 2, "the tokenizer's EOS would end it anyway");
    // config.json's eos_token_id becomes that first token; the tokenizer's
    // EOS stays <|im_end|>.
    let config_path = model.join("config.json");
    let mut config: Value = serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
    config["eos_token_id"] = json!([2, first]);
    fs::write(&config_path, config.to_string()).unwrap();
    let stopped = generate_messages(&model, &hi);
    assert_eq!(stopped["finish_reason"], "eos");
    assert_eq!(stopped["completion"], "");
    let run = chat_piped(&model, &[], "Hi\n");
    run.assert_ok();
    assert_eq!(run.stdout, "\n", "{run}");
}

#[test]
fn a_model_without_a_chat_template_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let with_tokenizer = chat_model(tmp.path(), None);
    let bytes_only = common::golden_dir().join("llama/llama32");
    for model in [&with_tokenizer, &bytes_only] {
        let run = chat_piped(model, &[], "Hi\n");
        run.assert_one_line_error();
        assert!(
            run.stderr.contains("the model has no chat template"),
            "{run}"
        );
        assert_eq!(run.stdout, "");
        let messages = r#"[{"role":"user","content":"Hi"}]"#;
        let run = dpo(&["generate", "--model", s(model), "--messages", messages]);
        run.assert_one_line_error();
        assert!(
            run.stderr.contains("the model has no chat template"),
            "{run}"
        );
    }
}

#[test]
fn bad_messages_are_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = chat_model(tmp.path(), Some(CHATML));
    let missing = tmp.path().join("missing.json");
    let missing_file = format!("@{}", s(&missing));
    for (messages, says) in [
        ("[{\"role\": \"user\"", "--messages is not JSON"),
        (r#"{"role":"user","content":"Hi"}"#, "must be a JSON list"),
        ("[]", "--messages holds no message"),
        (r#"[{"role":"user"}]"#, "message 1 has no \"content\""),
        (missing_file.as_str(), "--messages @"),
    ] {
        let run = dpo(&["generate", "--model", s(&model), "--messages", messages]);
        run.assert_one_line_error();
        assert!(run.stderr.contains(says), "{messages}: {run}");
    }
    // --messages takes the place of --prompt and --prompt-ids.
    let messages = r#"[{"role":"user","content":"Hi"}]"#;
    for other in [["--prompt", "Hi"], ["--prompt-ids", "1,2"]] {
        let run = dpo(&[
            &["generate", "--model", s(&model), "--messages", messages][..],
            &other,
        ]
        .concat());
        assert_eq!(run.code, Some(2), "{run}");
        assert!(run.stderr.contains("cannot be used with"), "{run}");
    }
}

#[test]
fn messages_from_a_file_are_the_same_conversation() {
    let tmp = tempfile::tempdir().unwrap();
    let model = chat_model(tmp.path(), Some(CHATML));
    let messages =
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]);
    let file = tmp.path().join("messages.json");
    fs::write(&file, messages.to_string()).unwrap();
    let from_file = format!("@{}", s(&file));
    let run = dpo(&["generate", "--model", s(&model), "--messages", &from_file]);
    let inline = dpo(&[
        "generate",
        "--model",
        s(&model),
        "--messages",
        &messages.to_string(),
    ]);
    assert_eq!(run.assert_ok().json(), inline.assert_ok().json());
}

#[test]
fn a_template_that_refuses_a_conversation_is_one_line_and_the_chat_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let strict = format!(
        "{{% if messages[0]['role'] == 'system' %}}{{{{ raise_exception('System messages are not supported') }}}}{{% endif %}}{CHATML}"
    );
    let model = chat_model(tmp.path(), Some(&strict));
    let messages = r#"[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]"#;
    let run = dpo(&["generate", "--model", s(&model), "--messages", messages]);
    run.assert_one_line_error();
    assert!(
        run.stderr.contains(
            "the chat template refused the conversation: System messages are not supported"
        ),
        "{run}"
    );

    let hi = reply_to(&model, &json!([{"role": "user", "content": "Hi"}]));
    let run = chat_piped(&model, &["--system", "Be brief."], "Hi\n/system\nHi\n");
    run.assert_ok();
    assert!(
        run.stderr.contains(
            "error: the chat template refused the conversation: System messages are not supported"
        ),
        "{run}"
    );
    assert!(
        run.stderr
            .contains("(system message removed; new conversation)"),
        "{run}"
    );
    assert_eq!(run.stdout, format!("{hi}\n"), "{run}");
}

/// The question the SmolLM2 tests ask, and its greedy answer (transformers' too).
const FRANCE: &str = "What is the capital of France?";
const PARIS: &str = "The capital of France is Paris.";

#[test]
#[ignore = "needs the real SmolLM2 GGUF (DPO_SMOLLM2_GGUF): run by .ci/run"]
fn smollm2_generate_messages_answers_the_capital_of_france() {
    let gguf = transformer::gguf::smollm2_for_tests();
    let messages = json!([{"role": "user", "content": FRANCE}]).to_string();
    let run = dpo(&[
        "generate",
        "--model",
        s(&gguf),
        "--messages",
        &messages,
        "--temperature",
        "0",
    ]);
    let generated = run.assert_ok().json();
    assert_eq!(generated["completion"], PARIS);
    assert_eq!(generated["finish_reason"], "eos");
    let prompt = generated["prompt"].as_str().unwrap();
    assert!(
        prompt.ends_with(&format!(
            "<|im_start|>user\n{FRANCE}<|im_end|>\n<|im_start|>assistant\n"
        )),
        "{prompt:?}"
    );
}

#[test]
#[ignore = "needs the real SmolLM2 GGUF (DPO_SMOLLM2_GGUF): run by .ci/run"]
fn smollm2_chat_in_a_terminal_streams_the_capital_of_france() {
    let gguf = transformer::gguf::smollm2_for_tests();
    let mut session = chat_in_terminal(&["--model", s(&gguf), "--temperature", "0"]);
    session.exp_string("> ").unwrap();
    ask(&mut session, FRANCE, PARIS);
    session.send_line("/reset").unwrap();
    session.exp_string("(new conversation)").unwrap();
    session.exp_string("> ").unwrap();
    ask(&mut session, FRANCE, PARIS);
    leave(session);
}
