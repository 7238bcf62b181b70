//! A frozen base stored as bf16 (`--base-precision bf16`): [`Bf16Base`].
//!
//! With LoRA the base weights never change, so they need no f32 master
//! copy. [`crate::Model::with_bf16_base`] rounds the big matrices (every
//! block's linear weights, the token embedding and the LM head) to bf16 and
//! keeps them here, at half the memory; the norms and biases stay as they
//! are (they are small, and their ops are not GEMMs). The model's parameter
//! tree then holds an empty placeholder where each of these was.
//!
//! The ops that read them ([`autograd::Tape::linear_bf16`],
//! [`autograd::Tape::embedding_bf16`], [`autograd::LmHeadLogprobs::apply_bf16`])
//! run their GEMMs in bf16 (bf16 inputs, f32 sums), whatever the step's
//! `--precision`: the base's products are those of `--precision bf16` on
//! the rounded weights, bit for bit. The adapters keep f32 values,
//! gradients and optimizer state, and their GEMMs follow `--precision`.

use std::sync::Arc;

use autograd::{Bf16Matrix, Float, Tensor};
use ndarray::{Ix2, IxDyn};

/// The base's matrices as bf16.
#[derive(Debug, Clone)]
pub struct Bf16Base {
    /// Every block linear's weight (OUT, IN), in the order of
    /// [`crate::ModelParams::linears`].
    pub linears: Vec<Arc<Bf16Matrix>>,
    /// The token embedding (V, C), also the LM head when it is tied.
    pub wte: Arc<Bf16Matrix>,
    /// The LM head (V, C) when it is not `wte`.
    pub lm_head: Option<Arc<Bf16Matrix>>,
}

impl Bf16Base {
    /// Number of values held.
    pub fn len(&self) -> usize {
        let lm_head = self.lm_head.as_ref().map_or(0, |m| m.len());
        self.linears.iter().map(|m| m.len()).sum::<usize>() + self.wte.len() + lm_head
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The LM head's matrix: `lm_head`, or `wte` when tied.
    pub fn lm_head_weight(&self) -> &Arc<Bf16Matrix> {
        self.lm_head.as_ref().unwrap_or(&self.wte)
    }
}

/// `t` (2-D) rounded to bf16.
pub(crate) fn round_matrix<T: Float>(t: &Tensor<T>) -> Arc<Bf16Matrix> {
    let m = t
        .view()
        .into_dimensionality::<Ix2>()
        .expect("a bf16 base matrix is 2-D");
    Arc::new(Bf16Matrix::from_values(m))
}

/// `m` widened exactly to a tensor.
pub(crate) fn widen_matrix<T: Float>(m: &Bf16Matrix) -> Arc<Tensor<T>> {
    Arc::new(m.to_array::<T>().into_dyn())
}

/// What a parameter tree holds in place of a matrix kept in a [`Bf16Base`].
pub(crate) fn placeholder<T: Float>() -> Arc<Tensor<T>> {
    Arc::new(Tensor::zeros(IxDyn(&[0])))
}
