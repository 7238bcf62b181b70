//! The parameters as named structs mirroring nanoGPT's module tree (llm.c's
//! `ParameterTensors`), generic over what a parameter is. The Llama family
//! uses the same tree: its parts are the same roles under other names, and
//! the few parts only one architecture has are `Option`s (or [`Qkv`]).
//!
//! ```text
//! ModelParams     GPT-2 (nanoGPT) name              Llama-family (transformers) name     shape
//!   wte           transformer.wte.weight            model.embed_tokens.weight            (V, C)
//!   wpe           transformer.wpe.weight            -                                    (block_size, C)
//!   h[i]          transformer.h.{i}.                model.layers.{i}.
//!     ln_1          ln_1.weight, .bias                input_layernorm.weight             (C)
//!     attn.qkv      attn.c_attn.weight, .bias         self_attn.{q,k,v}_proj.weight, .bias (3C, C) / (NH hd, C), (KV hd, C) x 2
//!     attn.q_norm   -                                 self_attn.q_norm.weight (Qwen3)    (hd)
//!     attn.k_norm   -                                 self_attn.k_norm.weight (Qwen3)    (hd)
//!     attn.c_proj   attn.c_proj.weight, .bias         self_attn.o_proj.weight            (C, NH hd)
//!     ln_2          ln_2.weight, .bias                post_attention_layernorm.weight    (C)
//!     mlp.gate      -                                 mlp.gate_proj.weight               (I, C)
//!     mlp.c_fc      mlp.c_fc.weight, .bias            mlp.up_proj.weight                 (4C, C) / (I, C)
//!     mlp.c_proj    mlp.c_proj.weight, .bias          mlp.down_proj.weight               (C, 4C) / (C, I)
//!   ln_f          transformer.ln_f.weight, .bias    model.norm.weight                    (C)
//!   lm_head       -                                 lm_head.weight (untied)              (V, C)
//! ```
//!
//! GPT-2 with `bias: false` has no `bias`; the Llama family has those its
//! [`LlamaConfig`] names. The same tree holds different things: the model
//! stores `ModelParams<Arc<Tensor<T>>>`, a step binds them to a tape as
//! `ModelParams<Var<T>>` (see [`crate::Model::bind`]), and
//! [`ModelParams::specs`] describes them as `ModelParams<ParamSpec>`: name,
//! shape and init of each, the one place where these are written down.
//!
//! Whatever needs the parameters as a flat list (checkpoint files, the
//! optimizer, the gradients, the optimizer-state names) uses one canonical
//! order: the order of the table above, a bias right after its weight. It is
//! defined once, by [`ModelParams::into_map`]; [`ModelParams::iter`],
//! [`ModelParams::iter_mut`], [`ModelParams::into_vec`] and
//! [`ModelParams::from_vec`] all go through it. That order and the names are
//! those of the checkpoints on disk.

use std::sync::Arc;

use autograd::Bf16Matrix;

use crate::config::{LlamaConfig, ModelConfig};
use crate::lora::LoraAdapter;

/// Standard deviation of the nanoGPT init of weights and embeddings.
pub const INIT_STD: f64 = 0.02;

/// How a parameter starts (nanoGPT's `_init_weights`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Drawn from N(0, std^2).
    Normal {
        /// The standard deviation.
        std: f64,
    },
    /// All 0 (biases).
    Zeros,
    /// All 1 (norm weights).
    Ones,
}

/// The name (nanoGPT's), shape and init of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// E.g. `transformer.h.0.attn.c_attn.weight`.
    pub name: String,
    /// E.g. `[3C, C]`.
    pub shape: Vec<usize>,
    /// How [`crate::Model::new`] fills it.
    pub init: Init,
}

/// A linear layer: `y = x @ weight^T + bias`, weight (OUT, IN), bias (OUT),
/// plus `lora`'s low-rank term where it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear<P> {
    /// (OUT, IN), PyTorch's layout.
    pub weight: P,
    /// (OUT), absent with `bias: false`.
    pub bias: Option<P>,
    /// A LoRA adapter ([`crate::lora`]). It is not one of the model's
    /// parameters: it is set only in the parameters that a model with
    /// adapters binds to a tape ([`crate::Model::bind`]), and the maps of
    /// this tree (the canonical order) leave it out.
    pub lora: Option<LoraAdapter<P>>,
    /// The weight stored as bf16 ([`crate::Model::with_bf16_base`]): when
    /// set, it is what the layer multiplies, and `weight` is an empty
    /// placeholder. Like `lora`, it is set only in the parameters that a
    /// model binds to a tape, and the maps of this tree leave it out.
    pub weight_bf16: Option<Arc<Bf16Matrix>>,
}

