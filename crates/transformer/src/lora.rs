//! LoRA: low-rank adapters on the linear layers (Hu et al., 2021), as PEFT
//! implements them, in PEFT's files (docs/lora.md).
//!
//! ```text
//! y = x W^T + b  +  s · dropout(x) A^T B^T        x: (..., IN) -> y: (..., OUT)
//!     frozen         A: (r, IN), B: (OUT, r), trained
//! s = alpha / r      (rsLoRA: alpha / sqrt(r))
//! ```
//!
//! `B` starts at zero, so an adapted model starts as its base; `A` starts as
//! PEFT draws it (Kaiming-uniform with `a = sqrt(5)`: U(-1/sqrt(IN), 1/sqrt(IN))).
//! The base takes no gradient: its weights are constants of the tape, so
//! the backward pass computes dx through `W` but never dW, and only `A` and
//! `B` reach the optimizer. With the adapters off, the same weights are the
//! base model: DPO's reference comes free.
//!
//! A [`Lora`] is what a [`crate::Model`] carries: the settings
//! ([`LoraConfig`]) and one optional `(A, B)` per linear layer, in the order
//! of [`ModelParams::linears`]. [`crate::Model::bind`] puts them into the
//! bound parameters as [`LoraAdapter`]s, where [`LoraAdapter::forward`] adds
//! the low-rank term to the layer's output.
//!
//! On disk an adapter is PEFT's: `adapter_config.json` and
//! `adapter_model.safetensors`, whose tensors are
//! `base_model.model.<module>.lora_A.weight` (r, IN) and `.lora_B.weight`
//! (OUT, r), `<module>` the layer's name in the base checkpoint
//! ([`ModelParams::linear_modules`]).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use autograd::{Float, Tape, Tensor, Var};
use ndarray::{Array2, Ix2, IxDyn};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::checkpoint::{read_bounded, CheckpointError, MAX_CONFIG_BYTES, MAX_HEADER_BYTES};
use crate::config::ModelConfig;
use crate::params::ModelParams;

/// The adapter's settings file (PEFT's name).
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// The adapter's tensors (PEFT's name).
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The prefix PEFT gives every module name in an adapter file.
const KEY_PREFIX: &str = "base_model.model.";
/// `target_modules` meaning every linear layer but the LM head (PEFT's).
pub const ALL_LINEAR: &str = "all-linear";

/// The settings of an adapter: PEFT's `LoraConfig` fields of the same names.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// The rank r (`--lora-r`).
    pub r: usize,
    /// `lora_alpha` (`--lora-alpha`): the scale is `alpha / r`.
    pub alpha: f64,
    /// `lora_dropout` (`--lora-dropout`): the probability of zeroing an
    /// input of the low-rank path while training.
    pub dropout: f64,
    /// `target_modules` as given: layer names matched as PEFT does (the
    /// module's name, or its last parts after a dot), or [`ALL_LINEAR`].
    pub target_modules: Vec<String>,
    /// `use_rslora`: scale `alpha / sqrt(r)` (rank-stabilised LoRA).
    pub use_rslora: bool,
}

impl LoraConfig {
    /// s = alpha / r, or alpha / sqrt(r) with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// Refuses settings PEFT would refuse or that train nothing.
    pub fn validate(&self) -> Result<(), String> {
        if self.r == 0 {
            return Err("--lora-r must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(format!("--lora-alpha must be positive, got {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "--lora-dropout must be in [0, 1), got {}",
                self.dropout
            ));
        }
        if self.target_modules.is_empty() {
            return Err("--lora-targets names no layer".into());
        }
        Ok(())
    }
}

/// PEFT's default `target_modules` for an architecture when none are given
/// (`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`): the query and
/// value projections for the Llama family, GPT-2's fused `c_attn`.
pub fn default_targets(config: &ModelConfig) -> Vec<String> {
    let names: &[&str] = match config.llama {
        Some(_) => &["q_proj", "v_proj"],
        None => &["c_attn"],
    };
    names.iter().map(|s| s.to_string()).collect()
}

