//! Checkpoints: bit-for-bit round trips, atomic saves, and clear one-line
//! errors (never a panic) for every kind of broken file.

use std::fs;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use transformer::{load_config, Model, ModelConfig};

fn tiny() -> ModelConfig {
    ModelConfig {
        vocab_size: 13,
        block_size: 6,
        n_layer: 2,
        n_head: 2,
        n_embd: 4,
        bias: true,
        llama: None,
    }
}

fn assert_same(a: &Model<f32>, b: &Model<f32>) {
    assert_eq!(a.config(), b.config());
    assert_eq!(a.param_names(), b.param_names());
    for (x, y) in a.params().iter().zip(b.params()) {
        assert_eq!(x.shape(), y.shape());
        assert!(x
            .iter()
            .zip(y.iter())
            .all(|(p, q)| p.to_bits() == q.to_bits()));
    }
}

#[test]
fn save_then_load_is_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    for bias in [true, false] {
        let model = Model::<f32>::new(ModelConfig { bias, ..tiny() }, 3);
        let dir = tmp.path().join(format!("nested/ckpt-{bias}"));
        model.save(&dir).unwrap();
        assert_same(&model, &Model::load(&dir).unwrap());
        assert_eq!(load_config(&dir).unwrap(), model.config().clone());
    }
}

#[test]
fn saving_over_a_checkpoint_replaces_it_and_keeps_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    Model::<f32>::new(tiny(), 1).save(&dir).unwrap();
    fs::write(dir.join("notes.txt"), "keep me").unwrap();
    let other = Model::<f32>::new(
        ModelConfig {
            n_layer: 1,
            ..tiny()
        },
        2,
    );
    other.save(&dir).unwrap();
    assert_same(&other, &Model::load(&dir).unwrap());
    assert_eq!(
        fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "keep me"
    );
    // no temporary files left behind
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let siblings = fs::read_dir(tmp.path()).unwrap().count();
    assert_eq!(siblings, 1);
}

/// Writes `tensors` (name, dtype, shape, little-endian bytes) as the checkpoint's weights.
fn write_tensors(dir: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    fs::write(
        dir.join("model.safetensors"),
        safetensors::serialize(views, &None).unwrap(),
    )
    .unwrap();
}

fn tensors_of(model: &Model<f32>) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    model
        .param_names()
        .iter()
        .zip(model.params())
        .map(|(n, p)| {
            let bytes = p.iter().flat_map(|x| x.to_le_bytes()).collect();
            (n.clone(), Dtype::F32, p.shape().to_vec(), bytes)
        })
        .collect()
}

/// Breaks a fresh checkpoint with `corrupt`; loading must fail with one line containing `needle`.
fn refused(corrupt: impl FnOnce(&Path, &Model<f32>), needle: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let model = Model::<f32>::new(tiny(), 5);
    model.save(&dir).unwrap();
    corrupt(&dir, &model);
    let err = Model::<f32>::load(&dir)
        .expect_err("a broken checkpoint must be refused")
        .to_string();
    assert!(
        err.contains(needle),
        "error {err:?} does not mention {needle:?}"
    );
    assert!(!err.contains('\n'), "error is not one line: {err:?}");
}

#[test]
fn broken_checkpoints_are_refused_with_the_tensor_named() {
    refused(
        |dir, _| {
            let bytes = fs::read(dir.join("model.safetensors")).unwrap();
            fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
        },
        "not a valid safetensors file",
    );
    refused(
        |dir, _| fs::write(dir.join("model.safetensors"), b"").unwrap(),
        "model.safetensors",
    );
    refused(
        |dir, m| {
            let mut t = tensors_of(m);
            let wpe = t
                .iter_mut()
                .find(|x| x.0 == "transformer.wpe.weight")
                .unwrap();
            wpe.2 = vec![4, 6]; // same number of elements, wrong shape
            write_tensors(dir, &t);
        },
        "transformer.wpe.weight: shape [4, 6], expected [6, 4]",
    );
    refused(
        |dir, m| {
            let mut t = tensors_of(m);
            t.retain(|x| x.0 != "transformer.h.1.mlp.c_fc.bias");
            write_tensors(dir, &t);
        },
        "transformer.h.1.mlp.c_fc.bias: missing",
    );
    refused(
        |dir, m| {
            let mut t = tensors_of(m);
            let w = t
                .iter_mut()
                .find(|x| x.0 == "transformer.ln_f.weight")
                .unwrap();
            w.1 = Dtype::F64;
            w.2 = vec![2];
            write_tensors(dir, &t);
        },
        "transformer.ln_f.weight: dtype F64, expected F32",
    );
    refused(
        |dir, m| {
            let mut t = tensors_of(m);
            t.push((
                "transformer.h.7.attn.bias".into(),
                Dtype::F32,
                vec![1],
                vec![0; 4],
            ));
            write_tensors(dir, &t);
        },
        "transformer.h.7.attn.bias: unexpected",
    );
    refused(
        |dir, m| {
            let mut t = tensors_of(m);
            let mut head = t[0].clone();
            head.0 = "lm_head.weight".into();
            head.3[0] ^= 1;
            t.push(head);
            write_tensors(dir, &t);
        },
        "lm_head.weight: differs from transformer.wte.weight",
    );
    refused(
        |dir, _| fs::write(dir.join("config.json"), "{\"vocab_size\": 13,").unwrap(),
        "config.json: bad config",
    );
    refused(
        |dir, _| {
            let cfg = ModelConfig {
                n_head: 3,
                ..tiny()
            };
            fs::write(
                dir.join("config.json"),
                serde_json::to_string(&cfg).unwrap(),
            )
            .unwrap();
        },
        "not divisible",
    );
    refused(
        |dir, _| {
            let cfg = ModelConfig {
                n_embd: 6,
                ..tiny()
            };
            fs::write(
                dir.join("config.json"),
                serde_json::to_string(&cfg).unwrap(),
            )
            .unwrap();
        },
        "transformer.wte.weight: shape [13, 4], expected [13, 6]",
    );
    refused(
        |dir, _| fs::remove_file(dir.join("config.json")).unwrap(),
        "config.json",
    );
}

#[test]
fn an_equal_lm_head_is_accepted_and_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let model = Model::<f32>::new(tiny(), 5);
    model.save(&dir).unwrap();
    let mut t = tensors_of(&model);
    let mut head = t[0].clone();
    head.0 = "lm_head.weight".into();
    t.push(head);
    write_tensors(&dir, &t);
    assert_same(&model, &Model::load(&dir).unwrap());
}