/// A norm over the last axis: GPT-2's LayerNorm (weight, bias) or the Llama
/// family's RMSNorm (weight only); the config says which.
#[derive(Debug, Clone, PartialEq)]
pub struct Norm<P> {
    /// (C), the scale.
    pub weight: P,
    /// (C), LayerNorm's shift; absent with `bias: false` and in RMSNorm.
    pub bias: Option<P>,
}

/// How the attention's queries, keys and values are projected from x.
#[derive(Debug, Clone, PartialEq)]
pub enum Qkv<P> {
    /// GPT-2's `c_attn`: one Linear C -> 3C, q, k, v in that order along
    /// its output axis.
    Fused(Linear<P>),
    /// The Llama family's `q_proj` (C -> NH hd), `k_proj` and `v_proj`
    /// (C -> KV hd each).
    Split {
        /// `q_proj`.
        q: Linear<P>,
        /// `k_proj`.
        k: Linear<P>,
        /// `v_proj`.
        v: Linear<P>,
    },
}

/// Causal self-attention: q, k, v projected from x ([`Qkv`]), Qwen3's
/// per-head norms of q and k, and `c_proj` (`o_proj`), which mixes the
/// heads' outputs (NH hd -> C).
#[derive(Debug, Clone, PartialEq)]
pub struct CausalSelfAttention<P> {
    /// The projections of q, k and v.
    pub qkv: Qkv<P>,
    /// (hd): RMSNorm of each query head (Qwen3).
    pub q_norm: Option<Norm<P>>,
    /// (hd): RMSNorm of each key head (Qwen3).
    pub k_norm: Option<Norm<P>>,
    /// NH hd -> C.
    pub c_proj: Linear<P>,
}

/// The MLP: `c_proj(gelu(c_fc(x)))` (GPT-2, 4C wide), or with a `gate`
/// `c_proj(silu(gate(x)) * c_fc(x))` (the Llama family's SwiGLU, whose
/// `gate_proj`, `up_proj`, `down_proj` are `gate`, `c_fc`, `c_proj`).
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp<P> {
    /// C -> I: the Llama family's `gate_proj`.
    pub gate: Option<Linear<P>>,
    /// C -> 4C (`up_proj`: C -> I).
    pub c_fc: Linear<P>,
    /// 4C -> C (`down_proj`: I -> C).
    pub c_proj: Linear<P>,
}

/// One transformer block: `x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`.
#[derive(Debug, Clone, PartialEq)]
pub struct Block<P> {
    /// Before the attention.
    pub ln_1: Norm<P>,
    /// Causal multi-head self-attention.
    pub attn: CausalSelfAttention<P>,
    /// Before the MLP.
    pub ln_2: Norm<P>,
    /// The feed-forward network.
    pub mlp: Mlp<P>,
}

/// Every parameter of a decoder (nanoGPT's `transformer` module, and the
/// Llama family's untied LM head).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelParams<P> {
    /// Token embeddings (V, C), also the LM head when it is tied.
    pub wte: P,
    /// Position embeddings (block_size, C): GPT-2 only.
    pub wpe: Option<P>,
    /// The blocks, in order.
    pub h: Vec<Block<P>>,
    /// The final norm.
    pub ln_f: Norm<P>,
    /// The LM head (V, C) when it is not `wte`.
    pub lm_head: Option<P>,
}

/// Parameters of `config` for gradient checks of the whole model, in the
/// canonical order: uniform random values scaled by 0.3 (the 0.02 init would
/// make every gradient tiny), LayerNorm weights `1 + 0.2 u` (around 1, as a
/// trained model's), seeded.
pub fn gradcheck_params(config: &ModelConfig, seed: u64) -> Vec<autograd::Tensor<f64>> {
    let specs = ModelParams::specs(config).into_vec();
    let shapes: Vec<&[usize]> = specs.iter().map(|s| &s.shape[..]).collect();
    autograd::gradcheck::random_inputs(&shapes, seed)
        .into_iter()
        .zip(&specs)
        .map(|(x, spec)| match spec.init {
            Init::Ones => x.mapv(|v| 1.0 + 0.2 * v),
            _ => x.mapv(|v| 0.3 * v),
        })
        .collect()
}

