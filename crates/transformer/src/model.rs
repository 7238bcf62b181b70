//! The decoder (docs/spec.md sections 1 and 8), on the autograd tape: GPT-2 /
//! nanoGPT, and the Llama family (Llama 3.2, SmolLM2, Qwen2.5, Qwen3), one
//! code path for both.
//!
//! ```text
//! x = wte[idx] (+ wpe[t], GPT-2)                (B, T, C)
//! for each block:
//!     x = x + attn(ln_1(x))                     causal self-attention (rotary q, k: Llama)
//!     x = x + mlp(ln_2(x))                      GELU MLP (GPT-2) or SwiGLU (Llama)
//! x = ln_f(x)                                   (B, T, C)
//! logits = x @ W^T                              (B, T, V), W = wte (tied) or lm_head
//! ```
//!
//! The two architectures differ in exactly five places, each a `match` or
//! an `Option` below: the position table ([`Model::hidden_states`]), the
//! norm ([`Norm::forward`], by [`NormKind`]), the q/k/v projections with
//! Qwen3's q/k norms and the rotary embedding
//! ([`CausalSelfAttention::forward`]), the MLP's gate ([`Mlp::forward`]) and
//! the LM head ([`ModelParams::lm_head_weight`]). Everything else, the
//! attention kernels, prefix sharing, the KV cache, the trainers, is the
//! same code.
//!
//! The parameters are the named structs of [`crate::params`] (nanoGPT's
//! module tree). The model keeps them as shared tensors; each step binds them
//! to a fresh tape as leaves ([`Model::bind`], no copy) and every layer's
//! forward below is a method of its bound parameters, as in nanoGPT's
//! modules. The gradients come back per bound parameter, read in the
//! canonical order ([`ModelParams::iter`]). A frozen model runs on a no-grad
//! tape, where the same code records nothing and frees each activation as
//! soon as it is used.
//!
//! The block is written once. Training and scoring run it with causal
//! self-attention over the whole sequence; generation runs the same code on
//! a no-grad tape with the attention of the new positions against the keys
//! and values cached from the earlier ones ([`AttentionMode`], [`KvCache`]).

use std::sync::Arc;

use autograd::kernels::attention::{AttentionHeads, KeyGap};
use autograd::ops::elementwise::splitmix64;
use autograd::{Float, Llama3RopeScaling, LmHeadLogprobs, RopeFrequencies, Tape, Tensor, Var};
use ndarray::IxDyn;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::bf16_base::{placeholder, round_matrix, widen_matrix, Bf16Base};
use crate::config::ModelConfig;
use crate::kv_cache::{KvCache, LayerKvCache};
use crate::lora::{Dropout, Lora, LoraAdapter};
use crate::params::{
    param_specs, Block, CausalSelfAttention, Init, Linear, Mlp, ModelParams, Norm, Qkv,
};

/// LayerNorm epsilon (GPT-2, PyTorch default).
pub const LAYER_NORM_EPS: f64 = 1e-5;

impl<T: Float> Linear<Var<T>> {
    /// y = x @ weight^T + bias          x: (..., IN) -> y: (..., OUT)
    /// (+ the LoRA term, [`LoraAdapter::forward`], when the layer has one)
    pub fn forward(&self, tape: &Tape<T>, x: &Var<T>) -> Var<T> {
        let y = match &self.weight_bf16 {
            Some(w) => tape.linear_bf16(x, w, self.bias.as_ref()),
            None => tape.linear(x, &self.weight, self.bias.as_ref()),
        };
        match &self.lora {
            None => y,
            Some(lora) => tape.add(&y, &lora.forward(tape, x)),
        }
    }
}

/// Which norm a model's [`Norm`]s are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NormKind {
    /// GPT-2's LayerNorm, eps [`LAYER_NORM_EPS`].
    LayerNorm,
    /// The Llama family's RMSNorm.
    RmsNorm {
        /// `rms_norm_eps`.
        eps: f64,
    },
}

impl<T: Float> Norm<Var<T>> {
    /// Over the last axis of x: (..., C):
    /// LayerNorm  y = (x - mean) / sqrt(var + eps) * weight + bias
    /// RMSNorm    y = x / sqrt(mean(x^2) + eps) * weight
    pub fn forward(&self, tape: &Tape<T>, x: &Var<T>, kind: NormKind) -> Var<T> {
        match kind {
            NormKind::LayerNorm => {
                tape.layer_norm(x, &self.weight, self.bias.as_ref(), LAYER_NORM_EPS)
            }
            NormKind::RmsNorm { eps } => tape.rms_norm(x, &self.weight, eps),
        }
    }

    /// The norm of each head of x: (..., H hd) with a weight of (hd) (Qwen3's q/k norm).
    fn forward_per_head(
        &self,
        tape: &Tape<T>,
        x: &Var<T>,
        kind: NormKind,
        head_dim: usize,
    ) -> Var<T> {
        let shape = x.shape().to_vec();
        let rows = shape.iter().product::<usize>() / head_dim;
        let heads = tape.reshape(x, &[rows, head_dim]); // (N H, hd)
        let normed = self.forward(tape, &heads, kind);
        tape.reshape(&normed, &shape)
    }
}

