//! A bf16 SFT step gives the same bits on the `vdpbf16ps` microkernel and on
//! the f32 FMA kernels: CPUs with and without AVX512_BF16 (or where
//! `vdpbf16ps` is the slower path and is not chosen) train to the same
//! weights.
//!
//! It switches the process-wide microkernel ([`force`]); other bf16 tests of
//! the same binary that run meanwhile get the same bits on either kernel.

use autograd::kernels::bf16::{avx512, force, Microkernel};
use autograd::{Precision, Tape, Tensor};
use dpo::data::SftRow;
use dpo::objective::sft_batch_loss;
use transformer::{Model, ModelConfig};

/// The loss and the gradients of one bf16 SFT step, as bits.
fn step_bits(model: &Model<f32>, rows: &[SftRow]) -> (u32, Vec<Tensor<f32>>) {
    let tape = Tape::<f32>::new().with_precision(Precision::Bf16);
    let params = model.bind(&tape);
    let (loss, _) = sft_batch_loss(model, &tape, &params, rows);
    let bits = loss.item().to_bits();
    let mut store = tape.backward(&loss);
    (
        bits,
        params.iter().map(|p| store.take_or_zeros(p)).collect(),
    )
}

/// On a CPU without AVX512_BF16 there is nothing to compare: the test writes
/// a `SKIPPED` line to the terminal ([`autograd::testing::skip`]) and
/// passes, and `.ci/run` lists the AVX-512 BF16 tests as skipped in its
/// summary.
#[test]
fn avx512_and_portable_bf16_steps_are_bitwise_equal() {
    if !avx512::available() {
        autograd::testing::skip(
            "avx512_and_portable_bf16_steps_are_bitwise_equal",
            "this CPU has no AVX512_BF16: the FMA kernels are the only bf16 path",
        );
        return;
    }
    let config = ModelConfig {
        vocab_size: 300,
        block_size: 64,
        n_layer: 2,
        n_head: 2,
        n_embd: 64,
        bias: true,
        llama: None,
    };
    let model = Model::<f32>::new(config.clone(), 9);
    let rows: Vec<SftRow> = (0..6u32)
        .map(|i| SftRow {
            prompt: (0..3 + i).map(|t| (t * 31 + i * 7) % 300).collect(),
            completion: (0..20 + 5 * i).map(|t| (t * 17 + i) % 300).collect(),
            line: i as usize + 1,
            completion_mask: None,
        })
        .collect();
    force(Some(Microkernel::Avx512Bf16));
    assert_eq!(Microkernel::detect(), Microkernel::Avx512Bf16);
    let (loss_avx, grads_avx) = step_bits(&model, &rows);
    force(Some(Microkernel::Fma));
    assert_eq!(Microkernel::detect(), Microkernel::Fma);
    let (loss_fma, grads_fma) = step_bits(&model, &rows);
    force(None);
    assert_eq!(loss_avx, loss_fma, "loss");
    for (i, (a, p)) in grads_avx.iter().zip(&grads_fma).enumerate() {
        assert!(
            a.iter().zip(p).all(|(x, y)| x.to_bits() == y.to_bits()),
            "gradient {i} differs"
        );
    }
}
