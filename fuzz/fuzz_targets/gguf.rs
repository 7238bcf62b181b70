//! A GGUF file: any bytes, parsed (`GgufFile::parse`) and, when they parse,
//! loaded as a model (`parse_checkpoint`: config, tokenizer, every tensor
//! dequantized). Both must return a value or a `GgufError`, never panic or
//! allocate past what the bytes hold; a file that parses has every tensor's
//! bytes inside it, and a loaded model has one tensor per tensor info (but
//! `rope_freqs`) of the size its shape says.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use transformer::gguf::{parse_checkpoint, tensor_f32, GgufFile};

fuzz_target!(|bytes: &[u8]| {
    let path = Path::new("model.gguf");
    let Ok(file) = GgufFile::parse(bytes, path) else {
        return;
    };
    for tensor in &file.tensors {
        assert!(tensor.start + tensor.n_bytes <= bytes.len());
        if let Ok(values) = tensor_f32(bytes, tensor, path) {
            assert_eq!(values.len(), tensor.n_values());
        }
    }
    if let Ok(checkpoint) = parse_checkpoint(bytes, path) {
        let expected = file
            .tensors
            .iter()
            .filter(|t| t.name != "rope_freqs.weight")
            .count();
        assert_eq!(checkpoint.tensors.len(), expected);
        for (_, shape, values) in &checkpoint.tensors {
            assert_eq!(values.len(), shape.iter().product::<usize>());
        }
    }
});