/// What a block computes with besides its parameters: the norm, the
/// attention's heads, and for the Llama family the rotary frequencies and
/// the position of each row of x.
#[derive(Debug, Clone, Copy)]
pub struct BlockContext<'a> {
    /// The norms' kind.
    pub norm: NormKind,
    /// Query heads, key/value heads, head size.
    pub heads: AttentionHeads,
    /// The rotary embedding (the Llama family), with the position of every
    /// row of x (all its axes but the last, flattened).
    pub rope: Option<(&'a RopeFrequencies, &'a [usize])>,
}

/// What the queries of a block's attention attend to.
#[derive(Debug)]
pub enum AttentionMode<'a, T> {
    /// The sequence itself, causally: each position attends to itself and the
    /// earlier ones ([`Tape::causal_attention`]; training, scoring).
    Causal,
    /// The positions are the real rows (N, C) of a padded batch (prefix
    /// sharing of DPO pairs): they are padded out to (B, T) for the attention
    /// alone, which is causal except that in sequence `b` the queries from
    /// `gaps[b].end` on do not see the keys `gaps[b].start..gaps[b].end`
    /// ([`Tape::segment_attention`]), and gathered back.
    Segmented(&'a UnpaddedRows),
    /// The positions continue the sequence held in a KV cache: they attend to
    /// the cached keys and values and, causally, to each other; their own keys
    /// and values are appended to the cache (generation; no-grad tapes only).
    Cached(&'a mut LayerKvCache<T>),
}

impl<T: Float> CausalSelfAttention<Var<T>> {
    /// y = c_proj(attention(q, k, v))         x: (B, T, C) -> y: (B, T, C)
    ///
    /// GPT-2: q, k, v = c_attn(x). Llama family: q = q_proj(x), k = k_proj(x),
    /// v = v_proj(x); Qwen3 RMS-norms each head of q and k; q and k are
    /// rotated by their positions (RoPE). Then per query head h, with its
    /// key/value head g = h / (NH / KV):
    /// softmax(q_h @ k_g^T / sqrt(hd), causal) @ v_g, heads concatenated.
    pub fn forward(
        &self,
        tape: &Tape<T>,
        x: &Var<T>,
        context: BlockContext<'_>,
        mode: AttentionMode<'_, T>,
    ) -> Var<T> {
        let heads = context.heads;
        let last_axis = x.shape().len() - 1;
        let qkv = match &self.qkv {
            Qkv::Fused(c_attn) => c_attn.forward(tape, x), // (B, T, 3C)
            Qkv::Split { q, k, v } => {
                let (mut q, mut k) = (q.forward(tape, x), k.forward(tape, x)); // (B, T, NH hd), (B, T, KV hd)
                if let (Some(q_norm), Some(k_norm)) = (&self.q_norm, &self.k_norm) {
                    q = q_norm.forward_per_head(tape, &q, context.norm, heads.head_dim);
                    k = k_norm.forward_per_head(tape, &k, context.norm, heads.head_dim);
                }
                if let Some((freqs, positions)) = context.rope {
                    q = tape.rope(&q, positions, freqs, heads.head_dim);
                    k = tape.rope(&k, positions, freqs, heads.head_dim);
                }
                let v = v.forward(tape, x); // (B, T, KV hd)
                tape.concat(&[&q, &k, &v], last_axis) // (B, T, (NH + 2 KV) hd)
            }
        };
        let y = match mode {
            AttentionMode::Causal => tape.causal_attention(&qkv, heads),
            // no padding: x is (B, T, C) already
            AttentionMode::Segmented(rows) if !rows.has_padding() => {
                tape.segment_attention(&qkv, heads, &rows.gaps)
            }
            AttentionMode::Segmented(rows) => {
                let (b, t) = (rows.batch, rows.seq_len);
                let qkv = tape.embedding(&qkv, &rows.padded, &[b, t]); // (B, T, W)
                let y = tape.segment_attention(&qkv, heads, &rows.gaps); // (B, T, NH hd)
                let y = tape.reshape(&y, &[b * t, heads.q_width()]); // (B*T, NH hd)
                tape.embedding(&y, &rows.real, &[rows.real.len()]) // (N, NH hd)
            }
            AttentionMode::Cached(cache) => cache.attend(tape, &qkv, heads),
        }; // (B, T, NH hd)
        self.c_proj.forward(tape, &y)
    }
}

impl<T: Float> Mlp<Var<T>> {
    /// GPT-2:  y = c_proj(gelu(c_fc(x)))                     x: (B, T, C) -> (B, T, 4C) -> y: (B, T, C)
    /// Llama:  y = down_proj(silu(gate_proj(x)) * up_proj(x))  through (B, T, I)
    pub fn forward(&self, tape: &Tape<T>, x: &Var<T>) -> Var<T> {
        let up = self.c_fc.forward(tape, x);
        let h = match &self.gate {
            None => tape.gelu(&up),
            Some(gate) => tape.swiglu(&gate.forward(tape, x), &up),
        };
        self.c_proj.forward(tape, &h)
    }
}

impl<T: Float> Block<Var<T>> {
    /// x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))         x: (B, T, C)
    pub fn forward(
        &self,
        tape: &Tape<T>,
        x: &Var<T>,
        context: BlockContext<'_>,
        mode: AttentionMode<'_, T>,
    ) -> Var<T> {
        let (ln_1, attn, ln_2, mlp) = (&self.ln_1, &self.attn, &self.ln_2, &self.mlp);
        let normed = ln_1.forward(tape, x, context.norm);
        let x = tape.add(x, &attn.forward(tape, &normed, context, mode));
        drop(normed);
        tape.add(
            &x,
            &mlp.forward(tape, &ln_2.forward(tape, &x, context.norm)),
        )
    }
}

/// What a recomputed block needs besides its tensors, owned (a backward
/// closure outlives the forward's borrows): the norm, the heads, the rotary
/// frequencies with the rows' positions, and the unpadded rows of prefix
/// sharing.
#[derive(Clone)]
struct SavedContext {
    norm: NormKind,
    heads: AttentionHeads,
    rope: Option<Arc<RopeFrequencies>>,
    positions: Arc<Vec<usize>>,
    rows: Option<Arc<UnpaddedRows>>,
}

impl SavedContext {
    fn new<T: Float>(model: &Model<T>, positions: Vec<usize>, rows: Option<UnpaddedRows>) -> Self {
        SavedContext {
            norm: model.norm_kind(),
            heads: model.config.attention_heads(),
            rope: model.rope.clone(),
            positions: Arc::new(positions),
            rows: rows.map(Arc::new),
        }
    }

    /// The block's forward with this context: causal, or segmented over the rows.
    fn forward<T: Float>(&self, block: &Block<Var<T>>, tape: &Tape<T>, x: &Var<T>) -> Var<T> {
        let context = BlockContext {
            norm: self.norm,
            heads: self.heads,
            rope: self.rope.as_deref().map(|f| (f, &self.positions[..])),
        };
        let mode = match &self.rows {
            Some(rows) => AttentionMode::Segmented(rows),
            None => AttentionMode::Causal,
        };
        block.forward(tape, x, context, mode)
    }
}

impl<T: Float> Block<Var<T>> {
    /// The same block with each tensor (adapters included) replaced by `f(tensor)`.
    fn rebind(&self, mut f: impl FnMut(&Var<T>) -> Var<T>) -> Block<Var<T>> {
        let mut block = self.clone();
        block.visit_mut(&mut |v| *v = f(v));
        block
    }

    /// [`Block::forward`] with gradient checkpointing, as one op on `tape`:
    ///
    /// ```text
    /// forward:   y = block(x) on a no-grad tape: nothing kept but x
    /// backward:  y = block(x) again on a fresh tape, x and the trained tensors its leaves;
    ///            dx, dtheta = that tape's backward from dy
    /// ```
    /// The second forward runs the same kernels on the same values (the same
    /// dropout masks: their seeds are in the adapters), so the gradients are
    /// those of [`Block::forward`].
    fn forward_checkpointed(&self, tape: &Tape<T>, x: &Var<T>, context: &SavedContext) -> Var<T> {
        let precision = tape.precision();
        let inner = Tape::<T>::no_grad().with_precision(precision);
        let y = {
            let block = self.rebind(|v| inner.constant(v.value_arc()));
            let y = context.forward(&block, &inner, &inner.constant(x.value_arc()));
            y.value_arc()
        };
        let (mut block, mut trained) = (self.clone(), Vec::new());
        block.visit_mut(&mut |v| {
            if v.requires_grad() {
                trained.push(v.clone());
            }
        });
        let mut inputs = vec![x];
        inputs.extend(&trained);
        let (context, x_value) = (context.clone(), x.value_arc());
        let x_needs_grad = x.requires_grad();
        tape.record("checkpointed_block", y, &inputs, move |dy| {
            let tape = Tape::<T>::new().with_precision(precision);
            let x = if x_needs_grad {
                tape.leaf(x_value)
            } else {
                tape.constant(x_value)
            };
            let mut leaves = Vec::new();
            let block = block.rebind(|v| {
                if v.requires_grad() {
                    let leaf = tape.leaf(v.value_arc());
                    leaves.push(leaf.clone());
                    leaf
                } else {
                    tape.constant(v.value_arc())
                }
            });
            let y = context.forward(&block, &tape, &x);
            let mut grads = tape.backward_with(&y, dy.clone());
            let mut out = vec![x_needs_grad.then(|| grads.take_or_zeros(&x))];
            out.extend(leaves.iter().map(|leaf| Some(grads.take_or_zeros(leaf))));
            out
        })
    }
}

impl<P> ModelParams<P> {
    /// The LM head's weight (V, C): `lm_head` when the model has its own,
    /// the token table otherwise (tied).
    pub fn lm_head_weight(&self) -> &P {
        self.lm_head.as_ref().unwrap_or(&self.wte)
    }
}

/// The real (non-padding) positions of a right-padded batch (B, T) whose
/// sequence `b` has `lengths[b]` tokens, and the attention's key gaps.
#[derive(Debug, Clone)]
pub struct UnpaddedRows {
    /// For each real position, its row in the padded batch (B*T). // (N,)
    pub real: Vec<usize>,
    /// For each padded position, its row among the real ones; a padding
    /// position takes its sequence's first row (any real row would do: no
    /// real query sees a padding key). // (B*T,)
    pub padded: Vec<usize>,
    /// The key gap of each sequence. // (B,)
    pub gaps: Vec<KeyGap>,
    /// B.
    pub batch: usize,
    /// T.
    pub seq_len: usize,
}

impl UnpaddedRows {
    /// Whether any position is padding (N < B*T).
    pub fn has_padding(&self) -> bool {
        self.real.len() < self.batch * self.seq_len
    }

    /// The rows of sequences of `lengths` (each `1..=seq_len`) padded to `seq_len`.
    pub fn new(lengths: &[usize], gaps: &[KeyGap], seq_len: usize) -> Self {
        let mut real = Vec::with_capacity(lengths.iter().sum());
        let mut padded = Vec::with_capacity(lengths.len() * seq_len);
        for (b, &len) in lengths.iter().enumerate() {
            assert!(
                (1..=seq_len).contains(&len),
                "UnpaddedRows: a sequence of {len} tokens in a batch of length {seq_len}"
            );
            let first = real.len();
            real.extend((0..len).map(|t| b * seq_len + t));
            padded.extend((0..seq_len).map(|t| if t < len { first + t } else { first }));
        }
        UnpaddedRows {
            real,
            padded,
            gaps: gaps.to_vec(),
            batch: lengths.len(),
            seq_len,
        }
    }
}

/// A decoder (GPT-2 or the Llama family) with its parameters, and maybe
/// LoRA adapters on them ([`crate::lora`]).
#[derive(Clone)]
pub struct Model<T> {
    config: ModelConfig,
    params: ModelParams<Arc<Tensor<T>>>,
    /// The rotary embedding's frequencies (the Llama family), from the config.
    rope: Option<Arc<RopeFrequencies>>,
    /// Adapters: when present, they are what trains, and `params` is the
    /// frozen base.
    lora: Option<Lora<T>>,
    /// Recompute each block in the backward pass instead of keeping its
    /// activations ([`Model::set_gradient_checkpointing`]).
    checkpointing: bool,
    /// The base's matrices as bf16 ([`Model::with_bf16_base`]); `params`
    /// then holds empty placeholders in their places.
    base_bf16: Option<Arc<Bf16Base>>,
}

/// The rotary frequencies of a Llama-family config (`None` for GPT-2).
fn rope_frequencies(config: &ModelConfig) -> Option<Arc<RopeFrequencies>> {
    let llama = config.llama.as_ref()?;
    let rope = llama.rope;
    let freqs = match rope.llama3 {
        None => RopeFrequencies::new(rope.theta, llama.head_dim),
        Some(s) => RopeFrequencies::llama3(
            rope.theta,
            llama.head_dim,
            &Llama3RopeScaling {
                factor: s.factor,
                low_freq_factor: s.low_freq_factor,
                high_freq_factor: s.high_freq_factor,
                original_max_position_embeddings: s.original_max_position_embeddings,
            },
        ),
    };
    Some(Arc::new(freqs))
}

impl<T: Float> std::fmt::Debug for Model<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Model<{}>({:?}, {} params)",
            T::NAME,
            self.config,
            self.num_params()
        )
    }
}

