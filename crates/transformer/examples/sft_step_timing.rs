//! Times SFT steps (forward + backward) of a preset model on random tokens.
//!
//! `cargo run -p transformer --release --example sft_step_timing -- [preset] [batch] [seq_len] [steps]`

use std::time::Instant;

use autograd::Tape;
use transformer::{sft_loss, Gpt, GptConfig, SftBatch};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let preset = args.get(1).map(String::as_str).unwrap_or("small");
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let seq_len: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(128);
    let steps: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(5);
    let config = GptConfig::preset(preset).expect("unknown preset");
    let model = Gpt::<f32>::new(config, 0);
    let sequences: Vec<(Vec<usize>, Vec<usize>)> = (0..batch)
        .map(|b| {
            let ids: Vec<usize> = (0..seq_len)
                .map(|t| (b * 131 + t * 17) % config.vocab_size)
                .collect();
            (ids[..seq_len / 4].to_vec(), ids[seq_len / 4..].to_vec())
        })
        .collect();
    let sft = SftBatch::from_sequences(&sequences);
    for step in 0..steps {
        let start = Instant::now();
        let tape = Tape::new();
        let params = model.bind(&tape);
        let loss = sft_loss(&model, &tape, &params, &sft);
        let forward = start.elapsed();
        let grads = tape.backward(&loss);
        drop(grads);
        let total = start.elapsed();
        println!(
            "step {step}: loss {:.4}  forward {:.1} ms  total {:.1} ms  ({} threads)",
            loss.item(),
            forward.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            autograd::num_threads()
        );
    }
}