impl ModelParams<ParamSpec> {
    /// The name, shape and init of every parameter of `config`.
    ///
    /// Init (nanoGPT): weights and embeddings N(0, 0.02); GPT-2's every
    /// `c_proj.weight` N(0, 0.02 / sqrt(2 n_layer)) (GPT-2's scaling of the
    /// residual projections: each block adds two to the residual stream, whose
    /// variance then does not grow with depth); biases 0; norm weights 1.
    /// The Llama family is initialized as transformers does: every weight
    /// N(0, 0.02) (`initializer_range`).
    pub fn specs(config: &ModelConfig) -> ModelParams<ParamSpec> {
        match &config.llama {
            None => Self::gpt2_specs(config),
            Some(llama) => Self::llama_specs(config, llama),
        }
    }

    fn gpt2_specs(config: &ModelConfig) -> ModelParams<ParamSpec> {
        let (v, l, c) = (config.vocab_size, config.block_size, config.n_embd);
        let std_proj = INIT_STD / (2.0 * config.n_layer as f64).sqrt();
        let linear = |name: String, out: usize, inp: usize, std: f64| {
            linear_spec(name, out, inp, std, config.bias)
        };
        let layer_norm = |name: String| norm_spec(name, c, config.bias);
        ModelParams {
            wte: spec("transformer.wte.weight", vec![v, c], NORMAL),
            wpe: Some(spec("transformer.wpe.weight", vec![l, c], NORMAL)),
            h: (0..config.n_layer)
                .map(|i| {
                    let p = format!("transformer.h.{i}");
                    Block {
                        ln_1: layer_norm(format!("{p}.ln_1")),
                        attn: CausalSelfAttention {
                            qkv: Qkv::Fused(linear(format!("{p}.attn.c_attn"), 3 * c, c, INIT_STD)),
                            q_norm: None,
                            k_norm: None,
                            c_proj: linear(format!("{p}.attn.c_proj"), c, c, std_proj),
                        },
                        ln_2: layer_norm(format!("{p}.ln_2")),
                        mlp: Mlp {
                            gate: None,
                            c_fc: linear(format!("{p}.mlp.c_fc"), 4 * c, c, INIT_STD),
                            c_proj: linear(format!("{p}.mlp.c_proj"), c, 4 * c, std_proj),
                        },
                    }
                })
                .collect(),
            ln_f: layer_norm("transformer.ln_f".into()),
            lm_head: None,
        }
    }

    fn llama_specs(config: &ModelConfig, llama: &LlamaConfig) -> ModelParams<ParamSpec> {
        let (v, c, i) = (config.vocab_size, config.n_embd, llama.intermediate_size);
        let heads = config.attention_heads();
        let (q_width, kv_width) = (heads.q_width(), heads.kv_width());
        let linear = |name: String, out: usize, inp: usize, bias: bool| {
            linear_spec(name, out, inp, INIT_STD, bias)
        };
        let rms_norm = |name: String, size: usize| norm_spec(name, size, false);
        ModelParams {
            wte: spec("model.embed_tokens.weight", vec![v, c], NORMAL),
            wpe: None,
            h: (0..config.n_layer)
                .map(|n| {
                    let p = format!("model.layers.{n}");
                    let attn = format!("{p}.self_attn");
                    Block {
                        ln_1: rms_norm(format!("{p}.input_layernorm"), c),
                        attn: CausalSelfAttention {
                            qkv: Qkv::Split {
                                q: linear(format!("{attn}.q_proj"), q_width, c, llama.qkv_bias),
                                k: linear(format!("{attn}.k_proj"), kv_width, c, llama.qkv_bias),
                                v: linear(format!("{attn}.v_proj"), kv_width, c, llama.qkv_bias),
                            },
                            q_norm: llama
                                .qk_norm
                                .then(|| rms_norm(format!("{attn}.q_norm"), heads.head_dim)),
                            k_norm: llama
                                .qk_norm
                                .then(|| rms_norm(format!("{attn}.k_norm"), heads.head_dim)),
                            c_proj: linear(format!("{attn}.o_proj"), c, q_width, llama.o_bias),
                        },
                        ln_2: rms_norm(format!("{p}.post_attention_layernorm"), c),
                        mlp: Mlp {
                            gate: Some(linear(format!("{p}.mlp.gate_proj"), i, c, llama.mlp_bias)),
                            c_fc: linear(format!("{p}.mlp.up_proj"), i, c, llama.mlp_bias),
                            c_proj: linear(format!("{p}.mlp.down_proj"), c, i, llama.mlp_bias),
                        },
                    }
                })
                .collect(),
            ln_f: rms_norm("model.norm".into(), c),
            lm_head: (!llama.tie_word_embeddings)
                .then(|| spec("lm_head.weight", vec![v, c], NORMAL)),
        }
    }
}

