//! Rotary embeddings against transformers 5.24 (`scripts/rope_golden.py`,
//! output in `tests/data/rope_golden.json`): inv_freq to the bit, cos/sin
//! and `apply_rotary_pos_emb` in f32 to ~1e-6.

use autograd::ops::rope::sleef_powf;
use autograd::{Llama3RopeScaling, RopeFrequencies, Tape, Tensor};
use serde_json::Value;

fn golden() -> Value {
    let text = include_str!("data/rope_golden.json");
    serde_json::from_str(text).expect("rope_golden.json parses")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn bits(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

const LLAMA32: Llama3RopeScaling = Llama3RopeScaling {
    factor: 32.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
};

fn frequencies(rope_type: &str, theta: f64, head_dim: usize) -> RopeFrequencies {
    match rope_type {
        "default" => RopeFrequencies::new(theta, head_dim),
        "llama3" => RopeFrequencies::llama3(theta, head_dim, &LLAMA32),
        other => panic!("unknown rope type {other}"),
    }
}

fn assert_bits(ours: &RopeFrequencies, expected: &[u32], what: &str) {
    let got: Vec<u32> = ours.inv_freq.iter().map(|f| f.to_bits()).collect();
    let wrong: Vec<String> = got
        .iter()
        .zip(expected)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| format!("[{i}] {} vs {}", f32::from_bits(*a), f32::from_bits(*b)))
        .collect();
    assert_eq!(got.len(), expected.len(), "{what}: length");
    assert!(wrong.is_empty(), "{what}: inv_freq differs at {wrong:?}");
}

#[test]
fn inv_freq_matches_transformers_bitwise() {
    let g = golden();
    let mut checked = 0;
    for entry in g["inv_freq"].as_array().unwrap() {
        let theta = entry["theta"].as_f64().unwrap();
        let hd = entry["head_dim"].as_u64().unwrap() as usize;
        let rope_type = entry["rope_type"].as_str().unwrap();
        let ours = frequencies(rope_type, theta, hd);
        assert_bits(
            &ours,
            &bits(&entry["inv_freq_bits"]),
            &format!("{rope_type} theta {theta} head_dim {hd}"),
        );
        checked += 1;
    }
    assert!(checked >= 24);
}

#[test]
fn rope_matches_transformers() {
    let g = golden();
    let n_heads = g["n_heads"].as_u64().unwrap() as usize;
    for case in g["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let params = &case["rope_parameters"];
        let hd = case["head_dim"].as_u64().unwrap() as usize;
        let theta = params["rope_theta"].as_f64().unwrap();
        let freqs = frequencies(params["rope_type"].as_str().unwrap(), theta, hd);
        assert_bits(&freqs, &bits(&case["inv_freq_bits"]), name);
        assert_eq!(
            freqs.attention_scaling as f64,
            case["attention_scaling"].as_f64().unwrap()
        );
        let positions: Vec<usize> = case["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap() as usize)
            .collect();
        let t = positions.len();
        let half = hd / 2;

        // cos/sin: (T, hd) in transformers, (T, hd/2) here (the halves repeat)
        let (cos, sin) = freqs.cos_sin::<f32>(&positions);
        let (gcos, gsin) = (floats(&case["cos"]), floats(&case["sin"]));
        for r in 0..t {
            for i in 0..hd {
                let ours = (cos[r * half + i % half], sin[r * half + i % half]);
                let theirs = (gcos[r * hd + i], gsin[r * hd + i]);
                assert!(
                    (ours.0 - theirs.0).abs() <= 1e-6 && (ours.1 - theirs.1).abs() <= 1e-6,
                    "{name}: position {} entry {i}: cos/sin {ours:?} vs {theirs:?}",
                    positions[r]
                );
            }
        }

        // apply_rotary_pos_emb on q: (T, NH * hd)
        let q = Tensor::from_shape_vec(vec![t, n_heads * hd], floats(&case["q"])).unwrap();
        let expected = floats(&case["q_embed"]);
        let tape = Tape::<f32>::no_grad();
        let y = tape.rope(&tape.constant(q.clone()), &positions, &freqs, hd);
        let scale = q.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (k, (&a, &b)) in y.value().iter().zip(&expected).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * scale,
                "{name}: q_embed[{k}] (position {}) {a} vs {b}",
                positions[k / (n_heads * hd)]
            );
        }
    }
}

/// SLEEF's powf is within an ulp of the correctly rounded power (the f64
/// power rounded to f32) everywhere it is used.
#[test]
fn sleef_powf_is_within_an_ulp() {
    for base in [2.0f32, 10000.0, 500000.0, 1e6, 123456.0] {
        for k in 0..256 {
            let y = k as f32 / 256.0;
            let ours = sleef_powf(base, y);
            let exact = ((base as f64).powf(y as f64)) as f32;
            let ulps = (ours.to_bits() as i64 - exact.to_bits() as i64).abs();
            assert!(ulps <= 1, "{base}^{y}: {ours} vs {exact}");
        }
    }
    assert_eq!(sleef_powf(7.0, 0.0), 1.0);
    assert_eq!(sleef_powf(1.0, 0.3), 1.0);
    assert_eq!(sleef_powf(4.0, 0.5), 2.0);
}
