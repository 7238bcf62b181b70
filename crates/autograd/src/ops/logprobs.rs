//! Log-probability ops: the summed log-prob of each sequence's targets, from
//! logits or straight from the final hidden states (the LM head fused in),
//! and cross-entropy, which is the same sum with the sign flipped and
//! divided by the number of scored rows.
//!
//! All three run the kernels of [`crate::kernels::logprobs`] (one row:
//! max, log-sum-exp, the target's logit) and
//! [`crate::kernels::lm_head_logprobs`] (the same, online, one vocabulary
//! chunk at a time).

use std::sync::Arc;

use ndarray::IxDyn;
use rayon::prelude::*;

use crate::bf16_matrix::Bf16Matrix;
use crate::float::Float;
use crate::kernels::lm_head_logprobs::{
    lm_head_logprobs_backward, lm_head_logprobs_forward, HeadWeight, LmHeadDims,
};
use crate::kernels::logprobs::{check_targets, logprobs_backward, logprobs_forward, IGNORE_INDEX};
use crate::tape::{contiguous, Tape, Tensor, Var};

impl<T: Float> Tape<T> {
    /// Summed log-prob of the scored targets of each sequence:
    /// logits: (S, T, V), targets: S*T (the label of position t+1, or -100) -> (S)
    ///
    /// ```text
    /// logp[s]        = sum_t ( logits[s,t,y] - lse(logits[s,t,:]) )         y = targets[s,t] != -100
    /// dlogits[s,t,v] = dlogp[s] * ([v == y] - exp(logits[s,t,v] - lse))      0 where not scored
    /// ```
    /// The backward turns the saved logits buffer into the gradient in place
    /// when nothing else holds it (drop the logits `Var` before `backward`):
    /// the only extra memory is one `lse` per row.
    ///
    /// # Panics
    /// If the shapes do not match or a target is neither in `0..V` nor -100.
    pub fn sequence_logprobs(&self, logits: &Var<T>, targets: &[i64]) -> Var<T> {
        let shape = logits.shape().to_vec();
        assert!(
            shape.len() == 3 && targets.len() == shape[0] * shape[1],
            "sequence_logprobs: logits {shape:?} and {} targets do not match (expected (S, T, V) and S*T)",
            targets.len()
        );
        let (seqs, seq_len, vocab) = (shape[0], shape[1], shape[2]);
        check_targets("sequence_logprobs", targets, vocab);
        let n = seqs * seq_len;
        let (mut row_logp, mut row_lse) = (vec![T::zero(); n], vec![T::zero(); n]);
        logprobs_forward(
            &mut row_logp,
            &mut row_lse,
            &contiguous(logits.value()),
            targets,
            vocab,
        );
        // Each sequence's rows summed in order (deterministic).
        let seq_logp: Vec<T> = row_logp
            .chunks(seq_len.max(1))
            .map(|rows| rows.iter().copied().sum())
            .chain(std::iter::repeat(T::zero()))
            .take(seqs)
            .collect();
        let out = Tensor::from_shape_vec(IxDyn(&[seqs]), seq_logp).unwrap();
        if !self.needs_grad(&[logits]) {
            return self.record("sequence_logprobs", out, &[logits], |_| vec![None]);
        }
        let saved_logits = logits.value_arc();
        let targets = targets.to_vec();
        self.record("sequence_logprobs", out, &[logits], move |dlogp| {
            // Reuse the logits buffer for the gradient if this is its last owner.
            let mut dlogits =
                Arc::try_unwrap(saved_logits).unwrap_or_else(|shared| (*shared).clone());
            let dlogp = contiguous(dlogp);
            let grad = dlogits
                .as_slice_mut()
                .expect("sequence_logprobs: saved logits are contiguous");
            logprobs_backward(grad, &row_lse, &targets, |r| dlogp[r / seq_len], vocab);
            vec![Some(dlogits)]
        })
    }

    /// Mean cross-entropy over the rows whose target is not [`IGNORE_INDEX`]:
    /// logits: (..., V), targets: one per row -> a scalar.
    ///
    /// ```text
    /// loss       = -(1/n_valid) sum over valid rows i of logp_i
    ///            =  (1/n_valid) sum over valid rows i of (logsumexp(logits[i]) - logits[i, targets[i]])
    /// dlogits[i] = (softmax(logits[i]) - onehot(targets[i])) / n_valid,   0 for ignored rows
    /// ```
    /// PyTorch's `F.cross_entropy(logits, targets, ignore_index=-100)`, built
    /// as [`Tape::sequence_logprobs`] of all the rows as one sequence, scaled
    /// by `-1/n_valid`. If every row is ignored the loss is 0 and so is its
    /// gradient (PyTorch gives NaN there).
    ///
    /// # Panics
    /// If the number of targets is not the number of rows, or a target is
    /// neither in `0..V` nor -100.
    pub fn cross_entropy(&self, logits: &Var<T>, targets: &[i64]) -> Var<T> {
        self.cross_entropy_sum(logits, targets, true).0
    }

