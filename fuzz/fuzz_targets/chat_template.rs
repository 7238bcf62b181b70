//! Chat templates: any bytes, split at the first NUL into a template's
//! source and a JSON conversation, compiled and rendered with and without
//! the generation prompt. Compiling and rendering must give a text or a
//! `ChatTemplateError`, never panic, hang or grow without bound.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use transformer::chat_template::MAX_OUTPUT_BYTES;
use transformer::ChatTemplate;

fuzz_target!(|bytes: &[u8]| {
    let (source, conversation) = match bytes.iter().position(|&b| b == 0) {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &b"[{\"role\": \"user\", \"content\": \"hi\"}]"[..]),
    };
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let messages: Vec<serde_json::Value> = serde_json::from_slice(conversation).unwrap_or_default();
    let special = BTreeMap::from([("eos_token".to_string(), "</s>".to_string())]);
    let Ok(template) = ChatTemplate::new(source, special) else {
        return;
    };
    for add_generation_prompt in [false, true] {
        if let Ok(rendered) = template.render(&messages, add_generation_prompt, false) {
            assert!(rendered.text.len() <= MAX_OUTPUT_BYTES);
            for range in &rendered.generation {
                assert!(range.start <= range.end && range.end <= rendered.text.len());
            }
        }
    }
});