/// Which linear layers of `config` (in the order of
/// [`ModelParams::linears`]) the `targets` adapt: a layer is adapted when
/// a target is its module name or the end of it after a dot (PEFT's rule:
/// `c_proj` adapts GPT-2's attention and MLP projections alike), or every
/// layer for [`ALL_LINEAR`]. A target that matches no layer is refused, as
/// PEFT refuses it.
pub fn resolve_targets(config: &ModelConfig, targets: &[String]) -> Result<Vec<bool>, String> {
    let modules = ModelParams::linear_modules(config);
    if targets.iter().any(|t| t == ALL_LINEAR) {
        return Ok(vec![true; modules.len()]);
    }
    let matches =
        |module: &str, target: &str| module == target || module.ends_with(&format!(".{target}"));
    for target in targets {
        if !modules.iter().any(|m| matches(m, target)) {
            let mut kinds: Vec<&str> = modules
                .iter()
                .filter_map(|m| m.rsplit('.').next())
                .collect();
            kinds.sort();
            kinds.dedup();
            return Err(format!(
                "--lora-targets: no linear layer of this model is named {target:?} (its layers: {}, or {ALL_LINEAR})",
                kinds.join(", ")
            ));
        }
    }
    Ok(modules
        .iter()
        .map(|m| targets.iter().any(|t| matches(m, t)))
        .collect())
}

/// Inverted dropout of the low-rank path's input, drawn from `seed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// The probability of zeroing an element.
    pub p: f64,
    /// The seed of this layer's mask in this step.
    pub seed: u64,
}

/// The low-rank term of one linear layer, bound to a tape (the `lora` of a
/// bound [`crate::params::Linear`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraAdapter<P> {
    /// A: (r, IN), `lora_A.weight`.
    pub a: P,
    /// B: (OUT, r), `lora_B.weight`.
    pub b: P,
    /// s = alpha / r (or alpha / sqrt r).
    pub scale: f64,
    /// While training with `lora_dropout > 0` ([`crate::Model::bind_for_training`]);
    /// `None` in evaluation and generation.
    pub dropout: Option<Dropout>,
}

impl<T: Float> LoraAdapter<Var<T>> {
    /// s · dropout(x) A^T B^T            x: (..., IN) -> (..., OUT), through (..., r)
    ///
    /// The gradients are the chain rule through the ops: with h = dropout(x) A^T,
    /// dB = s · dy^T h,  dA = s · (dy B)^T dropout(x),  dx = s · dropout'(dy B A).
    /// The scale multiplies h, the narrow (..., r) activation.
    pub fn forward(&self, tape: &Tape<T>, x: &Var<T>) -> Var<T> {
        let x = match self.dropout {
            Some(Dropout { p, seed }) if p > 0.0 => tape.dropout(x, p, seed),
            _ => x.clone(),
        };
        let h = tape.linear(&x, &self.a, None); // (..., r)
        let h = tape.mul_scalar(&h, T::cast(self.scale));
        tape.linear(&h, &self.b, None) // (..., OUT)
    }
}

/// The A and B of one adapted layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair<P> {
    /// (r, IN).
    pub a: P,
    /// (OUT, r).
    pub b: P,
}

/// The adapters a model carries: settings, and one optional `(A, B)` per
/// linear layer in the order of [`ModelParams::linears`].
#[derive(Debug, Clone)]
pub struct Lora<T> {
    /// The settings.
    pub config: LoraConfig,
    /// One entry per linear layer; `Some` where it is adapted.
    pub pairs: Vec<Option<LoraPair<Arc<Tensor<T>>>>>,
    /// Where the base model was read from (`base_model_name_or_path` in
    /// `adapter_config.json`), if known.
    pub base_model: Option<String>,
}