const NORMAL: Init = Init::Normal { std: INIT_STD };

fn spec(name: impl Into<String>, shape: Vec<usize>, init: Init) -> ParamSpec {
    ParamSpec {
        name: name.into(),
        shape,
        init,
    }
}

/// `{name}.weight` (OUT, IN) drawn from N(0, std^2), and `{name}.bias` (OUT) of zeros when `bias`.
fn linear_spec(name: String, out: usize, inp: usize, std: f64, bias: bool) -> Linear<ParamSpec> {
    Linear {
        weight: spec(
            format!("{name}.weight"),
            vec![out, inp],
            Init::Normal { std },
        ),
        bias: bias.then(|| spec(format!("{name}.bias"), vec![out], Init::Zeros)),
        lora: None,
        weight_bf16: None,
    }
}

/// `{name}.weight` (size) of ones, and `{name}.bias` of zeros when `bias`.
fn norm_spec(name: String, size: usize, bias: bool) -> Norm<ParamSpec> {
    Norm {
        weight: spec(format!("{name}.weight"), vec![size], Init::Ones),
        bias: bias.then(|| spec(format!("{name}.bias"), vec![size], Init::Zeros)),
    }
}

/// Every parameter of `config` in the canonical order: `(name, shape)`, the
/// tensors of a checkpoint file.
pub fn param_specs(config: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    ModelParams::specs(config)
        .into_vec()
        .into_iter()
        .map(|spec| (spec.name, spec.shape))
        .collect()
}

impl<P> ModelParams<P> {
    /// The same tree with `f(p)` for every parameter `p`; `f` is called in
    /// the canonical order.
    ///
    /// This function (with the `into_map` of each part) is the one definition
    /// of that order: a struct expression evaluates its fields in the order
    /// they are written, so the order of the fields below is the order of the
    /// calls to `f`.
    pub fn into_map<Q>(self, mut f: impl FnMut(P) -> Q) -> ModelParams<Q> {
        ModelParams {
            wte: f(self.wte),
            wpe: self.wpe.map(&mut f),
            h: self.h.into_iter().map(|b| b.into_map(&mut f)).collect(),
            ln_f: self.ln_f.into_map(&mut f),
            lm_head: self.lm_head.map(&mut f),
        }
    }

    /// The same tree with `f(&p)` for every parameter, called in the canonical order.
    pub fn map<Q>(&self, f: impl FnMut(&P) -> Q) -> ModelParams<Q> {
        self.as_ref().into_map(f)
    }

    /// A tree of references to the parameters.
    pub fn as_ref(&self) -> ModelParams<&P> {
        ModelParams {
            wte: &self.wte,
            wpe: self.wpe.as_ref(),
            h: self.h.iter().map(Block::as_ref).collect(),
            ln_f: self.ln_f.as_ref(),
            lm_head: self.lm_head.as_ref(),
        }
    }

    /// A tree of mutable references to the parameters.
    pub fn as_mut(&mut self) -> ModelParams<&mut P> {
        ModelParams {
            wte: &mut self.wte,
            wpe: self.wpe.as_mut(),
            h: self.h.iter_mut().map(Block::as_mut).collect(),
            ln_f: self.ln_f.as_mut(),
            lm_head: self.lm_head.as_mut(),
        }
    }

    /// The parameters as a flat list, in the canonical order.
    pub fn into_vec(self) -> Vec<P> {
        let mut flat = Vec::new();
        self.into_map(|p| flat.push(p));
        flat
    }

