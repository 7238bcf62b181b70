//! The GPT-2 / nanoGPT decoder (CONTRACT section 1), on the autograd tape.
//!
//! ```text
//! x = wte[idx] + wpe[t]                         (B, T, C)
//! for each block:
//!     x = x + attn(ln_1(x))                     causal multi-head self-attention
//!     x = x + mlp(ln_2(x))                      c_fc -> GELU(tanh) -> c_proj
//! x = ln_f(x)                                   (B, T, C)
//! logits = x @ wte^T                            (B, T, V), lm_head tied to wte
//! ```
//!
//! The parameters live in the model as shared tensors, in a fixed order with
//! nanoGPT's names (see [`param_specs`]). Each step binds them to a fresh
//! tape as leaves ([`Gpt::bind`]), runs the forward on the bound `Var`s, and
//! gets one gradient per parameter back from the backward pass, in the same
//! order. A frozen model runs on a no-grad tape, where the same code records
//! nothing and frees each activation as soon as it is used.

use std::sync::Arc;

use autograd::{Float, Tape, Tensor, Var};
use ndarray::IxDyn;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::config::GptConfig;

/// LayerNorm epsilon (GPT-2, PyTorch default).
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// Standard deviation of the nanoGPT init of weights and embeddings.
pub const INIT_STD: f64 = 0.02;

/// Every parameter tensor of a config, in the model's order: `(name, shape)`.
///
/// `transformer.wte.weight`, `transformer.wpe.weight`, then for each block
/// `ln_1.weight`, `ln_1.bias`, `attn.c_attn.weight`, `attn.c_attn.bias`,
/// `attn.c_proj.weight`, `attn.c_proj.bias`, `ln_2.weight`, `ln_2.bias`,
/// `mlp.c_fc.weight`, `mlp.c_fc.bias`, `mlp.c_proj.weight`, `mlp.c_proj.bias`
/// (prefixed `transformer.h.{i}.`), then `transformer.ln_f.weight`,
/// `transformer.ln_f.bias`. With `bias: false` every `.bias` is left out.
pub fn param_specs(config: &GptConfig) -> Vec<(String, Vec<usize>)> {
    let (v, l, c) = (config.vocab_size, config.block_size, config.n_embd);
    let mut specs = vec![
        ("transformer.wte.weight".to_string(), vec![v, c]),
        ("transformer.wpe.weight".to_string(), vec![l, c]),
    ];
    let mut push = |name: String, shape: Vec<usize>| {
        if config.bias || !name.ends_with(".bias") {
            specs.push((name, shape));
        }
    };
    for i in 0..config.n_layer {
        let p = format!("transformer.h.{i}.");
        push(format!("{p}ln_1.weight"), vec![c]);
        push(format!("{p}ln_1.bias"), vec![c]);
        push(format!("{p}attn.c_attn.weight"), vec![3 * c, c]);
        push(format!("{p}attn.c_attn.bias"), vec![3 * c]);
        push(format!("{p}attn.c_proj.weight"), vec![c, c]);
        push(format!("{p}attn.c_proj.bias"), vec![c]);
        push(format!("{p}ln_2.weight"), vec![c]);
        push(format!("{p}ln_2.bias"), vec![c]);
        push(format!("{p}mlp.c_fc.weight"), vec![4 * c, c]);
        push(format!("{p}mlp.c_fc.bias"), vec![4 * c]);
        push(format!("{p}mlp.c_proj.weight"), vec![c, 4 * c]);
        push(format!("{p}mlp.c_proj.bias"), vec![c]);
    }
    push("transformer.ln_f.weight".to_string(), vec![c]);
    push("transformer.ln_f.bias".to_string(), vec![c]);
    specs
}

/// Where one block's parameters sit in the parameter list (`None`: no bias).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockIndex {
    pub ln_1_w: usize,
    pub ln_1_b: Option<usize>,
    pub c_attn_w: usize,
    pub c_attn_b: Option<usize>,
    pub attn_proj_w: usize,
    pub attn_proj_b: Option<usize>,
    pub ln_2_w: usize,
    pub ln_2_b: Option<usize>,
    pub c_fc_w: usize,
    pub c_fc_b: Option<usize>,
    pub mlp_proj_w: usize,
    pub mlp_proj_b: Option<usize>,
}

/// Where every parameter sits in the parameter list.
#[derive(Debug, Clone)]
pub(crate) struct ParamIndex {
    pub wte: usize,
    pub wpe: usize,
    pub blocks: Vec<BlockIndex>,
    pub ln_f_w: usize,
    pub ln_f_b: Option<usize>,
}

