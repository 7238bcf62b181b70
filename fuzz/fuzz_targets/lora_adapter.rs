//! LoRA adapter files (PEFT's `adapter_config.json` and
//! `adapter_model.safetensors`): any bytes, split at the first NUL into the
//! two files, read as an adapter of the tiny Llama of the PEFT goldens. The
//! reader must give adapters of that model's shapes or a `CheckpointError`,
//! never panic or allocate beyond what the files hold.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use transformer::Lora;

const BASE_CONFIG: &str = include_str!("../../tests/golden/lora/llama/base/config.json");

fuzz_target!(|bytes: &[u8]| {
    let model = transformer::hf::parse_hf_config(BASE_CONFIG.as_bytes(), Path::new("config.json"))
        .expect("the golden base config parses");
    let at = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let (config, weights) = (&bytes[..at], bytes.get(at + 1..).unwrap_or_default());
    let config_path = Path::new("adapter_config.json");
    let weights_path = Path::new("adapter_model.safetensors");
    if let Ok(lora) = Lora::from_bytes((config, config_path), (weights, weights_path), &model) {
        assert_eq!(lora.pairs.len(), 2 * 7);
        for pair in lora.pairs.iter().flatten() {
            assert_eq!(pair.a.shape()[0], lora.config.r);
            assert_eq!(pair.b.shape()[1], lora.config.r);
        }
    }
});
