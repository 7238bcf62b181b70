//! `dpo generate`: one continuation of a prompt, or one reply of a chat
//! model to a conversation (`--messages`), printed as one JSON object.

use std::ops::ControlFlow;

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use transformer::sampling::{generate_streaming, Finish, SamplingOptions};

use super::args::{GenerateArgs, SamplingArgs};
use super::conversation::{chat_prompt, read_messages};
use crate::trainer::setup::load_checkpoint;

/// What `dpo generate` prints.
#[derive(Debug, Serialize)]
pub struct Generation {
    /// The prompt's text (with `--messages`, the chat template's text).
    prompt: String,
    completion: String,
    text: String,
    new_tokens: usize,
    /// Why generation ended: `length`, `eos` or `stop`.
    finish_reason: &'static str,
    /// With `--print-ids`: the prompt's token ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_ids: Option<Vec<u32>>,
    /// With `--print-ids`: the completion's token ids (EOS and stop text excluded).
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_ids: Option<Vec<u32>>,
}

/// The most tokens `dpo generate` and `dpo chat` make in one call.
const MAX_NEW_TOKENS: usize = 1 << 20;

/// `--max-new-tokens`, refused past [`MAX_NEW_TOKENS`].
pub fn check_max_new_tokens(max_new_tokens: usize) -> Result<()> {
    ensure!(
        max_new_tokens <= MAX_NEW_TOKENS,
        "--max-new-tokens {max_new_tokens} is more than {MAX_NEW_TOKENS}, the most one generation holds"
    );
    Ok(())
}

/// The sampler of `--temperature`, `--top-k` and `--seed`.
pub fn sampling_options(a: &SamplingArgs) -> Result<SamplingOptions> {
    ensure!(
        a.temperature.is_finite() && a.temperature >= 0.0,
        "--temperature must be >= 0, got {}",
        a.temperature
    );
    Ok(SamplingOptions {
        temperature: a.temperature as f32,
        top_k: a.top_k,
        seed: a.seed,
    })
}

/// Refuses a prompt the model cannot read: empty, or with an id past its vocabulary.
pub fn check_prompt(prompt: &[u32], vocab_size: usize) -> Result<()> {
    ensure!(!prompt.is_empty(), "the prompt is empty");
    if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= vocab_size) {
        bail!("the prompt's token {bad} is outside the model's vocabulary of {vocab_size}");
    }
    Ok(())
}

/// `dpo generate`: a continuation of the prompt, cut at the first `--stop`
/// text (not included) or at an end-of-sequence token (the tokenizer's, or
/// one of the model config's). Text goes through the model's tokenizer (its
/// `tokenizer.json`, else bytes); `--messages` through its chat template too.
pub fn run_generate(a: &GenerateArgs) -> Result<Generation> {
    let loaded = load_checkpoint(&a.model, "model")?;
    let (model, tokenizer) = (&loaded.model, loaded.tokenizer.as_ref());
    let (prompt_text, prompt) = match (&a.prompt, &a.prompt_ids, &a.messages) {
        (_, _, Some(messages)) => {
            let prompt = chat_prompt(tokenizer, &read_messages(messages)?)?;
            (prompt.text, prompt.ids)
        }
        (_, Some(ids), None) => (tokenizer.decode(ids), ids.clone()),
        (Some(text), None, None) => {
            ensure!(!text.is_empty(), "--prompt must not be empty");
            (text.clone(), tokenizer.encode(text))
        }
        (None, None, None) => {
            bail!("dpo generate needs --prompt TEXT, --prompt-ids IDS or --messages JSON")
        }
    };
    check_prompt(&prompt, model.config().vocab_size)?;
    let options = sampling_options(&a.sampling)?;
    ensure!(
        a.stop.iter().all(|s| !s.is_empty()),
        "--stop must not be empty"
    );
    check_max_new_tokens(a.max_new_tokens)?;
    let stops = |tokens: &[u32]| {
        let text = tokenizer.decode(tokens);
        a.stop.iter().filter_map(|s| text.find(s.as_str())).min()
    };
    // Checked after each token, a stop text can only have just been completed:
    // it lies within the last `longest` tokens (each at least a byte), so only
    // they are decoded, plus 3 for a character cut at the window's start.
    let longest = a.stop.iter().map(String::len).max().unwrap_or(0) + 3;
    let streamed = generate_streaming(
        model,
        &prompt,
        a.max_new_tokens,
        options,
        &loaded.eos_ids(),
        |tokens| {
            let tail = &tokens[tokens.len().saturating_sub(longest)..];
            if !a.stop.is_empty() && stops(tail).is_some() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .with_context(|| format!("model {}", a.model.display()))?;
    let mut new_tokens = streamed.tokens;
    let mut finish_reason = match streamed.finish {
        Finish::Eos => "eos",
        Finish::Length | Finish::Stopped => "length",
    };
    let mut completion = tokenizer.decode(&new_tokens);
    if let Some(at) = stops(&new_tokens) {
        completion.truncate(at);
        new_tokens = tokenizer.encode(&completion);
        finish_reason = "stop";
    }
    Ok(Generation {
        text: format!("{prompt_text}{completion}"),
        prompt: prompt_text,
        completion,
        new_tokens: new_tokens.len(),
        finish_reason,
        prompt_ids: a.print_ids.then_some(prompt),
        completion_ids: a.print_ids.then_some(new_tokens),
    })
}
