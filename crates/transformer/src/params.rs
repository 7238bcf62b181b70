//! The parameters as named structs mirroring nanoGPT's module tree (llm.c's
//! `ParameterTensors`), generic over what a parameter is.
//!
//! ```text
//! ModelParams                            nanoGPT name                 shape
//!   wte                                transformer.wte.weight       (V, C)
//!   wpe                                transformer.wpe.weight       (block_size, C)
//!   h: one Block per layer i           transformer.h.{i}.
//!     ln_1: LayerNorm                    ln_1.weight, ln_1.bias     (C), (C)
//!     attn: CausalSelfAttention
//!       c_attn: Linear                   attn.c_attn.weight, .bias  (3C, C), (3C)
//!       c_proj: Linear                   attn.c_proj.weight, .bias  (C, C), (C)
//!     ln_2: LayerNorm                    ln_2.weight, ln_2.bias     (C), (C)
//!     mlp: Mlp
//!       c_fc: Linear                     mlp.c_fc.weight, .bias     (4C, C), (4C)
//!       c_proj: Linear                   mlp.c_proj.weight, .bias   (C, 4C), (C)
//!   ln_f: LayerNorm                    transformer.ln_f.weight, .bias  (C), (C)
//! ```
//!
//! With `bias: false` every `bias` is `None`. The same tree holds different
//! things: the model stores `ModelParams<Arc<Tensor<T>>>`, a step binds them to
//! a tape as `ModelParams<Var<T>>` (see [`crate::Model::bind`]), and
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

use crate::config::ModelConfig;

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
    /// All 1 (LayerNorm weights).
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

/// A linear layer: `y = x @ weight^T + bias`, weight (OUT, IN), bias (OUT).
#[derive(Debug, Clone, PartialEq)]
pub struct Linear<P> {
    /// (OUT, IN), PyTorch's layout.
    pub weight: P,
    /// (OUT), absent with `bias: false`.
    pub bias: Option<P>,
}

/// A LayerNorm over the last axis: weight, bias (C).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm<P> {
    /// (C), the scale.
    pub weight: P,
    /// (C), absent with `bias: false`.
    pub bias: Option<P>,
}

/// nanoGPT's `CausalSelfAttention`: `c_attn` makes q, k, v (C -> 3C), `c_proj`
/// mixes the heads' outputs (C -> C).
#[derive(Debug, Clone, PartialEq)]
pub struct CausalSelfAttention<P> {
    /// C -> 3C: q, k, v in that order along the output axis.
    pub c_attn: Linear<P>,
    /// C -> C.
    pub c_proj: Linear<P>,
}

/// nanoGPT's `MLP`: `c_fc` (C -> 4C), GELU, `c_proj` (4C -> C).
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp<P> {
    /// C -> 4C.
    pub c_fc: Linear<P>,
    /// 4C -> C.
    pub c_proj: Linear<P>,
}

/// One transformer block: `x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`.
#[derive(Debug, Clone, PartialEq)]
pub struct Block<P> {
    /// Before the attention.
    pub ln_1: LayerNorm<P>,
    /// Causal multi-head self-attention.
    pub attn: CausalSelfAttention<P>,
    /// Before the MLP.
    pub ln_2: LayerNorm<P>,
    /// The feed-forward network.
    pub mlp: Mlp<P>,
}

