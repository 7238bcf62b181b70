//! How much memory a training run needs at its peak, and how much this
//! machine (or its cgroup) can still give: a run that cannot fit is refused
//! before anything large is allocated, instead of being killed (or aborting
//! in the allocator) minutes later.
//!
//! The peak of a run is that of a step, in bytes, all f32 but a bf16 base
//! (a checkpoint save writes the files straight from the tensors, through
//! buffers of a few MiB: it adds nothing to count):
//!
//! ```text
//! weights      4 (P - P_h) + 2 P_h      every parameter (frozen or not), P_h of them held
//!                                       as bf16 (a frozen base, `--base-precision bf16`)
//! optimizer    4 P_t * moments          AdamW's exp_avg, exp_avg_sq (SGD: none)
//! reference    4 P                      a frozen copy of the model (`--ref`), if held
//! base         16 MiB                   the program, its threads, the rows
//! and the step's
//! gradients    4 P_t (x2 with --grad-accum > 1: the sum and the micro-batch's)
//! activations  4 B T L (a_layer + NH K) the tape's saved tensors of every block,
//!                                       with the attention probabilities (B, NH, T, K);
//!              or, if more, 4 B' T (NH K + 2 W + 4 C): one block of a no-grad
//!                                       forward of B' sequences (reference, evaluation)
//! LM head      4 * 3 min(B T V, 2^24)   the logits chunk, its gradient, the kept logits
//! bf16         2 (V C + B T W)          GEMM inputs rounded to bf16, one at a time
//! ```
//!
//! with `P` parameters, `P_t` of them trained, `B` sequences of a micro-batch
//! of `T` tokens, attending over at most `K` keys, `L` blocks, `W` the widest
//! activation of a block and `a_layer` the floats a block saves per token
//! ([`ModelDims::saved_per_token`]). The coefficients were measured against
//! the peak resident memory of real runs (docs/spec.md 5.5a, "The memory
//! check"): the estimate is meant to err high, by at most a quarter.

use anyhow::{bail, Result};
use autograd::Precision;
use transformer::ModelConfig;

/// The sizes of a model that the memory of its step depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelDims {
    /// Blocks (L).
    pub n_layer: u64,
    /// Width of the residual stream (C).
    pub n_embd: u64,
    /// Vocabulary (V).
    pub vocab_size: u64,
    /// Query heads (NH): the attention probabilities are (B, NH, T, T).
    pub n_head: u64,
    /// Width of the queries (NH hd).
    pub q_width: u64,
    /// Width of the keys, and of the values (KV hd).
    pub kv_width: u64,
    /// Width of the MLP's hidden layer: 4 C (GPT-2) or `intermediate_size`.
    pub mlp_width: u64,
    /// The Llama family's block: q, k and v projected apart and rotated
    /// (RoPE), a gated MLP (SwiGLU). Otherwise GPT-2's: one fused qkv, GELU.
    pub llama: bool,
}

impl ModelDims {
    /// The dims of `config`.
    pub fn of(config: &ModelConfig) -> ModelDims {
        let heads = config.attention_heads();
        let n_embd = config.n_embd as u64;
        ModelDims {
            n_layer: config.n_layer as u64,
            n_embd,
            vocab_size: config.vocab_size as u64,
            n_head: heads.n_head as u64,
            q_width: (heads.n_head * heads.head_dim) as u64,
            kv_width: (heads.n_kv_head * heads.head_dim) as u64,
            mlp_width: config
                .llama
                .as_ref()
                .map_or(4 * n_embd, |llama| llama.intermediate_size as u64),
            llama: config.llama.is_some(),
        }
    }