    /// Every parameter, in the canonical order.
    pub fn iter(&self) -> std::vec::IntoIter<&P> {
        self.as_ref().into_vec().into_iter()
    }

    /// Every parameter, mutably, in the canonical order (e.g. for an optimizer step).
    pub fn iter_mut(&mut self) -> std::vec::IntoIter<&mut P> {
        self.as_mut().into_vec().into_iter()
    }

    /// The tree of `config` from a flat list in the canonical order (e.g. the
    /// leaves a gradient check makes).
    ///
    /// # Panics
    /// If `flat` does not hold exactly one value per parameter of `config`.
    pub fn from_vec(config: &ModelConfig, flat: Vec<P>) -> ModelParams<P> {
        let specs = ModelParams::specs(config);
        let expected = specs.iter().len();
        assert!(
            flat.len() == expected,
            "ModelParams::from_vec: {} values for a config that has {expected} parameters",
            flat.len()
        );
        let mut flat = flat.into_iter();
        specs.into_map(|_| flat.next().unwrap())
    }
}

impl<P> ModelParams<P> {
    /// Every linear layer of the blocks, in the canonical order: per block
    /// the q, k, v projections (or `c_attn`), `c_proj` (`o_proj`), then the
    /// MLP's `gate`, `c_fc` (`up_proj`) and `c_proj` (`down_proj`). These are
    /// the layers LoRA can adapt (the LM head is not one of them).
    pub fn linears(&self) -> Vec<&Linear<P>> {
        self.h.iter().flat_map(Block::linears).collect()
    }

    /// [`ModelParams::linears`], mutably.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear<P>> {
        self.h.iter_mut().flat_map(Block::linears_mut).collect()
    }
}

impl<P> Block<P> {
    /// Calls `f` on every tensor of the block, its LoRA adapters' A and B
    /// included (in no order that anything else relies on): what a
    /// recomputed block ([`crate::Model::set_gradient_checkpointing`]) binds
    /// again.
    pub fn visit_mut(&mut self, f: &mut impl FnMut(&mut P)) {
        let norm = |n: &mut Norm<P>, f: &mut dyn FnMut(&mut P)| {
            f(&mut n.weight);
            n.bias.iter_mut().for_each(&mut *f);
        };
        norm(&mut self.ln_1, f);
        norm(&mut self.ln_2, f);
        for n in [&mut self.attn.q_norm, &mut self.attn.k_norm]
            .into_iter()
            .flatten()
        {
            norm(n, f);
        }
        for linear in self.linears_mut() {
            f(&mut linear.weight);
            linear.bias.iter_mut().for_each(&mut *f);
            if let Some(lora) = &mut linear.lora {
                f(&mut lora.a);
                f(&mut lora.b);
            }
        }
    }

    /// The block's linear layers, in the order of [`ModelParams::linears`].
    fn linears(&self) -> Vec<&Linear<P>> {
        let mut linears = Vec::new();
        match &self.attn.qkv {
            Qkv::Fused(c_attn) => linears.push(c_attn),
            Qkv::Split { q, k, v } => linears.extend([q, k, v]),
        }
        linears.push(&self.attn.c_proj);
        linears.extend(self.mlp.gate.as_ref());
        linears.extend([&self.mlp.c_fc, &self.mlp.c_proj]);
        linears
    }

    /// [`Block::linears`], mutably.
    fn linears_mut(&mut self) -> Vec<&mut Linear<P>> {
        let mut linears = Vec::new();
        match &mut self.attn.qkv {
            Qkv::Fused(c_attn) => linears.push(c_attn),
            Qkv::Split { q, k, v } => linears.extend([q, k, v]),
        }
        linears.push(&mut self.attn.c_proj);
        linears.extend(self.mlp.gate.as_mut());
        linears.extend([&mut self.mlp.c_fc, &mut self.mlp.c_proj]);
        linears
    }
}

impl ModelParams<ParamSpec> {
    /// The module name of every linear layer of `config`, in the order of
    /// [`ModelParams::linears`]: its weight's name without `.weight`
    /// (`model.layers.0.self_attn.q_proj`, `transformer.h.0.attn.c_attn`),
    /// as PEFT names the modules it adapts.
    pub fn linear_modules(config: &ModelConfig) -> Vec<String> {
        ModelParams::specs(config)
            .linears()
            .iter()
            .map(|l| l.weight.name.trim_end_matches(".weight").to_string())
            .collect()
    }
}

