//! The streaming safetensors writer gives the bytes `safetensors::serialize`
//! gives (the in-memory serializer checkpoints used before it), so files and
//! their checksums are unchanged: nanoGPT's and Hugging Face's model files,
//! odd names and shapes, metadata, and what `write_synced` puts on disk.

use std::collections::HashMap;

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use transformer::safetensors_writer::SafetensorsFile;
use transformer::{write_synced, CheckpointFile, CheckpointFormat, Model, ModelConfig};

/// `safetensors::serialize` of F32 tensors given as (name, shape, values in
/// row-major order): the oracle.
fn serialized(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<(&str, &str)>,
) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, values)| values.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), b).unwrap(),
            )
        })
        .collect();
    let metadata = metadata.map(|(k, v)| HashMap::from([(k.to_string(), v.to_string())]));
    safetensors::serialize(views, &metadata).unwrap()
}

/// The weights file of `model` in `format`, streamed.
fn weights(model: &Model<f32>, format: CheckpointFormat) -> Vec<u8> {
    let [(name, file), _] = model.checkpoint_files_as(format).unwrap();
    assert_eq!(name, "model.safetensors");
    assert!(matches!(file, CheckpointFile::Tensors(_)));
    file.to_bytes()
}

#[test]
fn nanogpt_weights_are_safetensors_serialize_bytes() {
    for preset in ["tiny", "small", "llama-tiny", "qwen2-tiny", "qwen3-tiny"] {
        let model = Model::<f32>::new(ModelConfig::preset(preset).unwrap(), 7);
        let expected: Vec<_> = model
            .named_params()
            .map(|(name, p)| (name, p.shape().to_vec(), p.iter().copied().collect()))
            .collect();
        assert_eq!(
            weights(&model, CheckpointFormat::NanoGpt),
            serialized(&expected, None),
            "{preset}"
        );
    }
}

#[test]
fn hf_weights_are_safetensors_serialize_bytes() {
    let conv1d = |name: &str| {
        [
            "attn.c_attn.weight",
            "attn.c_proj.weight",
            "mlp.c_fc.weight",
            "mlp.c_proj.weight",
        ]
        .iter()
        .any(|s| name.ends_with(s))
    };
    for preset in ["tiny", "small", "llama-tiny", "qwen2-tiny"] {
        let model = Model::<f32>::new(ModelConfig::preset(preset).unwrap(), 3);
        // What hf_safetensors_bytes did: GPT-2's Conv1D weights as [in, out].
        let expected: Vec<_> = model
            .named_params()
            .map(|(name, p)| {
                if conv1d(&name) {
                    let t = p.t();
                    (name, t.shape().to_vec(), t.iter().copied().collect())
                } else {
                    (name, p.shape().to_vec(), p.iter().copied().collect())
                }
            })
            .collect();
        assert_eq!(
            weights(&model, CheckpointFormat::Hf),
            serialized(&expected, Some(("format", "pt"))),
            "{preset}"
        );
    }
}

#[test]
fn any_tensors_are_safetensors_serialize_bytes() {
    // Names that sort differently as bytes and as numbers, that JSON escapes,
    // a scalar, an empty tensor, a 3-D and a transposed view.
    let mut seed = 1u32;
    let mut values = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                f32::from_bits(seed >> 1) // every kind of float, NaNs included
            })
            .collect()
    };
    let cases: Vec<(String, Vec<usize>, Vec<f32>)> = vec![
        ("h.10.w".into(), vec![3, 2], values(6)),
        ("h.9.w".into(), vec![2, 3], values(6)),
        ("quote\"back\\slash\u{e9}\n".into(), vec![5], values(5)),
        ("scalar".into(), vec![], values(1)),
        ("empty".into(), vec![0, 4], values(0)),
        ("Upper".into(), vec![2, 3, 4], values(24)),
        ("_under".into(), vec![1], values(1)),
    ];
    let arrays: Vec<ArrayD<f32>> = cases
        .iter()
        .map(|(_, shape, v)| ArrayD::from_shape_vec(IxDyn(shape), v.clone()).unwrap())
        .collect();
    // The same values stored transposed, written through a transposed view.
    let stored = ArrayD::from_shape_vec(IxDyn(&[3, 4]), values(12)).unwrap();
    let transposed = stored.t();
    let mut expected = cases.clone();
    expected.push((
        "t".into(),
        transposed.shape().to_vec(),
        transposed.iter().copied().collect(),
    ));
    for metadata in [None, Some(("format", "pt"))] {
        let mut tensors: Vec<_> = cases
            .iter()
            .zip(&arrays)
            .map(|((name, _, _), a)| (name.clone(), a.view()))
            .collect();
        tensors.push(("t".into(), transposed.view()));
        tensors.reverse(); // the writer sorts
        let file = SafetensorsFile::new(tensors, metadata.as_slice());
        let bytes = file.to_bytes();
        assert_eq!(bytes, serialized(&expected, metadata));
        assert_eq!(bytes.len() as u64, file.len());
    }
    // No tensors at all.
    assert_eq!(
        SafetensorsFile::new(Vec::new(), &[]).to_bytes(),
        serialized(&[], None)
    );
}

#[test]
fn write_synced_puts_the_same_bytes_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    // Larger than the writer's 1 MiB buffer and 64 KiB chunks.
    let model = Model::<f32>::new(ModelConfig::preset("medium").unwrap(), 5);
    for format in [CheckpointFormat::NanoGpt, CheckpointFormat::Hf] {
        for (name, file) in model.checkpoint_files_as(format).unwrap() {
            let path = dir.path().join(name);
            write_synced(&path, &file).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), file.to_bytes(), "{name}");
        }
    }
    // Model::save writes them too.
    let saved = dir.path().join("saved");
    model.save(&saved).unwrap();
    assert_eq!(
        std::fs::read(saved.join("model.safetensors")).unwrap(),
        weights(&model, CheckpointFormat::NanoGpt)
    );
}

#[test]
fn large_tensors_reach_the_disk_whole() {
    // A 12 MB and a 28 MB tensor, one transposed: several 4 MiB writes per
    // tensor, a last one of another length, and the disk handed 16 MiB at a
    // time while the file is filled.
    let dir = tempfile::tempdir().unwrap();
    let values = |len: usize, seed: f32| -> Vec<f32> {
        (0..len).map(|i| (i as f32 * 0.37 + seed).sin()).collect()
    };
    let (a, b) = (values(3_000_001, 0.5), values(7_000_003, 1.5));
    let a_view = ArrayD::from_shape_vec(IxDyn(&[3_000_001]), a.clone()).unwrap();
    let b_stored = ArrayD::from_shape_vec(IxDyn(&[7_000_003, 1]), b.clone()).unwrap();
    let b_view = b_stored.t();
    let file = SafetensorsFile::new(
        vec![("a".into(), a_view.view()), ("b".into(), b_view.view())],
        &[],
    );
    let path = dir.path().join("large.safetensors");
    write_synced(&path, &CheckpointFile::Tensors(file)).unwrap();
    let oracle = serialized(
        &[
            ("a".into(), vec![3_000_001], a),
            ("b".into(), vec![1, 7_000_003], b),
        ],
        None,
    );
    assert!(std::fs::read(&path).unwrap() == oracle);
}