    /// Like [`Tape::cross_entropy`], but with `mean = false` the SUM over the
    /// valid rows instead of the mean. Also returns the number of valid rows.
    pub fn cross_entropy_sum(
        &self,
        logits: &Var<T>,
        targets: &[i64],
        mean: bool,
    ) -> (Var<T>, usize) {
        let s = logits.shape().to_vec();
        let v = *s.last().unwrap_or(&0);
        assert!(
            v > 0,
            "cross_entropy: logits must be (..., V) with V > 0, got {s:?}"
        );
        let n = logits.value().len() / v;
        assert!(
            targets.len() == n,
            "cross_entropy: {} targets for {n} rows of logits {s:?}",
            targets.len()
        );
        check_targets("cross_entropy", targets, v);
        let n_valid = targets.iter().filter(|&&y| y != IGNORE_INDEX).count();
        let rows = self.reshape(logits, &[1, n, v]);
        let logp = self.sequence_logprobs(&rows, targets); // (1)
        let scale = if mean { n_valid.max(1) } else { 1 } as f64;
        let loss = self.reshape(&self.mul_scalar(&logp, T::cast(-1.0 / scale)), &[]);
        (loss, n_valid)
    }

    /// Summed log-prob of each sequence's targets straight from the final
    /// hidden states, the tied LM head fused in ([`LmHeadLogprobs`] with its
    /// default chunk):
    /// hidden: (S, T, C), wte: (V, C), targets: S*T (label of position t+1 or -100) -> (S)
    ///
    /// ```text
    /// logp[s] = sum_t ( z[s,t,y] - lse(z[s,t,:]) ),   z = hidden @ wte^T,   y = targets[s,t] != -100
    /// ```
    /// The GEMMs run in the tape's [`Tape::precision`].
    pub fn lm_head_logprobs(&self, hidden: &Var<T>, wte: &Var<T>, targets: &[i64]) -> Var<T> {
        LmHeadLogprobs::default().apply(self, hidden, wte, targets)
    }
}

/// Options of the fused LM-head log-prob op.
#[derive(Debug, Clone, Copy)]
pub struct LmHeadLogprobs {
    /// Upper bound on the elements of one logits chunk (`R x VC`).
    pub chunk_elements: usize,
}

impl Default for LmHeadLogprobs {
    fn default() -> Self {
        LmHeadLogprobs {
            chunk_elements: 1 << 24,
        }
    }
}

/// The scored rows of a batch: where they are, what they score, whose they are.
struct ScoredRows {
    /// Flat row index `s*T + t` of each scored row.
    rows: Vec<usize>,
    /// Target id of each scored row.
    targets: Vec<usize>,
    /// Sequence of each scored row.
    seqs: Vec<usize>,
}

impl ScoredRows {
    fn new(targets: &[i64], seq_len: usize) -> Self {
        let mut scored = ScoredRows {
            rows: Vec::new(),
            targets: Vec::new(),
            seqs: Vec::new(),
        };
        for (r, &y) in targets.iter().enumerate() {
            if y != IGNORE_INDEX {
                scored.rows.push(r);
                scored.targets.push(y as usize);
                scored.seqs.push(r / seq_len);
            }
        }
        scored
    }
}

impl LmHeadLogprobs {
    /// Vocabulary rows per chunk for `rows` scored rows.
    fn chunk_size(&self, rows: usize, vocab: usize) -> usize {
        (self.chunk_elements / rows.max(1)).clamp(256.min(vocab), vocab.max(1))
    }

    /// Differentiable per-sequence log-probs straight from the final hidden states.
    ///
    /// hidden: (S, T, C), wte: (V, C), targets: S*T (label of position t+1 or -100) -> (S)
    ///
    /// The GEMMs run in the tape's [`Tape::precision`].
    pub fn apply<T: Float>(
        &self,
        tape: &Tape<T>,
        hidden: &Var<T>,
        wte: &Var<T>,
        targets: &[i64],
    ) -> Var<T> {
        self.run(
            tape,
            hidden,
            Some(wte),
            HeadValue::Values(wte.value_arc()),
            targets,
        )
    }

    /// [`LmHeadLogprobs::apply`] with a frozen head stored as bf16
    /// ([`Bf16Matrix`]): each vocabulary chunk is widened for its GEMMs,
    /// which run in bf16, and the head takes no gradient (only `hidden` does).
    pub fn apply_bf16<T: Float>(
        &self,
        tape: &Tape<T>,
        hidden: &Var<T>,
        wte: &Arc<Bf16Matrix>,
        targets: &[i64],
    ) -> Var<T> {
        self.run(tape, hidden, None, HeadValue::Bf16(wte.clone()), targets)
    }

