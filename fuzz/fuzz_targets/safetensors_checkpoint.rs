//! `model.safetensors`: any bytes, loaded as the checkpoint of a small
//! config. Loading must return the model or a `CheckpointError`, never
//! panic or allocate past what the bytes hold; a model it accepts has
//! exactly the config's parameters.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use transformer::{Model, ModelConfig};

fuzz_target!(|bytes: &[u8]| {
    // Tiny enough that a valid file is a few KiB, so the fuzzer can reach one.
    let config = ModelConfig {
        vocab_size: 5,
        block_size: 3,
        n_layer: 1,
        n_head: 1,
        n_embd: 2,
        bias: true,
        llama: None,
    };
    if let Ok(model) = Model::from_safetensors(config.clone(), bytes, Path::new("model.safetensors")) {
        let count: usize = model.params().iter().map(|p| p.len()).sum();
        assert_eq!(count as u64, config.num_params().unwrap());
    }
});