impl ParamIndex {
    fn new(config: &GptConfig, names: &[String]) -> ParamIndex {
        let find = |name: &str| names.iter().position(|n| n == name);
        let get = |name: &str| find(name).unwrap_or_else(|| panic!("no parameter {name}"));
        let blocks = (0..config.n_layer)
            .map(|i| {
                let p = format!("transformer.h.{i}.");
                BlockIndex {
                    ln_1_w: get(&format!("{p}ln_1.weight")),
                    ln_1_b: find(&format!("{p}ln_1.bias")),
                    c_attn_w: get(&format!("{p}attn.c_attn.weight")),
                    c_attn_b: find(&format!("{p}attn.c_attn.bias")),
                    attn_proj_w: get(&format!("{p}attn.c_proj.weight")),
                    attn_proj_b: find(&format!("{p}attn.c_proj.bias")),
                    ln_2_w: get(&format!("{p}ln_2.weight")),
                    ln_2_b: find(&format!("{p}ln_2.bias")),
                    c_fc_w: get(&format!("{p}mlp.c_fc.weight")),
                    c_fc_b: find(&format!("{p}mlp.c_fc.bias")),
                    mlp_proj_w: get(&format!("{p}mlp.c_proj.weight")),
                    mlp_proj_b: find(&format!("{p}mlp.c_proj.bias")),
                }
            })
            .collect();
        ParamIndex {
            wte: get("transformer.wte.weight"),
            wpe: get("transformer.wpe.weight"),
            blocks,
            ln_f_w: get("transformer.ln_f.weight"),
            ln_f_b: find("transformer.ln_f.bias"),
        }
    }
}

/// A GPT-2 / nanoGPT decoder with its parameters.
#[derive(Clone)]
pub struct Gpt<T> {
    config: GptConfig,
    names: Vec<String>,
    params: Vec<Arc<Tensor<T>>>,
    pub(crate) index: ParamIndex,
}

impl<T: Float> std::fmt::Debug for Gpt<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Gpt<{}>({:?}, {} params)",
            T::NAME,
            self.config,
            self.num_params()
        )
    }
}