    /// Floats a block keeps on the tape per token, besides the attention
    /// probabilities: the residual stream, the norms' and the projections'
    /// outputs (6 C); q, k, v and the attention's output (GPT-2: the fused
    /// qkv and y, 2 q + 2 kv; Llama: q, k, v, the rotated q and k, their
    /// concatenation and y, 4 q + 5 kv); the MLP's hidden layer (GELU: its
    /// input and output; SwiGLU: gate, up and their product).
    pub fn saved_per_token(&self) -> u64 {
        let (q, kv) = (self.q_width, self.kv_width);
        let (attention, mlp) = if self.llama {
            (4 * q + 5 * kv, 3 * self.mlp_width)
        } else {
            (2 * q + 2 * kv, 2 * self.mlp_width)
        };
        6 * self.n_embd + attention + mlp
    }

    /// The widest activation of a block: what one bf16 rounding holds.
    fn widest(&self) -> u64 {
        self.mlp_width
            .max(self.q_width + 2 * self.kv_width)
            .max(self.n_embd)
    }
}

/// What the peak memory of a training run depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunMemory {
    /// Parameters of the model, frozen or trained.
    pub params: u64,
    /// Parameters that get a gradient and optimizer state (all of them, or
    /// an adapter's alone).
    pub trainable_params: u64,
    /// Parameters stored as bf16 (a frozen bf16 base, `--base-precision bf16`).
    pub bf16_params: u64,
    /// Whether a frozen reference model is held beside the policy.
    pub with_reference: bool,
    /// f32 tensors the optimizer keeps per trained parameter (AdamW 2, SGD 0).
    pub optimizer_moments: u64,
    /// Whether a step sums the gradients of several micro-batches (a second
    /// gradient buffer).
    pub accumulates: bool,
    /// Sequences of one micro-batch (B).
    pub sequences: u64,
    /// Sequences of one no-grad forward (the reference's log-probs,
    /// evaluation), which frees each activation once used.
    pub scoring_sequences: u64,
    /// Tokens of each sequence (T): the longest row, at most the block.
    pub seq_len: u64,
    /// Keys a query attends over at most (the attention probabilities'
    /// last axis): T, or up to 2 T where a pair runs as one sequence
    /// [prompt | chosen | rejected].
    pub attended: u64,
    /// The model's sizes.
    pub dims: ModelDims,
    /// The GEMMs' arithmetic.
    pub precision: Precision,
    /// Gradient checkpointing: the tape keeps each block's input, and one
    /// block's activations at a time are recomputed in the backward pass.
    pub checkpointing: bool,
}

/// The logits chunk of the LM head, in elements (`LmHeadLogprobs`' default).
const LM_HEAD_CHUNK_ELEMENTS: u64 = 1 << 24;
/// The program itself, its threads' stacks and the tokenized rows.
const BASE_BYTES: u64 = 16 << 20;

impl RunMemory {
    /// The estimated peak resident memory of the run, in bytes (saturating:
    /// an absurd config gives `u64::MAX`, never a wrapped small number).
    pub fn peak_bytes(&self) -> u64 {
        let f32s = |n: u64| n.saturating_mul(4);
        let dims = &self.dims;
        let weights = f32s(self.params.saturating_sub(self.bf16_params))
            .saturating_add(self.bf16_params.saturating_mul(2));
        let gradients = f32s(self.trainable_params).saturating_mul(1 + u64::from(self.accumulates));
        let optimizer = f32s(self.trainable_params).saturating_mul(self.optimizer_moments);
        // A reference of its own (`--ref`) is held in f32.
        let reference = if self.with_reference {
            f32s(self.params)
        } else {
            0
        };
        let tokens = self.sequences.saturating_mul(self.seq_len);
        let per_token = dims
            .saved_per_token()
            .saturating_add(dims.n_head.saturating_mul(self.attended));
        // Every block's saved tensors, or with checkpointing each block's
        // input and one block's saved tensors.
        let blocks_taped = if self.checkpointing {
            tokens
                .saturating_mul(dims.n_layer)
                .saturating_mul(dims.n_embd)
                .saturating_add(tokens.saturating_mul(per_token))
        } else {
            tokens
                .saturating_mul(dims.n_layer)
                .saturating_mul(per_token)
        };
        let taped = f32s(blocks_taped.saturating_add(tokens.saturating_mul(dims.n_embd)));
        let scoring = f32s(
            self.scoring_sequences
                .saturating_mul(self.seq_len)
                .saturating_mul(
                    dims.n_head
                        .saturating_mul(self.attended)
                        .saturating_add(2 * dims.widest() + 4 * dims.n_embd),
                ),
        );
        let activations = taped.max(scoring);
        let lm_head = f32s(
            3 * tokens
                .saturating_mul(dims.vocab_size)
                .min(LM_HEAD_CHUNK_ELEMENTS),
        );
        // The bf16 GEMMs' packed copies (a bf16 base's GEMMs are bf16 too).
        let bf16_gemms = self.precision == Precision::Bf16 || self.bf16_params > 0;
        let bf16 = match bf16_gemms {
            false => 0,
            true => dims
                .vocab_size
                .saturating_mul(dims.n_embd)
                .saturating_add(tokens.saturating_mul(dims.widest()))
                .saturating_mul(2),
        };
        let step = [gradients, activations, lm_head, bf16]
            .into_iter()
            .fold(0, u64::saturating_add);
        [weights, optimizer, reference, BASE_BYTES, step]
            .into_iter()
            .fold(0, u64::saturating_add)
    }
}

