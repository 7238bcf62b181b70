//! `config.json`: any bytes. Parsing must return a valid config or a
//! `CheckpointError`, never panic; a config it accepts must have a parameter
//! count within the cap, so that nothing built from it can overflow.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use transformer::config::MAX_PARAMS;
use transformer::parse_config;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(config) = parse_config(bytes, Path::new("config.json")) {
        let params = config.num_params().expect("a valid config has a count");
        assert!(params <= MAX_PARAMS);
        assert!(config.n_embd % config.n_head == 0);
        assert!(config.vocab_size as u64 <= 1 << 32);
    }
});