impl<T: Float> Gpt<T> {
    /// A freshly initialized model (nanoGPT's init, seeded):
    /// weights and both embeddings N(0, 0.02); every `c_proj.weight`
    /// N(0, 0.02 / sqrt(2 n_layer)) (GPT-2's scaling of the residual
    /// projections, so the residual stream does not grow with depth); biases
    /// 0; LayerNorm weights 1. Draws happen in parameter order.
    ///
    /// # Panics
    /// If the config is invalid (see [`GptConfig::validate`]).
    pub fn new(config: GptConfig, seed: u64) -> Gpt<T> {
        if let Err(e) = config.validate() {
            panic!("Gpt::new: {e}");
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let std_proj = INIT_STD / (2.0 * config.n_layer as f64).sqrt();
        let params = param_specs(&config)
            .into_iter()
            .map(|(name, shape)| {
                let is_layer_norm = name.contains(".ln_");
                let tensor = if is_layer_norm && name.ends_with(".weight") {
                    Tensor::ones(IxDyn(&shape))
                } else if name.ends_with(".bias") {
                    Tensor::zeros(IxDyn(&shape))
                } else {
                    let std = if name.ends_with("c_proj.weight") {
                        std_proj
                    } else {
                        INIT_STD
                    };
                    let normal = Normal::new(0.0, std).unwrap();
                    Tensor::from_shape_simple_fn(IxDyn(&shape), || T::cast(normal.sample(&mut rng)))
                };
                (name, tensor)
            })
            .collect();
        Gpt::from_named(config, params)
    }

    /// A model from its parameters, given in [`param_specs`] order.
    ///
    /// # Panics
    /// If names or shapes differ from [`param_specs`] of `config`.
    pub fn from_named(config: GptConfig, params: Vec<(String, Tensor<T>)>) -> Gpt<T> {
        let specs = param_specs(&config);
        assert!(
            specs.len() == params.len(),
            "Gpt::from_named: {} tensors for a config that has {}",
            params.len(),
            specs.len()
        );
        for ((name, shape), (got_name, tensor)) in specs.iter().zip(&params) {
            assert!(
                name == got_name && tensor.shape() == &shape[..],
                "Gpt::from_named: expected {name} {shape:?}, got {got_name} {:?}",
                tensor.shape()
            );
        }
        let names: Vec<String> = specs.into_iter().map(|(n, _)| n).collect();
        let index = ParamIndex::new(&config, &names);
        let params = params
            .into_iter()
            .map(|(_, t)| Arc::new(t.as_standard_layout().into_owned()))
            .collect();
        Gpt {
            config,
            names,
            params,
            index,
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// Parameter names (nanoGPT's), in parameter order.
    pub fn param_names(&self) -> &[String] {
        &self.names
    }

    /// The parameters, in [`Gpt::param_names`] order.
    pub fn params(&self) -> &[Arc<Tensor<T>>] {
        &self.params
    }

    /// The parameters, for an optimizer step (`Arc::make_mut` updates in
    /// place when nothing else holds the tensor).
    pub fn params_mut(&mut self) -> &mut [Arc<Tensor<T>>] {
        &mut self.params
    }

    /// Total number of scalars in the parameters (wte counted once: it is tied).
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| p.len()).sum()
    }

    /// The parameter called `name`, if any.
    pub fn param(&self, name: &str) -> Option<&Arc<Tensor<T>>> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.params[i])
    }

    /// Every parameter as a leaf of `tape`, in parameter order, without a copy.
    /// On a no-grad tape they are constants.
    pub fn bind(&self, tape: &Tape<T>) -> Vec<Var<T>> {
        self.params.iter().map(|p| tape.leaf(p.clone())).collect()
    }

    /// The output of `ln_f`: (B, T, C), for token `ids` (B*T, row-major) and
    /// `params` from [`Gpt::bind`].
    ///
    /// # Panics
    /// If `seq_len > block_size`, `ids.len() != batch * seq_len`, or an id is
    /// out of the vocabulary.
    pub fn hidden_states(
        &self,
        tape: &Tape<T>,
        params: &[Var<T>],
        ids: &[usize],
        batch: usize,
        seq_len: usize,
    ) -> Var<T> {
        let cfg = &self.config;
        assert!(
            seq_len <= cfg.block_size,
            "Gpt::hidden_states: sequence length {seq_len} > block_size {}",
            cfg.block_size
        );
        assert!(
            ids.len() == batch * seq_len,
            "Gpt::hidden_states: {} ids for batch {batch} x seq_len {seq_len}",
            ids.len()
        );
        assert!(
            params.len() == self.params.len(),
            "Gpt::hidden_states: {} params bound, the model has {}",
            params.len(),
            self.params.len()
        );
        let ix = &self.index;
        let p = |i: usize| &params[i];
        let pb = |i: Option<usize>| i.map(|i| &params[i]);
        let positions: Vec<usize> = (0..seq_len).collect();

        // x = wte[idx] + wpe[t]
        let tok_emb = tape.embedding(p(ix.wte), ids, &[batch, seq_len]); // (B, T, C)
        let pos_emb = tape.embedding(p(ix.wpe), &positions, &[seq_len]); // (T, C)
        let mut x = tape.add(&tok_emb, &pos_emb); // (B, T, C)
        drop((tok_emb, pos_emb));
        for blk in &ix.blocks {
            // x = x + attn(ln_1(x))
            let h = tape.layer_norm(&x, p(blk.ln_1_w), pb(blk.ln_1_b), LAYER_NORM_EPS);
            let qkv = tape.linear(&h, p(blk.c_attn_w), pb(blk.c_attn_b)); // (B, T, 3C)
            let att = tape.causal_attention(&qkv, cfg.n_head); // (B, T, C)
            let att_out = tape.linear(&att, p(blk.attn_proj_w), pb(blk.attn_proj_b));
            x = tape.add(&x, &att_out);
            // x = x + mlp(ln_2(x))
            let h = tape.layer_norm(&x, p(blk.ln_2_w), pb(blk.ln_2_b), LAYER_NORM_EPS);
            let fc = tape.gelu(&tape.linear(&h, p(blk.c_fc_w), pb(blk.c_fc_b))); // (B, T, 4C)
            let mlp_out = tape.linear(&fc, p(blk.mlp_proj_w), pb(blk.mlp_proj_b));
            x = tape.add(&x, &mlp_out);
        }
        tape.layer_norm(&x, p(ix.ln_f_w), pb(ix.ln_f_b), LAYER_NORM_EPS)
    }

    /// logits = hidden @ wte^T: (B, T, V), the LM head tied to the token table.
    pub fn logits(&self, tape: &Tape<T>, params: &[Var<T>], hidden: &Var<T>) -> Var<T> {
        // wte is (V, C), i.e. a Linear from C to V: exactly the tied lm_head.
        tape.linear(hidden, &params[self.index.wte], None)
    }

    /// The logits (B, T, V) for token `ids` (B*T, row-major).
    pub fn forward(
        &self,
        tape: &Tape<T>,
        params: &[Var<T>],
        ids: &[usize],
        batch: usize,
        seq_len: usize,
    ) -> Var<T> {
        let hidden = self.hidden_states(tape, params, ids, batch, seq_len);
        self.logits(tape, params, &hidden)
    }

    /// The same model with every parameter converted to `U`.
    pub fn cast<U: Float>(&self) -> Gpt<U> {
        Gpt {
            config: self.config,
            names: self.names.clone(),
            params: self
                .params
                .iter()
                .map(|p| Arc::new(p.mapv(|x| U::cast(x.as_f64()))))
                .collect(),
            index: self.index.clone(),
        }
    }

    /// The same model in f64 (for gradient checks).
    pub fn to_f64(&self) -> Gpt<f64> {
        self.cast()
    }

    /// The same model in f32 (rounded).
    pub fn to_f32(&self) -> Gpt<f32> {
        self.cast()
    }
}