/// Every parameter of a GPT (nanoGPT's `transformer` module; the LM head is
/// `wte` itself, tied).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelParams<P> {
    /// Token embeddings (V, C), also the LM head.
    pub wte: P,
    /// Position embeddings (block_size, C).
    pub wpe: P,
    /// The blocks, in order.
    pub h: Vec<Block<P>>,
    /// The final LayerNorm.
    pub ln_f: LayerNorm<P>,
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
    /// Init (nanoGPT): weights and both embeddings N(0, 0.02); every
    /// `c_proj.weight` N(0, 0.02 / sqrt(2 n_layer)) (GPT-2's scaling of the
    /// residual projections: each block adds two to the residual stream, whose
    /// variance then does not grow with depth); biases 0; LayerNorm weights 1.
    pub fn specs(config: &ModelConfig) -> ModelParams<ParamSpec> {
        let (v, l, c) = (config.vocab_size, config.block_size, config.n_embd);
        let std_proj = INIT_STD / (2.0 * config.n_layer as f64).sqrt();
        let spec = |name: String, shape: Vec<usize>, init: Init| ParamSpec { name, shape, init };
        let bias = |name: &str, size: usize| {
            config
                .bias
                .then(|| spec(format!("{name}.bias"), vec![size], Init::Zeros))
        };
        let linear = |name: String, out: usize, inp: usize, std: f64| Linear {
            weight: spec(
                format!("{name}.weight"),
                vec![out, inp],
                Init::Normal { std },
            ),
            bias: bias(&name, out),
        };
        let layer_norm = |name: String| LayerNorm {
            weight: spec(format!("{name}.weight"), vec![c], Init::Ones),
            bias: bias(&name, c),
        };
        let normal = Init::Normal { std: INIT_STD };
        ModelParams {
            wte: spec("transformer.wte.weight".into(), vec![v, c], normal),
            wpe: spec("transformer.wpe.weight".into(), vec![l, c], normal),
            h: (0..config.n_layer)
                .map(|i| {
                    let p = format!("transformer.h.{i}");
                    Block {
                        ln_1: layer_norm(format!("{p}.ln_1")),
                        attn: CausalSelfAttention {
                            c_attn: linear(format!("{p}.attn.c_attn"), 3 * c, c, INIT_STD),
                            c_proj: linear(format!("{p}.attn.c_proj"), c, c, std_proj),
                        },
                        ln_2: layer_norm(format!("{p}.ln_2")),
                        mlp: Mlp {
                            c_fc: linear(format!("{p}.mlp.c_fc"), 4 * c, c, INIT_STD),
                            c_proj: linear(format!("{p}.mlp.c_proj"), c, 4 * c, std_proj),
                        },
                    }
                })
                .collect(),
            ln_f: layer_norm("transformer.ln_f".into()),
        }
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
            wpe: f(self.wpe),
            h: self.h.into_iter().map(|b| b.into_map(&mut f)).collect(),
            ln_f: self.ln_f.into_map(&mut f),
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
            wpe: &self.wpe,
            h: self.h.iter().map(Block::as_ref).collect(),
            ln_f: self.ln_f.as_ref(),
        }
    }

    /// A tree of mutable references to the parameters.
    pub fn as_mut(&mut self) -> ModelParams<&mut P> {
        ModelParams {
            wte: &mut self.wte,
            wpe: &mut self.wpe,
            h: self.h.iter_mut().map(Block::as_mut).collect(),
            ln_f: self.ln_f.as_mut(),
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
            attn: CausalSelfAttention {
                c_attn: self.attn.c_attn.into_map(f),
                c_proj: self.attn.c_proj.into_map(f),
            },
            ln_2: self.ln_2.into_map(f),
            mlp: Mlp {
                c_fc: self.mlp.c_fc.into_map(f),
                c_proj: self.mlp.c_proj.into_map(f),
            },
        }
    }

    fn as_ref(&self) -> Block<&P> {
        Block {
            ln_1: self.ln_1.as_ref(),
            attn: CausalSelfAttention {
                c_attn: self.attn.c_attn.as_ref(),
                c_proj: self.attn.c_proj.as_ref(),
            },
            ln_2: self.ln_2.as_ref(),
            mlp: Mlp {
                c_fc: self.mlp.c_fc.as_ref(),
                c_proj: self.mlp.c_proj.as_ref(),
            },
        }
    }

    fn as_mut(&mut self) -> Block<&mut P> {
        Block {
            ln_1: self.ln_1.as_mut(),
            attn: CausalSelfAttention {
                c_attn: self.attn.c_attn.as_mut(),
                c_proj: self.attn.c_proj.as_mut(),
            },
            ln_2: self.ln_2.as_mut(),
            mlp: Mlp {
                c_fc: self.mlp.c_fc.as_mut(),
                c_proj: self.mlp.c_proj.as_mut(),
            },
        }
    }
}

impl<P> Linear<P> {
    fn into_map<Q>(self, f: &mut impl FnMut(P) -> Q) -> Linear<Q> {
        Linear {
            weight: f(self.weight),
            bias: self.bias.map(f),
        }
    }

    fn as_ref(&self) -> Linear<&P> {
        Linear {
            weight: &self.weight,
            bias: self.bias.as_ref(),
        }
    }

    fn as_mut(&mut self) -> Linear<&mut P> {
        Linear {
            weight: &mut self.weight,
            bias: self.bias.as_mut(),
        }
    }
}

impl<P> LayerNorm<P> {
    fn into_map<Q>(self, f: &mut impl FnMut(P) -> Q) -> LayerNorm<Q> {
        LayerNorm {
            weight: f(self.weight),
            bias: self.bias.map(f),
        }
    }

    fn as_ref(&self) -> LayerNorm<&P> {
        LayerNorm {
            weight: &self.weight,
            bias: self.bias.as_ref(),
        }
    }

    fn as_mut(&mut self) -> LayerNorm<&mut P> {
        LayerNorm {
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