impl<T: Float> Model<T> {
    /// A freshly initialized model: nanoGPT's init (see
    /// [`ModelParams::specs`]), drawn in the canonical order from
    /// `StdRng::seed_from_u64(seed)`.
    ///
    /// # Panics
    /// If the config is invalid (see [`ModelConfig::validate`]).
    pub fn new(config: ModelConfig, seed: u64) -> Model<T> {
        if let Err(e) = config.validate() {
            panic!("Model::new: {e}");
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let params = ModelParams::specs(&config).into_map(|spec| {
            let shape = IxDyn(&spec.shape);
            Arc::new(match spec.init {
                Init::Normal { std } => {
                    let normal = Normal::new(0.0, std).unwrap();
                    Tensor::from_shape_simple_fn(shape, || T::cast(normal.sample(&mut rng)))
                }
                Init::Zeros => Tensor::zeros(shape),
                Init::Ones => Tensor::ones(shape),
            })
        });
        Model::from_params(config, params)
    }

    /// The model of `config` with these parameters.
    fn from_params(config: ModelConfig, params: ModelParams<Arc<Tensor<T>>>) -> Model<T> {
        Model {
            rope: rope_frequencies(&config),
            config,
            params,
            lora: None,
            checkpointing: false,
            base_bf16: None,
        }
    }

    /// A model from named tensors given in the canonical order ([`param_specs`]),
    /// as read from a checkpoint.
    ///
    /// # Panics
    /// If names or shapes differ from [`param_specs`] of `config`.
    pub fn from_named(config: ModelConfig, params: Vec<(String, Tensor<T>)>) -> Model<T> {
        let specs = param_specs(&config);
        assert!(
            specs.len() == params.len(),
            "Model::from_named: {} tensors for a config that has {}",
            params.len(),
            specs.len()
        );
        for ((name, shape), (got_name, tensor)) in specs.iter().zip(&params) {
            assert!(
                name == got_name && tensor.shape() == &shape[..],
                "Model::from_named: expected {name} {shape:?}, got {got_name} {:?}",
                tensor.shape()
            );
        }
        let tensors = params
            .into_iter()
            // moved, not copied, when already row-major (a copy of the
            // embedding would add its size to the peak of every load)
            .map(|(_, t)| match t.is_standard_layout() {
                true => Arc::new(t),
                false => Arc::new(t.as_standard_layout().into_owned()),
            })
            .collect();
        Model::from_params(config.clone(), ModelParams::from_vec(&config, tensors))
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The parameters (iterate them for the canonical order).
    pub fn params(&self) -> &ModelParams<Arc<Tensor<T>>> {
        &self.params
    }

    /// The parameters, for an optimizer step: `optimizer.step(model.params_mut(), &grads, lr)`
    /// (`Arc::make_mut` updates in place when nothing else holds the tensor).
    pub fn params_mut(&mut self) -> &mut ModelParams<Arc<Tensor<T>>> {
        &mut self.params
    }

    /// Parameter names (nanoGPT's), in the canonical order: the names of the
    /// checkpoint tensors and of the optimizer-state tensors.
    pub fn param_names(&self) -> Vec<String> {
        param_specs(&self.config)
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// `(name, tensor)` of every parameter, in the canonical order.
    pub fn named_params(&self) -> impl Iterator<Item = (String, &Arc<Tensor<T>>)> {
        self.param_names().into_iter().zip(self.params.iter())
    }

    /// Total number of scalars in the parameters (a tied head counted once),
    /// those of a bf16 base included.
    pub fn num_params(&self) -> usize {
        let bf16 = self.base_bf16.as_ref().map_or(0, |b| b.len());
        self.params.iter().map(|p| p.len()).sum::<usize>() + bf16
    }

    /// The same model with its frozen base stored as bf16 ([`crate::bf16_base`]):
    /// every block linear's weight, the token embedding and the LM head
    /// rounded to bf16 (half their memory), each read by a bf16 GEMM. Meant
    /// for a model with adapters, whose base never changes; only they train.
    /// [`Model::cast`] and [`Model::merge_lora`] widen the base back (exactly).
    pub fn with_bf16_base(mut self) -> Model<T> {
        if self.base_bf16.is_some() {
            return self;
        }
        let take = |w: &mut Arc<Tensor<T>>| {
            let values: Arc<Tensor<T>> = std::mem::replace(w, placeholder());
            round_matrix(&values)
        };
        let linears = self
            .params
            .linears_mut()
            .into_iter()
            .map(|l| take(&mut l.weight))
            .collect();
        let wte = take(&mut self.params.wte);
        let lm_head = self.params.lm_head.as_mut().map(take);
        self.base_bf16 = Some(Arc::new(Bf16Base {
            linears,
            wte,
            lm_head,
        }));
        self
    }

    /// The bf16 base, when the model has one ([`Model::with_bf16_base`]).
    pub fn bf16_base(&self) -> Option<&Bf16Base> {
        self.base_bf16.as_deref()
    }

    /// The parameters with a bf16 base widened back into them (exact); the
    /// model's own parameters when it has none.
    fn full_params(&self) -> ModelParams<Arc<Tensor<T>>> {
        let mut params = self.params.clone();
        if let Some(base) = &self.base_bf16 {
            for (linear, w) in params.linears_mut().into_iter().zip(&base.linears) {
                linear.weight = widen_matrix(w);
            }
            params.wte = widen_matrix(&base.wte);
            if let (Some(head), Some(w)) = (params.lm_head.as_mut(), &base.lm_head) {
                *head = widen_matrix(w);
            }
        }
        params
    }

    /// Every parameter as a leaf of `tape`, without a copy. On a no-grad tape
    /// they are constants. With adapters, the base parameters are constants
    /// (no gradient, no weight-gradient GEMM), and the adapters are leaves
    /// set into their layers ([`crate::params::Linear::lora`]), without dropout.
    pub fn bind(&self, tape: &Tape<T>) -> ModelParams<Var<T>> {
        self.bind_with_dropout(tape, None)
    }

    /// [`Model::bind`] for a training step: the adapters' dropout
    /// (`lora_dropout`) draws its masks from `dropout_seed`, each layer its
    /// own.
    pub fn bind_for_training(&self, tape: &Tape<T>, dropout_seed: u64) -> ModelParams<Var<T>> {
        self.bind_with_dropout(tape, Some(dropout_seed))
    }

    fn bind_with_dropout(&self, tape: &Tape<T>, dropout_seed: Option<u64>) -> ModelParams<Var<T>> {
        // A base under adapters, or stored as bf16, is frozen.
        let frozen = self.lora.is_some() || self.base_bf16.is_some();
        let mut bound = self.params.map(|p| match frozen {
            true => tape.constant(p.clone()),
            false => tape.leaf(p.clone()),
        });
        if let Some(base) = &self.base_bf16 {
            for (linear, w) in bound.linears_mut().into_iter().zip(&base.linears) {
                linear.weight_bf16 = Some(w.clone());
            }
        }
        let Some(lora) = &self.lora else {
            return bound;
        };
        let (scale, p) = (lora.config.scale(), lora.config.dropout);
        for (layer, (linear, pair)) in bound.linears_mut().into_iter().zip(&lora.pairs).enumerate()
        {
            let Some(pair) = pair else { continue };
            linear.lora = Some(LoraAdapter {
                a: tape.leaf(pair.a.clone()),
                b: tape.leaf(pair.b.clone()),
                scale,
                dropout: dropout_seed.filter(|_| p > 0.0).map(|seed| Dropout {
                    p,
                    // one mask stream per layer
                    seed: splitmix64(seed ^ layer as u64),
                }),
            });
        }
        bound
    }

    /// Gradient checkpointing (transformers' `gradient_checkpointing_enable`):
    /// on a tape that records gradients, each block keeps only its input; its
    /// activations are computed again, block by block, in the backward pass
    /// (`Block::forward_checkpointed`). The activations of a step then take
    /// one block's worth of memory instead of all of them, for one more
    /// forward pass of the blocks. The gradients are the same.
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    /// The adapters, if the model has them.
    pub fn lora(&self) -> Option<&Lora<T>> {
        self.lora.as_ref()
    }

    /// The same base with these adapters (they must be for this config:
    /// one entry per linear layer, made by [`Lora::new`] or [`Lora::load`]).
    ///
    /// # Panics
    /// If `lora` has another number of layers than this model.
    pub fn with_lora(mut self, lora: Lora<T>) -> Model<T> {
        assert_eq!(
            lora.pairs.len(),
            self.params.linears().len(),
            "Model::with_lora: adapters for another model"
        );
        self.lora = Some(lora);
        self
    }

    /// The base model alone: the same weights (shared, not copied), no adapters.
    pub fn without_lora(&self) -> Model<T> {
        Model {
            lora: None,
            ..self.clone()
        }
    }

    /// The parameters a training step updates, in order: the adapters'
    /// A and B when the model has adapters, every parameter otherwise.
    pub fn trainable_params(&self) -> Vec<&Arc<Tensor<T>>> {
        match &self.lora {
            Some(lora) => lora.tensors(),
            None => self.params.iter().collect(),
        }
    }

    /// [`Model::trainable_params`], mutably: `optimizer.step(model.trainable_params_mut(), &grads, lr)`.
    pub fn trainable_params_mut(&mut self) -> Vec<&mut Arc<Tensor<T>>> {
        match &mut self.lora {
            Some(lora) => lora.tensors_mut(),
            None => self.params.iter_mut().collect(),
        }
    }

    /// The names of [`Model::trainable_params`]: PEFT's adapter keys, or the
    /// parameter names ([`Model::param_names`]).
    pub fn trainable_names(&self) -> Vec<String> {
        match &self.lora {
            Some(lora) => lora.names(&self.config),
            None => self.param_names(),
        }
    }

    /// The bound [`Model::trainable_params`] of `params` (from [`Model::bind`]
    /// of this model), in the same order: where a step reads its gradients.
    pub fn trainable_vars<'a>(&self, params: &'a ModelParams<Var<T>>) -> Vec<&'a Var<T>> {
        match &self.lora {
            Some(_) => params
                .linears()
                .into_iter()
                .filter_map(|l| l.lora.as_ref())
                .flat_map(|l| [&l.a, &l.b])
                .collect(),
            None => params.iter().collect(),
        }
    }

    /// Scalars in [`Model::trainable_params`].
    pub fn num_trainable_params(&self) -> usize {
        self.trainable_params().iter().map(|p| p.len()).sum()
    }

    /// The output of `ln_f`: (B, T, C), for token `ids` (B*T, row-major) and
    /// `params` from [`Model::bind`].
    ///
    /// # Panics
    /// If `seq_len > block_size`, `ids.len() != batch * seq_len`, or an id is
    /// out of the vocabulary.
    pub fn hidden_states(
        &self,
        tape: &Tape<T>,
        params: &ModelParams<Var<T>>,
        ids: &[usize],
        batch: usize,
        seq_len: usize,
    ) -> Var<T> {
        assert!(
            seq_len <= self.config.block_size,
            "Model::hidden_states: sequence length {seq_len} > block_size {}",
            self.config.block_size
        );
        self.decoder(tape, params, ids, batch, seq_len, None)
    }

    /// The output of `ln_f`: (B, T, C), for token `ids` (B*T) at their own
    /// `positions` (B*T, each below `block_size`), where sequence `b` has
    /// `lengths[b]` real tokens and the key gap `gaps[b]` of
    /// [`Tape::segment_attention`]. Prefix sharing lays a pair out as
    /// `[prompt | chosen | rejected]` with the rejected positions restarting
    /// at `len(prompt)` and the gap `P..P+C`, so each response sees exactly
    /// what it would see after the prompt alone; `T` may then pass
    /// `block_size`. Every layer but the attention runs on the N real
    /// positions only ([`UnpaddedRows`]): padding costs no GEMM rows. The
    /// rows of padding positions are unspecified (never scored).
    ///
    /// # Panics
    /// If the lengths differ, a position is `>= block_size`, or an id is out
    /// of the vocabulary.
    #[allow(clippy::too_many_arguments)]
    pub fn hidden_states_segmented(
        &self,
        tape: &Tape<T>,
        params: &ModelParams<Var<T>>,
        ids: &[usize],
        positions: &[usize],
        lengths: &[usize],
        gaps: &[KeyGap],
        seq_len: usize,
    ) -> Var<T> {
        let batch = lengths.len();
        assert!(
            ids.len() == batch * seq_len
                && positions.len() == batch * seq_len
                && gaps.len() == batch,
            "Model::hidden_states_segmented: {} ids, {} positions and {} gaps for batch {batch} x seq_len {seq_len}",
            ids.len(),
            positions.len(),
            gaps.len()
        );
        let block_size = self.config.block_size;
        assert!(
            positions.iter().all(|&p| p < block_size),
            "Model::hidden_states_segmented: a position >= block_size {block_size}"
        );
        let rows = UnpaddedRows::new(lengths, gaps, seq_len);
        let real_ids: Vec<usize> = rows.real.iter().map(|&i| ids[i]).collect();
        let real_positions: Vec<usize> = rows.real.iter().map(|&i| positions[i]).collect();
        // (N) with padding; (B, T) without, where the real rows are all of them
        let shape = if rows.has_padding() {
            vec![rows.real.len()]
        } else {
            vec![batch, seq_len]
        };
        // x = wte[idx] (+ wpe[t]), real positions only
        let mut x = self.embed(tape, params, &real_ids, &real_positions, &shape); // (N, C) or (B, T, C)
        let context = self.block_context(&real_positions);
        if self.checkpointing && tape.grad_enabled() {
            let saved = SavedContext::new(self, real_positions.clone(), Some(rows.clone()));
            for block in &params.h {
                x = block.forward_checkpointed(tape, &x, &saved); // (N, C)
            }
        } else {
            for block in &params.h {
                let mode = AttentionMode::Segmented(&rows);
                x = block.forward(tape, &x, context, mode); // (N, C)
            }
        }
        let hidden = params.ln_f.forward(tape, &x, context.norm); // (N, C) or (B, T, C)
        if rows.has_padding() {
            tape.embedding(&hidden, &rows.padded, &[batch, seq_len]) // (B, T, C)
        } else {
            hidden
        }
    }

    /// The output of `ln_f`: (1, T, C), for the `ids` that continue the one
    /// sequence held in `cache`, at positions `cache.len()..cache.len() + T`.
    /// Each block attends to its cached keys and values and appends the new
    /// ones. Runs on a no-grad tape only.
    ///
    /// # Panics
    /// If the positions would pass `block_size`, an id is out of the
    /// vocabulary, `cache` is not this model's, or `tape` records gradients.
    pub fn hidden_states_cached(
        &self,
        tape: &Tape<T>,
        params: &ModelParams<Var<T>>,
        ids: &[usize],
        cache: &mut KvCache<T>,
    ) -> Var<T> {
        let (start, block_size) = (cache.len(), self.config.block_size);
        assert!(
            start + ids.len() <= block_size,
            "Model::hidden_states_cached: {} cached + {} new positions > block_size {block_size}",
            start,
            ids.len()
        );
        assert!(
            cache.num_layers() == self.config.n_layer,
            "Model::hidden_states_cached: a cache of {} layers for a model of {}",
            cache.num_layers(),
            self.config.n_layer
        );
        self.decoder(tape, params, ids, 1, ids.len(), Some(cache))
    }

    /// From token ids to the output of `ln_f`, at positions from `cache.len()`
    /// on (0 without a cache).
    fn decoder(
        &self,
        tape: &Tape<T>,
        params: &ModelParams<Var<T>>,
        ids: &[usize],
        batch: usize,
        seq_len: usize,
        mut cache: Option<&mut KvCache<T>>,
    ) -> Var<T> {
        assert!(
            ids.len() == batch * seq_len,
            "Model::hidden_states: {} ids for batch {batch} x seq_len {seq_len}",
            ids.len()
        );
        assert!(
            params.h.len() == self.config.n_layer,
            "Model::hidden_states: {} blocks bound, the model has {}",
            params.h.len(),
            self.config.n_layer
        );
        let start = cache.as_ref().map_or(0, |cache| cache.len());
        // the position of every row of x: 0..T (from the cache's length) in each sequence
        let positions: Vec<usize> = (0..batch).flat_map(|_| start..start + seq_len).collect();

        // x = wte[idx] (+ wpe[t])
        let mut x = self.embed(tape, params, ids, &positions, &[batch, seq_len]); // (B, T, C)
        let context = self.block_context(&positions);
        if cache.is_none() && self.checkpointing && tape.grad_enabled() {
            let saved = SavedContext::new(self, positions.clone(), None);
            for block in &params.h {
                x = block.forward_checkpointed(tape, &x, &saved); // (B, T, C)
            }
            return params.ln_f.forward(tape, &x, context.norm);
        }
        for (layer, block) in params.h.iter().enumerate() {
            let mode = match cache.as_deref_mut() {
                None => AttentionMode::Causal,
                Some(cache) => AttentionMode::Cached(cache.layer_mut(layer)),
            };
            x = block.forward(tape, &x, context, mode); // (B, T, C)
        }
        params.ln_f.forward(tape, &x, context.norm)
    }

    /// x = wte[ids] (+ wpe[positions], GPT-2), of `shape` + (C); one
    /// position per id.
    fn embed(
        &self,
        tape: &Tape<T>,
        params: &ModelParams<Var<T>>,
        ids: &[usize],
        positions: &[usize],
        shape: &[usize],
    ) -> Var<T> {
        let tok_emb = match &self.base_bf16 {
            Some(base) => tape.embedding_bf16(&base.wte, ids, shape),
            None => tape.embedding(&params.wte, ids, shape),
        };
        match &params.wpe {
            Some(wpe) => tape.add(&tok_emb, &tape.embedding(wpe, positions, shape)),
            None => tok_emb,
        }
    }

    /// The [`BlockContext`] of rows at `positions`.
    fn block_context<'a>(&'a self, positions: &'a [usize]) -> BlockContext<'a> {
        BlockContext {
            norm: self.norm_kind(),
            heads: self.config.attention_heads(),
            rope: self.rope.as_deref().map(|freqs| (freqs, positions)),
        }
    }

    /// LayerNorm (GPT-2) or RMSNorm (the Llama family).
    pub fn norm_kind(&self) -> NormKind {
        match &self.config.llama {
            None => NormKind::LayerNorm,
            Some(llama) => NormKind::RmsNorm {
                eps: llama.rms_norm_eps,
            },
        }
    }

    /// logits = hidden @ W^T: (B, T, V), W the LM head ([`ModelParams::lm_head_weight`]).
    pub fn logits(&self, tape: &Tape<T>, params: &ModelParams<Var<T>>, hidden: &Var<T>) -> Var<T> {
        // W is (V, C), i.e. a Linear from C to V.
        match &self.base_bf16 {
            Some(base) => tape.linear_bf16(hidden, base.lm_head_weight(), None),
            None => tape.linear(hidden, params.lm_head_weight(), None),
        }
    }

    /// The summed log-prob of each sequence's targets, the LM head fused in
    /// ([`Tape::lm_head_logprobs`]): hidden: (S, T, C) from
    /// [`Model::hidden_states`], targets: S*T (the label of position t+1,
    /// or -100) -> (S).
    pub fn lm_head_logprobs(
        &self,
        tape: &Tape<T>,
        params: &ModelParams<Var<T>>,
        hidden: &Var<T>,
        targets: &[i64],
    ) -> Var<T> {
        match &self.base_bf16 {
            Some(base) => {
                LmHeadLogprobs::default().apply_bf16(tape, hidden, base.lm_head_weight(), targets)
            }
            None => tape.lm_head_logprobs(hidden, params.lm_head_weight(), targets),
        }
    }

    /// The logits (B, T, V) for token `ids` (B*T, row-major).
    pub fn forward(
        &self,
        tape: &Tape<T>,
        params: &ModelParams<Var<T>>,
        ids: &[usize],
        batch: usize,
        seq_len: usize,
    ) -> Var<T> {
        let hidden = self.hidden_states(tape, params, ids, batch, seq_len);
        self.logits(tape, params, &hidden)
    }

    /// The same model with every parameter converted to `U` (a bf16 base
    /// widened: the result has none).
    pub fn cast<U: Float>(&self) -> Model<U> {
        let mut model = Model::from_params(
            self.config.clone(),
            self.full_params()
                .map(|p| Arc::new(p.mapv(|x| U::cast(x.as_f64())))),
        );
        model.lora = self.lora.as_ref().map(Lora::cast);
        model
    }

    /// The same model in f64 (for gradient checks).
    pub fn to_f64(&self) -> Model<f64> {
        self.cast()
    }

    /// The same model in f32 (rounded).
    pub fn to_f32(&self) -> Model<f32> {
        self.cast()
    }
}

impl Model<f32> {
    /// The model with its adapters merged into the base weights, W + s · B A
    /// for each adapted layer (PEFT's `merge_and_unload`); a plain model is
    /// returned as it is. Only the adapted weights are copied.
    pub fn merge_lora(&self) -> Model<f32> {
        let mut merged = Model {
            params: self.full_params(),
            base_bf16: None,
            ..self.without_lora()
        };
        if let Some(lora) = &self.lora {
            let weights = merged
                .params
                .linears_mut()
                .into_iter()
                .map(|l| &mut l.weight);
            lora.merge_into(weights);
        }
        merged
    }
}