    fn run<T: Float>(
        &self,
        tape: &Tape<T>,
        hidden: &Var<T>,
        wte_var: Option<&Var<T>>,
        wte: HeadValue<T>,
        targets: &[i64],
    ) -> Var<T> {
        let hs = hidden.shape().to_vec();
        let ws = match &wte {
            HeadValue::Values(w) => w.shape().to_vec(),
            HeadValue::Bf16(w) => vec![w.dim().0, w.dim().1],
        };
        assert!(
            hs.len() == 3 && ws.len() == 2 && hs[2] == ws[1] && targets.len() == hs[0] * hs[1],
            "lm_head_logprobs: hidden {hs:?}, wte {ws:?} and {} targets do not match (expected (S, T, C), (V, C), S*T)",
            targets.len()
        );
        let (seqs, seq_len, channels, vocab) = (hs[0], hs[1], hs[2], ws[0]);
        check_targets("lm_head_logprobs", targets, vocab);
        let inputs: Vec<&Var<T>> = std::iter::once(hidden).chain(wte_var).collect();
        let no_grads = |n: usize| move |_: &Tensor<T>| vec![None; n];
        if targets.iter().all(|&y| y == IGNORE_INDEX) {
            // Nothing to score: every sequence's log-prob is 0, with no gradient.
            let zeros = Tensor::zeros(IxDyn(&[seqs]));
            return tape.record("lm_head_logprobs", zeros, &inputs, no_grads(inputs.len()));
        }
        let scored = ScoredRows::new(targets, seq_len);
        let n_rows = scored.rows.len();
        let dims = LmHeadDims {
            r: n_rows,
            c: channels,
            v: vocab,
            vc: self.chunk_size(n_rows, vocab),
            precision: tape.precision(),
        };

        // Gather the scored rows of h: (R, C).
        let hidden_data = contiguous(hidden.value());
        let mut h = vec![T::zero(); n_rows * channels];
        if channels > 0 {
            h.par_chunks_mut(channels)
                .zip(scored.rows.par_iter())
                .for_each(|(dst, &r)| {
                    dst.copy_from_slice(&hidden_data[r * channels..(r + 1) * channels]);
                });
        }
        drop(hidden_data);

        let mut row_logp = vec![T::zero(); n_rows];
        let mut lse = vec![T::zero(); n_rows];
        let logits = wte.read(|w| {
            lm_head_logprobs_forward(&mut row_logp, &mut lse, &h, w, &scored.targets, dims)
        });
        // Each sequence's log-prob: the sum of its scored rows', in row order.
        let mut seq_logp = vec![T::zero(); seqs];
        for (&s, &logp) in scored.seqs.iter().zip(&row_logp) {
            seq_logp[s] += logp;
        }
        let out = Tensor::from_shape_vec(IxDyn(&[seqs]), seq_logp).unwrap();
        if !tape.needs_grad(&inputs) {
            return tape.record("lm_head_logprobs", out, &inputs, no_grads(inputs.len()));
        }

        // A frozen head (LoRA, a bf16 base) takes no gradient: its (V, C) GEMMs are skipped.
        let need_w = wte_var.is_some_and(|w| w.requires_grad());
        let has_w_input = wte_var.is_some();
        tape.record("lm_head_logprobs", out, &inputs, move |dlogp| {
            let dlogp = dlogp.as_slice().unwrap();
            let drow_logp: Vec<T> = scored.seqs.iter().map(|&s| dlogp[s]).collect(); // (R)
            let mut dh = vec![T::zero(); n_rows * channels];
            let mut dwte = need_w.then(|| vec![T::zero(); vocab * channels]);
            wte.read(|w| {
                lm_head_logprobs_backward(
                    &mut dh,
                    dwte.as_deref_mut(),
                    &drow_logp,
                    &h,
                    w,
                    &scored.targets,
                    &lse,
                    logits,
                    dims,
                )
            });
            // Scatter the scored rows' gradient back to (S, T, C).
            let mut dhidden = vec![T::zero(); seqs * seq_len * channels];
            for (i, &r) in scored.rows.iter().enumerate() {
                dhidden[r * channels..(r + 1) * channels]
                    .copy_from_slice(&dh[i * channels..(i + 1) * channels]);
            }
            let dhidden = Tensor::from_shape_vec(IxDyn(&[seqs, seq_len, channels]), dhidden);
            let mut grads = vec![Some(dhidden.unwrap())];
            if has_w_input {
                grads.push(
                    dwte.map(|d| Tensor::from_shape_vec(IxDyn(&[vocab, channels]), d).unwrap()),
                );
            }
            grads
        })
    }
}

/// The value of the LM head's weight, as the op reads it and its backward keeps it.
enum HeadValue<T> {
    /// A tensor's values.
    Values(Arc<Tensor<T>>),
    /// A frozen matrix stored as bf16.
    Bf16(Arc<Bf16Matrix>),
}

impl<T: Float> HeadValue<T> {
    /// `f` of the weight as the kernels take it.
    fn read<R>(&self, f: impl FnOnce(HeadWeight<'_, T>) -> R) -> R {
        match self {
            HeadValue::Values(w) => f(HeadWeight::Values(&contiguous(w))),
            HeadValue::Bf16(w) => f(HeadWeight::Bf16(w)),
        }
    }
}