impl<'a, P> IntoIterator for &'a ModelParams<P> {
    type Item = &'a P;
    type IntoIter = std::vec::IntoIter<&'a P>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, P> IntoIterator for &'a mut ModelParams<P> {
    type Item = &'a mut P;
    type IntoIter = std::vec::IntoIter<&'a mut P>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

// The parts, each in its field order (weight before bias).

impl<P> Block<P> {
    fn into_map<Q>(self, f: &mut impl FnMut(P) -> Q) -> Block<Q> {
        Block {
            ln_1: self.ln_1.into_map(f),
            attn: self.attn.into_map(f),
            ln_2: self.ln_2.into_map(f),
            mlp: self.mlp.into_map(f),
        }
    }

    fn as_ref(&self) -> Block<&P> {
        Block {
            ln_1: self.ln_1.as_ref(),
            attn: self.attn.as_ref(),
            ln_2: self.ln_2.as_ref(),
            mlp: self.mlp.as_ref(),
        }
    }

    fn as_mut(&mut self) -> Block<&mut P> {
        Block {
            ln_1: self.ln_1.as_mut(),
            attn: self.attn.as_mut(),
            ln_2: self.ln_2.as_mut(),
            mlp: self.mlp.as_mut(),
        }
    }
}

impl<P> CausalSelfAttention<P> {
    fn into_map<Q>(self, f: &mut impl FnMut(P) -> Q) -> CausalSelfAttention<Q> {
        CausalSelfAttention {
            qkv: self.qkv.into_map(f),
            q_norm: self.q_norm.map(|n| n.into_map(f)),
            k_norm: self.k_norm.map(|n| n.into_map(f)),
            c_proj: self.c_proj.into_map(f),
        }
    }

    fn as_ref(&self) -> CausalSelfAttention<&P> {
        CausalSelfAttention {
            qkv: self.qkv.as_ref(),
            q_norm: self.q_norm.as_ref().map(Norm::as_ref),
            k_norm: self.k_norm.as_ref().map(Norm::as_ref),
            c_proj: self.c_proj.as_ref(),
        }
    }

    fn as_mut(&mut self) -> CausalSelfAttention<&mut P> {
        CausalSelfAttention {
            qkv: self.qkv.as_mut(),
            q_norm: self.q_norm.as_mut().map(Norm::as_mut),
            k_norm: self.k_norm.as_mut().map(Norm::as_mut),
            c_proj: self.c_proj.as_mut(),
        }
    }
}

impl<P> Qkv<P> {
    fn into_map<Q>(self, f: &mut impl FnMut(P) -> Q) -> Qkv<Q> {
        match self {
            Qkv::Fused(c_attn) => Qkv::Fused(c_attn.into_map(f)),
            Qkv::Split { q, k, v } => Qkv::Split {
                q: q.into_map(f),
                k: k.into_map(f),
                v: v.into_map(f),
            },
        }
    }

    fn as_ref(&self) -> Qkv<&P> {
        match self {
            Qkv::Fused(c_attn) => Qkv::Fused(c_attn.as_ref()),
            Qkv::Split { q, k, v } => Qkv::Split {
                q: q.as_ref(),
                k: k.as_ref(),
                v: v.as_ref(),
            },
        }
    }

    fn as_mut(&mut self) -> Qkv<&mut P> {
        match self {
            Qkv::Fused(c_attn) => Qkv::Fused(c_attn.as_mut()),
            Qkv::Split { q, k, v } => Qkv::Split {
                q: q.as_mut(),
                k: k.as_mut(),
                v: v.as_mut(),
            },
        }
    }
}

impl<P> Mlp<P> {
    fn into_map<Q>(self, f: &mut impl FnMut(P) -> Q) -> Mlp<Q> {
        Mlp {
            gate: self.gate.map(|g| g.into_map(f)),
            c_fc: self.c_fc.into_map(f),
            c_proj: self.c_proj.into_map(f),
        }
    }

    fn as_ref(&self) -> Mlp<&P> {
        Mlp {
            gate: self.gate.as_ref().map(Linear::as_ref),
            c_fc: self.c_fc.as_ref(),
            c_proj: self.c_proj.as_ref(),
        }
    }

    fn as_mut(&mut self) -> Mlp<&mut P> {
        Mlp {
            gate: self.gate.as_mut().map(Linear::as_mut),
            c_fc: self.c_fc.as_mut(),
            c_proj: self.c_proj.as_mut(),
        }
    }
}

impl<P> Linear<P> {
    fn into_map<Q>(self, f: &mut impl FnMut(P) -> Q) -> Linear<Q> {
        Linear {
            weight: f(self.weight),
            bias: self.bias.map(f),
            lora: None,
            weight_bf16: None,
        }
    }

    fn as_ref(&self) -> Linear<&P> {
        Linear {
            weight: &self.weight,
            bias: self.bias.as_ref(),
            lora: None,
            weight_bf16: None,
        }
    }

    fn as_mut(&mut self) -> Linear<&mut P> {
        Linear {
            weight: &mut self.weight,
            bias: self.bias.as_mut(),
            lora: None,
            weight_bf16: None,
        }
    }
}

impl<P> Norm<P> {
    fn into_map<Q>(self, f: &mut impl FnMut(P) -> Q) -> Norm<Q> {
        Norm {
            weight: f(self.weight),
            bias: self.bias.map(f),
        }
    }

    fn as_ref(&self) -> Norm<&P> {
        Norm {
            weight: &self.weight,
            bias: self.bias.as_ref(),
        }
    }

    fn as_mut(&mut self) -> Norm<&mut P> {
        Norm {
            weight: &mut self.weight,
            bias: self.bias.as_mut(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bias: bool) -> ModelConfig {
        ModelConfig {
            vocab_size: 5,
            block_size: 3,
            n_layer: 2,
            n_head: 1,
            n_embd: 2,
            bias,
            llama: None,
        }
    }

    /// The order and names of the checkpoints on disk, written out by hand.
    #[test]
    fn canonical_order_and_names() {
        let block = |i: usize| {
            [
                "ln_1.weight",
                "ln_1.bias",
                "attn.c_attn.weight",
                "attn.c_attn.bias",
                "attn.c_proj.weight",
                "attn.c_proj.bias",
                "ln_2.weight",
                "ln_2.bias",
                "mlp.c_fc.weight",
                "mlp.c_fc.bias",
                "mlp.c_proj.weight",
                "mlp.c_proj.bias",
            ]
            .map(|n| format!("transformer.h.{i}.{n}"))
        };
        let mut expected = vec![
            "transformer.wte.weight".to_string(),
            "transformer.wpe.weight".to_string(),
        ];
        expected.extend(block(0));
        expected.extend(block(1));
        expected.extend([
            "transformer.ln_f.weight".into(),
            "transformer.ln_f.bias".into(),
        ]);
        let names = |bias| -> Vec<String> {
            param_specs(&config(bias))
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        assert_eq!(names(true), expected);
        expected.retain(|n| !n.ends_with(".bias"));
        assert_eq!(names(false), expected);

        let shapes: Vec<Vec<usize>> = param_specs(&config(true))
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(shapes[..4], [vec![5, 2], vec![3, 2], vec![2], vec![2]]);
        assert_eq!(shapes[4..6], [vec![6, 2], vec![6]]);
        assert_eq!(shapes[12..14], [vec![2, 8], vec![2]]);
    }

    /// Every flat view (by value, by reference, mutable, rebuilt) has the same order.
    #[test]
    fn every_flat_view_has_the_canonical_order() {
        for bias in [true, false] {
            let specs = ModelParams::specs(&config(bias));
            let names: Vec<String> = specs
                .clone()
                .into_vec()
                .into_iter()
                .map(|s| s.name)
                .collect();
            let by_ref: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
            assert_eq!(by_ref, names);
            let mut numbered = specs.map(|_| 0usize);
            for (i, n) in numbered.iter_mut().enumerate() {
                *n = i;
            }
            assert_eq!(
                numbered.clone().into_vec(),
                (0..names.len()).collect::<Vec<_>>()
            );
            let rebuilt = ModelParams::from_vec(&config(bias), names.clone());
            assert_eq!(rebuilt, specs.map(|s| s.name.clone()));
            assert_eq!(
                rebuilt.h[1].mlp.c_fc.weight,
                "transformer.h.1.mlp.c_fc.weight"
            );
        }
    }
}
