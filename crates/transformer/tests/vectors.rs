//! The model against the shared PyTorch test vectors (`shared/vectors/sft`):
//! the SFT loss of a checkpoint on a small data file, and one SGD step.
//!
//! Expected numbers are read from the vector files at run time. The vectors
//! live in `../shared` beside the repository, which a plain clone does not
//! have: the tests are `#[ignore]`d, `.ci/run` runs them with `--ignored`
//! when `../shared` exists, and run without it they fail saying what is
//! missing. `DPO_SHARED_DIR` points them at another folder.

use std::path::{Path, PathBuf};

use autograd::{Float, Tape};
use serde_json::Value;
use transformer::Model;

use crate::oracle::{sft_loss, SftBatch};

/// `../shared/vectors` (or `$DPO_SHARED_DIR/vectors`); fails loudly where it
/// is absent, so that no test passes by checking nothing.
fn vectors_dir() -> PathBuf {
    let shared = match std::env::var_os("DPO_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    let dir = shared.join("vectors");
    assert!(
        dir.join("sft").is_dir(),
        "{} not found: this test needs ../shared beside the repository \
         (or DPO_SHARED_DIR); it is #[ignore]d for that reason and run by .ci/run",
        dir.join("sft").display()
    );
    dir
}

/// One SFT row as (prompt ids, completion ids): `{"prompt","completion"}`,
/// their `_ids` forms, `{"text"}` or `{"text_ids"}` (empty prompt); bytes tokenizer.
fn parse_row(line: &str) -> (Vec<usize>, Vec<usize>) {
    let row: Value = serde_json::from_str(line).expect("a JSON object per line");
    let field = |name: &str| -> Option<Vec<usize>> {
        if let Some(ids) = row.get(format!("{name}_ids")) {
            return Some(
                ids.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as usize)
                    .collect(),
            );
        }
        row.get(name)
            .map(|text| text.as_str().unwrap().bytes().map(usize::from).collect())
    };
    match field("text") {
        Some(text) => (Vec::new(), text),
        None => (field("prompt").unwrap(), field("completion").unwrap()),
    }
}

/// docs/spec.md section 3 truncation of an SFT row (the completion is the one
/// response): if it does not fit, the prompt keeps its last P tokens, then the
/// completion is cut from the right. Returns the row and whether it was cut.
fn truncate_row(
    prompt: Vec<usize>,
    completion: Vec<usize>,
    block_size: usize,
) -> (Vec<usize>, Vec<usize>, bool) {
    let max_prompt = block_size / 2;
    if prompt.len() + completion.len() <= block_size {
        return (prompt, completion, false);
    }
    let prompt = prompt[prompt.len().saturating_sub(max_prompt)..].to_vec();
    let keep = block_size - prompt.len();
    let completion = completion[..keep.min(completion.len())].to_vec();
    (prompt, completion, true)
}

fn sft_batch(dir: &Path, block_size: usize) -> (SftBatch, usize) {
    let text = std::fs::read_to_string(dir.join("sft/sft.jsonl")).unwrap();
    let mut truncated = 0;
    let sequences: Vec<(Vec<usize>, Vec<usize>)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (p, c) = parse_row(line);
            let (p, c, cut) = truncate_row(p, c, block_size);
            truncated += cut as usize;
            (p, c)
        })
        .collect();
    (SftBatch::from_sequences(&sequences), truncated)
}

fn expected(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("sft/sft_loss.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn loss_of<T: Float>(model: &Model<T>, batch: &SftBatch) -> f64 {
    let tape = Tape::no_grad();
    let params = model.bind(&tape);
    sft_loss(model, &tape, &params, batch).item().as_f64()
}

#[test]
#[ignore = "needs ../shared/vectors: run by .ci/run"]
fn sft_loss_matches_pytorch() {
    let dir = vectors_dir();
    let model = Model::<f32>::load(&dir.join("sft/init")).unwrap();
    let (batch, truncated) = sft_batch(&dir, model.config().block_size);
    let want = expected(&dir);
    assert_eq!(
        batch.num_scored() as u64,
        want["scored_tokens"].as_u64().unwrap()
    );
    assert_eq!(truncated as u64, want["truncated_rows"].as_u64().unwrap());
    let expected_loss = want["loss"].as_f64().unwrap();

    let loss32 = loss_of(&model, &batch);
    assert!(
        (loss32 - expected_loss).abs() <= 2e-6 + 2e-5 * expected_loss.abs(),
        "f32 loss {loss32} != {expected_loss}"
    );
    // The vectors were computed in f64 from the same f32 weights: f64 agrees to rounding.
    let loss64 = loss_of(&model.to_f64(), &batch);
    assert!(
        (loss64 - expected_loss).abs() <= 1e-10 * expected_loss.abs(),
        "f64 loss {loss64} != {expected_loss}"
    );
}

#[test]
#[ignore = "needs ../shared/vectors: run by .ci/run"]
fn one_sgd_step_matches_pytorch() {
    let dir = vectors_dir();
    let mut model = Model::<f32>::load(&dir.join("sft/init")).unwrap();
    let before = model.clone();
    let after = Model::<f32>::load(&dir.join("sft/after_sft_sgd")).unwrap();
    let (batch, _) = sft_batch(&dir, model.config().block_size);

    let tape = Tape::new();
    let params = model.bind(&tape);
    let loss = sft_loss(&model, &tape, &params, &batch);
    let grads = tape.backward(&loss);
    let lr = 0.5f32;
    let grads: Vec<_> = params.iter().map(|p| grads.get_or_zeros(p)).collect();
    drop(params);
    for (param, grad) in model.params_mut().iter_mut().zip(&grads) {
        let w = std::sync::Arc::make_mut(param);
        w.zip_mut_with(grad, |w, &g| *w -= lr * g);
    }

    assert_eq!(model.param_names(), after.param_names());
    let tensors = model
        .named_params()
        .zip(after.params())
        .zip(before.params());
    for (((name, got), want), input) in tensors {
        for (&g, &w) in got.iter().zip(want.iter()) {
            assert!(
                (g - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                "{name}: {g} != {w} after one SGD step"
            );
        }
        // The step itself right to 1% (the elementwise rule is blind to small steps).
        let diff: f64 = got
            .iter()
            .zip(want.iter())
            .map(|(&g, &w)| (g as f64 - w as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let step: f64 = want
            .iter()
            .zip(input.iter())
            .map(|(&w, &x)| (w as f64 - x as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            diff <= 0.01 * step + 1e-7 * (got.len() as f64).sqrt(),
            "{name}: step off by {diff} (step norm {step})"
        );
    }
}