/// Why an adapter cannot be read (one line each, naming the file).
fn adapter_error(path: &Path, message: impl Into<String>) -> CheckpointError {
    CheckpointError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl<T: Float> Lora<T> {
    /// Fresh adapters on the layers `config.target_modules` names, for a
    /// model of `model_config`: A ~ U(-1/sqrt(IN), 1/sqrt(IN)) (PEFT's
    /// Kaiming-uniform with a = sqrt(5)), B = 0, drawn layer by layer from
    /// `StdRng::seed_from_u64(seed)`.
    pub fn new(
        model_config: &ModelConfig,
        config: LoraConfig,
        seed: u64,
    ) -> Result<Lora<T>, String> {
        config.validate()?;
        let adapted = resolve_targets(model_config, &config.target_modules)?;
        let shapes = linear_shapes(model_config);
        let mut rng = StdRng::seed_from_u64(seed);
        let r = config.r;
        let pairs = adapted
            .iter()
            .zip(&shapes)
            .map(|(&adapt, &(out, inp))| {
                adapt.then(|| {
                    let bound = 1.0 / (inp as f64).sqrt();
                    let a = Tensor::from_shape_simple_fn(IxDyn(&[r, inp]), || {
                        T::cast(rng.gen_range(-bound..bound))
                    });
                    LoraPair {
                        a: Arc::new(a),
                        b: Arc::new(Tensor::zeros(IxDyn(&[out, r]))),
                    }
                })
            })
            .collect();
        Ok(Lora {
            config,
            pairs,
            base_model: None,
        })
    }

    /// The names of the adapters' tensors in the order of
    /// [`Lora::tensors`]: PEFT's keys, `base_model.model.<module>.lora_A.weight`
    /// then `...lora_B.weight` for each adapted layer.
    pub fn names(&self, model_config: &ModelConfig) -> Vec<String> {
        ModelParams::linear_modules(model_config)
            .into_iter()
            .zip(&self.pairs)
            .filter(|(_, pair)| pair.is_some())
            .flat_map(|(module, _)| {
                ["lora_A", "lora_B"].map(|ab| format!("{KEY_PREFIX}{module}.{ab}.weight"))
            })
            .collect()
    }

    /// A then B of every adapted layer, in order: the trainable parameters.
    pub fn tensors(&self) -> Vec<&Arc<Tensor<T>>> {
        self.pairs
            .iter()
            .flatten()
            .flat_map(|p| [&p.a, &p.b])
            .collect()
    }

    /// [`Lora::tensors`], mutably (for an optimizer step).
    pub fn tensors_mut(&mut self) -> Vec<&mut Arc<Tensor<T>>> {
        self.pairs
            .iter_mut()
            .flatten()
            .flat_map(|p| [&mut p.a, &mut p.b])
            .collect()
    }

    /// The same adapters in `U`.
    pub fn cast<U: Float>(&self) -> Lora<U> {
        let cast = |t: &Arc<Tensor<T>>| Arc::new(t.mapv(|x| U::cast(x.as_f64())));
        Lora {
            config: self.config.clone(),
            pairs: self
                .pairs
                .iter()
                .map(|p| {
                    p.as_ref().map(|p| LoraPair {
                        a: cast(&p.a),
                        b: cast(&p.b),
                    })
                })
                .collect(),
            base_model: self.base_model.clone(),
        }
    }
}

/// (OUT, IN) of every linear layer of `config`, in the order of [`ModelParams::linears`].
fn linear_shapes(config: &ModelConfig) -> Vec<(usize, usize)> {
    ModelParams::specs(config)
        .linears()
        .iter()
        .map(|l| (l.weight.shape[0], l.weight.shape[1]))
        .collect()
}

impl Lora<f32> {
    /// The two files of this adapter, `(name, bytes)`: [`ADAPTER_WEIGHTS_FILE`]
    /// then [`ADAPTER_CONFIG_FILE`], as PEFT's `save_pretrained` writes them
    /// (F32 tensors; the config with PEFT's fields).
    pub fn files(
        &self,
        model_config: &ModelConfig,
    ) -> Result<[(&'static str, Vec<u8>); 2], CheckpointError> {
        let names = self.names(model_config);
        let tensors = self.tensors();
        let bytes: Vec<Vec<u8>> = tensors
            .iter()
            .map(|t| t.iter().flat_map(|v| v.to_le_bytes()).collect())
            .collect();
        let views = names
            .iter()
            .zip(&tensors)
            .zip(&bytes)
            .map(|((name, t), data)| {
                safetensors::tensor::TensorView::new(Dtype::F32, t.shape().to_vec(), data)
                    .map(|view| (name.clone(), view))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| adapter_error(Path::new(ADAPTER_WEIGHTS_FILE), format!("{e:?}")))?;
        let metadata = Some([("format".to_string(), "pt".to_string())].into());
        let weights = safetensors::serialize(views, &metadata)
            .map_err(|e| adapter_error(Path::new(ADAPTER_WEIGHTS_FILE), format!("{e:?}")))?;
        let config = serde_json::to_string_pretty(&self.peft_config(model_config)).unwrap() + "\n";
        Ok([
            (ADAPTER_WEIGHTS_FILE, weights),
            (ADAPTER_CONFIG_FILE, config.into_bytes()),
        ])
    }

    /// `adapter_config.json` as PEFT writes it for a causal LM.
    fn peft_config(&self, model_config: &ModelConfig) -> Value {
        let c = &self.config;
        let targets: Value = if c.target_modules.iter().any(|t| t == ALL_LINEAR) {
            json!(ALL_LINEAR)
        } else {
            json!(c.target_modules)
        };
        json!({
            "alpha_pattern": {},
            "auto_mapping": null,
            "base_model_name_or_path": self.base_model,
            "bias": "none",
            // GPT-2's layers are Conv1D in transformers; PEFT marks them so.
            "fan_in_fan_out": model_config.llama.is_none(),
            "inference_mode": true,
            "init_lora_weights": true,
            "layers_pattern": null,
            "layers_to_transform": null,
            // an integer where it is one, as PEFT's int field is written
            "lora_alpha": if c.alpha.fract() == 0.0 && c.alpha.abs() < 1e15 { json!(c.alpha as i64) } else { json!(c.alpha) },
            "lora_dropout": c.dropout,
            "modules_to_save": null,
            "peft_type": "LORA",
            "r": c.r,
            "rank_pattern": {},
            "revision": null,
            "target_modules": targets,
            "task_type": "CAUSAL_LM",
            "use_dora": false,
            "use_rslora": c.use_rslora,
        })
    }

    /// Reads the adapter in `dir` (PEFT's two files) for a base model of
    /// `model_config`. What `dpo` cannot apply as PEFT would (DoRA, per-layer
    /// ranks or alphas, trained biases, whole modules saved beside the
    /// adapters, an adapter on a layer this model does not have) is refused
    /// in one line naming the file.
    pub fn load(dir: &Path, model_config: &ModelConfig) -> Result<Lora<f32>, CheckpointError> {
        let config_path = dir.join(ADAPTER_CONFIG_FILE);
        let config_bytes = read_bounded(&config_path, MAX_CONFIG_BYTES)?;
        let r = parse_config(&config_bytes, &config_path)?.0.r;
        // A and B of every layer at rank r, in f32, plus the header: nothing larger is read.
        let most = linear_shapes(model_config)
            .iter()
            .map(|&(out, inp)| (r as u64).saturating_mul(4 * (out + inp) as u64))
            .fold(MAX_HEADER_BYTES, u64::saturating_add);
        let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
        let weights_bytes = read_bounded(&weights_path, most)?;
        Lora::from_bytes(
            (&config_bytes, &config_path),
            (&weights_bytes, &weights_path),
            model_config,
        )
    }

    /// [`Lora::load`] from the two files' bytes (each with the path its
    /// errors name).
    pub fn from_bytes(
        (config_bytes, config_path): (&[u8], &Path),
        (weights_bytes, weights_path): (&[u8], &Path),
        model_config: &ModelConfig,
    ) -> Result<Lora<f32>, CheckpointError> {
        let (config, base_model) = parse_config(config_bytes, config_path)?;
        let weights_path = weights_path.to_path_buf();
        let modules = ModelParams::linear_modules(model_config);
        let shapes = linear_shapes(model_config);
        let file = SafeTensors::deserialize(weights_bytes)
            .map_err(|e| adapter_error(&weights_path, format!("not a safetensors file: {e:?}")))?;
        let index: BTreeMap<&str, usize> = modules
            .iter()
            .enumerate()
            .map(|(i, m)| (m.as_str(), i))
            .collect();
        // (A, B) of each linear layer as the file's tensors are read
        let mut pairs: Vec<[Option<Tensor<f32>>; 2]> = vec![[None, None]; modules.len()];
        for (key, view) in file.tensors() {
            let tensor_error = |message: String| CheckpointError::Tensor {
                path: weights_path.clone(),
                name: key.clone(),
                message,
            };
            let (module, which) = key
                .strip_prefix(KEY_PREFIX)
                .and_then(|k| {
                    k.strip_suffix(".lora_A.weight")
                        .map(|m| (m, 0))
                        .or_else(|| k.strip_suffix(".lora_B.weight").map(|m| (m, 1)))
                })
                .ok_or_else(|| {
                    tensor_error(
                        "not a LoRA tensor (base_model.model.<module>.lora_A.weight / .lora_B.weight)"
                            .into(),
                    )
                })?;
            let &layer = index.get(module).ok_or_else(|| {
                tensor_error(format!("the base model has no linear layer {module}"))
            })?;
            let (out, inp) = shapes[layer];
            let expected = if which == 0 {
                [config.r, inp]
            } else {
                [out, config.r]
            };
            if view.shape() != expected {
                return Err(tensor_error(format!(
                    "shape {:?}, expected {expected:?} (r = {})",
                    view.shape(),
                    config.r
                )));
            }
            let data = crate::hf::to_f32(view.dtype(), view.data()).ok_or_else(|| {
                tensor_error(format!(
                    "dtype {:?}, expected F32, F16 or BF16",
                    view.dtype()
                ))
            })?;
            let t = Tensor::from_shape_vec(IxDyn(&expected), data).unwrap();
            pairs[layer][which] = Some(t);
        }
        let mut adapted = 0;
        let pairs = pairs
            .into_iter()
            .zip(&modules)
            .map(|(pair, module)| match pair {
                [Some(a), Some(b)] => {
                    adapted += 1;
                    Ok(Some(LoraPair {
                        a: Arc::new(a),
                        b: Arc::new(b),
                    }))
                }
                [None, None] => Ok(None),
                _ => Err(adapter_error(
                    &weights_path,
                    format!("{module} has only one of lora_A and lora_B"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if adapted == 0 {
            return Err(adapter_error(&weights_path, "holds no LoRA tensor"));
        }
        let mut config = config;
        if config.target_modules.is_empty() {
            // A file that does not say which layers it targets: the ones it adapts, by name.
            config.target_modules = modules
                .iter()
                .zip(&pairs)
                .filter(|(_, pair)| pair.is_some())
                .map(|(module, _)| module.clone())
                .collect();
        }
        Ok(Lora {
            config,
            pairs,
            base_model,
        })
    }

    /// The base `weights` with each adapter merged in: W + s · B A (PEFT's
    /// `merge_and_unload`). `linears` are the base model's linear layers.
    pub fn merge_into<'a>(&self, linears: impl IntoIterator<Item = &'a mut Arc<Tensor<f32>>>) {
        let scale = self.config.scale() as f32;
        for (weight, pair) in linears.into_iter().zip(&self.pairs) {
            let Some(pair) = pair else { continue };
            let view2 = |t: &Tensor<f32>| t.view().into_dimensionality::<Ix2>().unwrap().to_owned();
            let delta: Array2<f32> = view2(&pair.b).dot(&view2(&pair.a)); // (OUT, IN)
            let w = Arc::make_mut(weight);
            w.zip_mut_with(&delta.into_dyn(), |w, d| *w += scale * d);
        }
    }
}

/// The settings and the base model's name of an `adapter_config.json`.
fn parse_config(
    bytes: &[u8],
    path: &Path,
) -> Result<(LoraConfig, Option<String>), CheckpointError> {
    let file: PeftConfigFile = serde_json::from_slice(bytes)
        .map_err(|e| adapter_error(path, format!("not a PEFT adapter config: {e}")))?;
    Ok((file.lora_config(path)?, file.base_model_name_or_path))
}

/// Whether `dir` holds an adapter (PEFT's `adapter_config.json`) rather than a whole model.
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG_FILE).is_file() && !dir.join(crate::checkpoint::CONFIG_FILE).exists()
}

/// The base model an adapter directory names (`base_model_name_or_path`),
/// as a path: relative paths are taken from the current directory, as PEFT
/// passes them to `from_pretrained`.
pub fn adapter_base_path(dir: &Path) -> Result<PathBuf, CheckpointError> {
    let config_path = dir.join(ADAPTER_CONFIG_FILE);
    let bytes = read_bounded(&config_path, MAX_CONFIG_BYTES)?;
    parse_config(&bytes, &config_path)?
        .1
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            adapter_error(
                &config_path,
                "names no base model (base_model_name_or_path)",
            )
        })
}

/// The fields of PEFT's `adapter_config.json` that say what the adapter
/// computes; the others (task type, revision, ...) change nothing here.
#[derive(Debug, Deserialize, Serialize)]
struct PeftConfigFile {
    peft_type: Option<String>,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    lora_dropout: f64,
    #[serde(default)]
    target_modules: Option<Value>,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    bias: Option<String>,
    #[serde(default)]
    rank_pattern: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    alpha_pattern: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    modules_to_save: Option<Value>,
    #[serde(default)]
    base_model_name_or_path: Option<String>,
}

impl PeftConfigFile {
    fn lora_config(&self, path: &Path) -> Result<LoraConfig, CheckpointError> {
        let refuse = |what: &str| Err(adapter_error(path, format!("{what}: not supported")));
        if self.peft_type.as_deref().unwrap_or("LORA") != "LORA" {
            return refuse(&format!(
                "peft_type {:?}",
                self.peft_type.as_deref().unwrap_or("")
            ));
        }
        if self.use_dora {
            return refuse("use_dora (DoRA)");
        }
        if self.bias.as_deref().unwrap_or("none") != "none" {
            return refuse("trained biases (bias other than \"none\")");
        }
        if self.rank_pattern.as_ref().is_some_and(|p| !p.is_empty())
            || self.alpha_pattern.as_ref().is_some_and(|p| !p.is_empty())
        {
            return refuse("per-layer ranks or alphas (rank_pattern, alpha_pattern)");
        }
        if self
            .modules_to_save
            .as_ref()
            .is_some_and(|m| !m.is_null() && m.as_array().is_none_or(|a| !a.is_empty()))
        {
            return refuse("whole modules saved beside the adapters (modules_to_save)");
        }
        let target_modules = match &self.target_modules {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => {
                let mut seen = HashSet::new();
                items
                    .iter()
                    .filter_map(|v| v.as_str())
                    .filter(|s| seen.insert(s.to_string()))
                    .map(str::to_string)
                    .collect()
            }
            _ => Vec::new(),
        };
        let config = LoraConfig {
            r: self.r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            target_modules,
            use_rslora: self.use_rslora,
        };
        // (no target_modules: the adapted layers are named from the tensors)
        LoraConfig {
            target_modules: vec![ALL_LINEAR.into()],
            ..config.clone()
        }
        .validate()
        .map_err(|e| adapter_error(path, e))?;
        Ok(config)
    }
}