/// The memory this process can still take, in bytes: `MemAvailable` of
/// `/proc/meminfo`, or less where a cgroup limits it (v2: `memory.max` minus
/// `memory.current`; v1: `memory.limit_in_bytes` minus `memory.usage_in_bytes`).
/// `None` where none of these can be read (not Linux).
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    let system = kib.saturating_mul(1024);
    Some(cgroup_headroom().map_or(system, |cgroup| cgroup.min(system)))
}

/// What the cgroup's memory limit leaves, where one is set.
fn cgroup_headroom() -> Option<u64> {
    let read = |path: &str| -> Option<u64> {
        // "max" (v2) is no limit; v1 writes a huge number for none.
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    };
    let (limit, used) = match read("/sys/fs/cgroup/memory.max") {
        Some(limit) => (limit, read("/sys/fs/cgroup/memory.current")?),
        None => (
            read("/sys/fs/cgroup/memory/memory.limit_in_bytes")?,
            read("/sys/fs/cgroup/memory/memory.usage_in_bytes")?,
        ),
    };
    Some(limit.saturating_sub(used))
}

/// Refuses a run of `estimate` that does not fit in `available` bytes,
/// with one line giving both and what to lower, unless `allow_oom_risk`.
pub fn check_fits(
    estimate: &RunMemory,
    available: Option<u64>,
    allow_oom_risk: bool,
) -> Result<()> {
    let Some(available) = available else {
        return Ok(());
    };
    let needed = estimate.peak_bytes();
    if allow_oom_risk || needed <= available {
        return Ok(());
    }
    let gib = |bytes: u64| bytes as f64 / f64::from(1u32 << 30);
    bail!(
        "training needs about {:.1} GiB at its peak ({} parameters, {} trained; {} sequences of {} tokens per micro-batch), more than the {:.1} GiB available: lower --batch-size, raise --grad-accum, use shorter rows or a smaller model (or pass --allow-oom-risk to try anyway)",
        gib(needed),
        estimate.params,
        estimate.trainable_params,
        estimate.sequences,
        estimate.seq_len,
        gib(available)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpt2_small_dims() -> ModelDims {
        ModelDims::of(&ModelConfig::preset("small").unwrap())
    }

    #[test]
    fn dims_of_gpt2_and_llama() {
        let dims = gpt2_small_dims();
        assert_eq!(
            (dims.q_width, dims.kv_width, dims.mlp_width),
            (128, 128, 512)
        );
        // 6 C + 4 C + 2 * 4 C
        assert_eq!(dims.saved_per_token(), 18 * 128);
        let llama = ModelDims::of(&ModelConfig::preset("llama-tiny").unwrap());
        // 4 heads of 8, 2 kv heads of 8, intermediate 88, gated.
        assert_eq!(
            (llama.q_width, llama.kv_width, llama.mlp_width),
            (32, 16, 88)
        );
        assert_eq!(llama.saved_per_token(), 6 * 32 + 4 * 32 + 5 * 16 + 3 * 88);
    }

    #[test]
    fn the_peak_adds_up_its_terms() {
        let dims = gpt2_small_dims();
        let step = RunMemory {
            params: 1000,
            trainable_params: 100,
            bf16_params: 0,
            with_reference: true,
            optimizer_moments: 2,
            accumulates: true,
            sequences: 2,
            scoring_sequences: 4,
            seq_len: 10,
            attended: 15,
            dims,
            precision: Precision::F32,
            checkpointing: false,
        };
        let weights = 4 * 1000;
        let moments = 4 * 100 * 2;
        let gradients = 4 * 100 * 2; // the sum and the micro-batch's
        let reference = 4 * 1000;
        let tokens = 2 * 10;
        let activations = 4 * (tokens * 4 * (18 * 128 + 4 * 15) + tokens * 128);
        let lm_head = 4 * 3 * tokens * 256;
        let fixed = weights + moments + reference + BASE_BYTES;
        assert_eq!(step.peak_bytes(), fixed + gradients + activations + lm_head);
        // Without activations, the gradients and the LM head's chunk are left.
        let idle = RunMemory {
            sequences: 0,
            scoring_sequences: 0,
            ..step
        };
        assert_eq!(idle.peak_bytes(), fixed + gradients);
        // Checkpointing keeps each block's input and one block's tensors.
        let checkpointed = RunMemory {
            checkpointing: true,
            ..step
        };
        let checkpointed_taped =
            4 * (tokens * 4 * 128 + tokens * (18 * 128 + 4 * 15) + tokens * 128);
        // (below the reference's no-grad forward of 4 sequences, which is then the larger)
        let scoring_forward = 4 * 4 * 10 * (4 * 15 + 2 * 512 + 4 * 128);
        let checkpointed_activations = checkpointed_taped.max(scoring_forward);
        assert_eq!(
            step.peak_bytes() - checkpointed.peak_bytes(),
            activations - checkpointed_activations
        );
        // A no-grad forward of many long sequences outgrows the tape of a small batch.
        let scoring = RunMemory {
            scoring_sequences: 1000,
            ..step
        };
        let one_block = 4 * 1000 * 10 * (4 * 15 + 2 * 512 + 4 * 128);
        assert_eq!(
            scoring.peak_bytes() - step.peak_bytes(),
            one_block - activations
        );
        // bf16 adds the rounded head and the widest activation.
        let bf16 = RunMemory {
            precision: Precision::Bf16,
            ..step
        };
        assert_eq!(
            bf16.peak_bytes() - step.peak_bytes(),
            2 * (256 * 128 + tokens * 512)
        );
        // A bf16 base: 2 bytes for each of its parameters instead of 4, and
        // its GEMMs' bf16 copies.
        let bf16_base = RunMemory {
            bf16_params: 600,
            ..step
        };
        assert_eq!(
            bf16_base.peak_bytes() + 2 * 600,
            step.peak_bytes() + 2 * (256 * 128 + tokens * 512)
        );
    }

    #[test]
    fn an_absurd_model_saturates_and_is_refused() {
        let mut config = ModelConfig::preset("tiny").unwrap();
        config.n_layer = usize::MAX / 2;
        let step = RunMemory {
            params: u64::MAX,
            trainable_params: u64::MAX,
            bf16_params: 0,
            with_reference: false,
            optimizer_moments: 2,
            accumulates: false,
            sequences: 8,
            scoring_sequences: 16,
            seq_len: 64,
            attended: 64,
            dims: ModelDims::of(&config),
            precision: Precision::F32,
            checkpointing: false,
        };
        assert_eq!(step.peak_bytes(), u64::MAX);
        let e = check_fits(&step, Some(8 << 30), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("8.0 GiB available") && e.contains("--batch-size"),
            "{e}"
        );
        assert!(check_fits(&step, Some(8 << 30), true).is_ok());
        assert!(check_fits(&step, None, false).is_ok());
    }
}
