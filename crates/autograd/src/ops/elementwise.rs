//! Elementwise ops: binary with broadcasting, scalar, and unary functions.
//!
//! A unary op is just `f` and its derivative `df`; [`Tape::unary`] does the
//! rest. `df` is written in terms of the input `x` or of the output `y`,
//! whichever is cheaper (`exp`, `tanh` and `sigmoid` reuse their output).

use std::sync::Arc;

use rayon::prelude::*;

use super::{broadcast_shape, sum_to_shape};
use crate::float::Float;
use crate::kernels::elementwise as k;
use crate::tape::{contiguous, Tape, Tensor, Var};

/// How a unary op's derivative is expressed. `D` is the function `df`
/// (a function item or closure, so that the loops inline and vectorize it).
#[derive(Clone, Copy)]
pub enum Derivative<D> {
    /// `dy/dx = df(x)`: the backward keeps the input.
    OfInput(D),
    /// `dy/dx = df(y)`: the backward keeps the output.
    OfOutput(D),
}

/// `out = f(inp)` elementwise, as a new standard-layout tensor.
fn map_tensor<T: Float>(inp: &Tensor<T>, f: impl Fn(T) -> T + Sync) -> Tensor<T> {
    let inp_data = contiguous(inp);
    let mut out = vec![T::zero(); inp.len()];
    k::map(&inp_data, &mut out, f);
    Tensor::from_shape_vec(inp.raw_dim(), out).unwrap()
}

/// Elements per task of [`Tape::dropout`].
const DROPOUT_CHUNK: usize = 1 << 14;

/// splitmix64's output function: 64 well-mixed bits from `x`, the one hash
/// the seeds of dropout (a step's, a layer's, an element's) are made with.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whether dropout keeps element `index` under `seed` at drop rate `p`:
/// [`splitmix64`] of (seed, index), its top 53 bits as a uniform u in
/// [0, 1), kept when u >= p.
pub fn dropout_keeps(seed: u64, index: u64, p: f64) -> bool {
    let z = splitmix64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64) >= p
}

/// `dinp = dout * g(saved)` elementwise (same shapes).
fn mul_map<T: Float>(dout: &Tensor<T>, saved: &Tensor<T>, g: impl Fn(T) -> T + Sync) -> Tensor<T> {
    let dout_data = contiguous(dout);
    let saved_data = contiguous(saved);
    let mut dinp = vec![T::zero(); dout.len()];
    k::zip_map(&dout_data, &saved_data, &mut dinp, |d, s| d * g(s));
    Tensor::from_shape_vec(dout.raw_dim(), dinp).unwrap()
}

impl<T: Float> Tape<T> {
    /// `y = f(x)` elementwise, with `dx = dy * df`.
    ///
    /// `f` and `df` are generic (not function pointers), so each op gets its
    /// own loops with the math inlined, which the compiler vectorizes.
    pub fn unary<F, D>(&self, op: &str, x: &Var<T>, f: F, df: Derivative<D>) -> Var<T>
    where
        F: Fn(T) -> T + Sync,
        D: Fn(T) -> T + Sync + 'static,
    {
        let y = map_tensor(x.value(), f);
        if !self.needs_grad(&[x]) {
            return self.record(op, y, &[x], |_| vec![None]);
        }
        match df {
            Derivative::OfInput(df) => {
                let x_saved = x.value_arc();
                self.record(op, y, &[x], move |dy| vec![Some(mul_map(dy, &x_saved, df))])
            }
            Derivative::OfOutput(df) => {
                // The output is shared with the Var we return: no extra copy.
                let y = Arc::new(y);
                let y_saved = y.clone();
                self.record(op, y, &[x], move |dy| vec![Some(mul_map(dy, &y_saved, df))])
            }
        }
    }

    /// y = a + b  (broadcast)            da = sum_to(dy),  db = sum_to(dy)
    pub fn add(&self, a: &Var<T>, b: &Var<T>) -> Var<T> {
        let out_shape = broadcast_shape("add", a.shape(), b.shape());
        let y = if a.shape() == b.shape() {
            let (ad, bd) = (contiguous(a.value()), contiguous(b.value()));
            let mut out = vec![T::zero(); ad.len()];
            k::zip_map(&ad, &bd, &mut out, |x, y| x + y);
            Tensor::from_shape_vec(out_shape, out).unwrap()
        } else {
            (a.value() + b.value()).as_standard_layout().into_owned()
        };
        let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
        self.record("add", y, &[a, b], move |dy| {
            vec![Some(sum_to_shape(dy, &sa)), Some(sum_to_shape(dy, &sb))]
        })
    }

    /// y = a - b  (broadcast)            da = sum_to(dy),  db = -sum_to(dy)
    pub fn sub(&self, a: &Var<T>, b: &Var<T>) -> Var<T> {
        broadcast_shape("sub", a.shape(), b.shape());
        let y = (a.value() - b.value()).as_standard_layout().into_owned();
        let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
        self.record("sub", y, &[a, b], move |dy| {
            vec![Some(sum_to_shape(dy, &sa)), Some(-sum_to_shape(dy, &sb))]
        })
    }

    /// y = a * b  (broadcast)            da = sum_to(dy * b),  db = sum_to(dy * a)
    pub fn mul(&self, a: &Var<T>, b: &Var<T>) -> Var<T> {
        broadcast_shape("mul", a.shape(), b.shape());
        let y = (a.value() * b.value()).as_standard_layout().into_owned();
        let (a_saved, b_saved) = (a.value_arc(), b.value_arc());
        self.record("mul", y, &[a, b], move |dy| {
            vec![
                Some(sum_to_shape(&(dy * &*b_saved), a_saved.shape())),
                Some(sum_to_shape(&(dy * &*a_saved), b_saved.shape())),
            ]
        })
    }

    /// y = a / b  (broadcast)            da = sum_to(dy / b),  db = -sum_to(dy * a / b^2)
    pub fn div(&self, a: &Var<T>, b: &Var<T>) -> Var<T> {
        broadcast_shape("div", a.shape(), b.shape());
        let y = (a.value() / b.value()).as_standard_layout().into_owned();
        let (a_saved, b_saved) = (a.value_arc(), b.value_arc());
        self.record("div", y, &[a, b], move |dy| {
            let da = dy / &*b_saved;
            let db = -(&da * &*a_saved) / &*b_saved;
            vec![
                Some(sum_to_shape(&da, a_saved.shape())),
                Some(sum_to_shape(&db, b_saved.shape())),
            ]
        })
    }

    /// y = -x                            dx = -dy
    pub fn neg(&self, x: &Var<T>) -> Var<T> {
        let y = map_tensor(x.value(), |v| -v);
        self.record("neg", y, &[x], |dy| vec![Some(map_tensor(dy, |d| -d))])
    }

    /// y = x + c  (c a scalar)           dx = dy
    pub fn add_scalar(&self, x: &Var<T>, c: T) -> Var<T> {
        let y = map_tensor(x.value(), |v| v + c);
        self.record("add_scalar", y, &[x], |dy| vec![Some(dy.clone())])
    }

    /// y = c * x  (c a scalar)           dx = c * dy
    pub fn mul_scalar(&self, x: &Var<T>, c: T) -> Var<T> {
        let y = map_tensor(x.value(), |v| v * c);
        self.record("mul_scalar", y, &[x], move |dy| {
            vec![Some(map_tensor(dy, |d| d * c))]
        })
    }

    /// Inverted dropout: y = x * m,  dx = dy * m,  where m_i is 0 with
    /// probability `p` and 1 / (1 - p) otherwise (so the mean of y is x).
    ///
    /// m_i is a function of (`seed`, i) alone ([`dropout_keeps`]): the same
    /// seed gives the same mask on any number of threads, and the backward
    /// pass draws it again instead of keeping it (nothing is saved).
    ///
    /// # Panics
    /// Unless `0 <= p < 1`.
    pub fn dropout(&self, x: &Var<T>, p: f64, seed: u64) -> Var<T> {
        assert!((0.0..1.0).contains(&p), "dropout: p = {p} is not in [0, 1)");
        let scale = T::cast(1.0 / (1.0 - p));
        let masked = move |values: &Tensor<T>| {
            let data = contiguous(values);
            let mut out = vec![T::zero(); data.len()];
            out.par_chunks_mut(DROPOUT_CHUNK)
                .zip(data.par_chunks(DROPOUT_CHUNK))
                .enumerate()
                .for_each(|(chunk, (out, data))| {
                    let first = (chunk * DROPOUT_CHUNK) as u64;
                    for (i, (o, &v)) in out.iter_mut().zip(data).enumerate() {
                        let keep = dropout_keeps(seed, first + i as u64, p);
                        *o = if keep { v * scale } else { T::zero() };
                    }
                });
            Tensor::from_shape_vec(values.raw_dim(), out).unwrap()
        };
        let y = masked(x.value());
        self.record("dropout", y, &[x], move |dy| vec![Some(masked(dy))])
    }

    /// y = x^p  (p a scalar)             dx = dy * p x^(p-1)
    pub fn powf(&self, x: &Var<T>, p: T) -> Var<T> {
        let y = map_tensor(x.value(), |v| v.powf(p));
        let x_saved = x.value_arc();
        self.record("powf", y, &[x], move |dy| {
            let dfdx = map_tensor(&x_saved, |v| p * v.powf(p - T::one()));
            vec![Some(dy * &dfdx)]
        })
    }

    /// y = exp(x)                        dx = dy * y
    ///
    /// Through [`Float::exp_fast`]: in f32 a vectorized polynomial (under
    /// 2 ulp; results below 1.2e-38 flush to 0), in f64 the exact `exp`.
    pub fn exp(&self, x: &Var<T>) -> Var<T> {
        self.unary("exp", x, T::exp_fast, Derivative::OfOutput(|y| y))
    }

    /// y = ln(x)                         dx = dy / x
    pub fn log(&self, x: &Var<T>) -> Var<T> {
        self.unary("log", x, T::ln, Derivative::OfInput(|x: T| x.recip()))
    }

    /// y = tanh(x)                       dx = dy * (1 - y^2)
    pub fn tanh(&self, x: &Var<T>) -> Var<T> {
        self.unary(
            "tanh",
            x,
            T::tanh,
            Derivative::OfOutput(|y| T::one() - y * y),
        )
    }

    /// y = sigmoid(x) = 1 / (1 + e^-x)   dx = dy * y (1 - y)
    ///
    /// Computed as `e^x / (1 + e^x)` for negative x so that `e^-x` never overflows.
    pub fn sigmoid(&self, x: &Var<T>) -> Var<T> {
        self.unary(
            "sigmoid",
            x,
            sigmoid,
            Derivative::OfOutput(|y| y * (T::one() - y)),
        )
    }

    /// y = max(x, 0)                     dx = dy * `[x > 0]`
    pub fn relu(&self, x: &Var<T>) -> Var<T> {
        self.unary(
            "relu",
            x,
            |v| v.max(T::zero()),
            Derivative::OfInput(|v| if v > T::zero() { T::one() } else { T::zero() }),
        )
    }

    /// y = log sigmoid(x) = min(x, 0) - log(1 + e^-|x|)      dx = dy * sigmoid(-x)
    ///
    /// Stable both ways: `e^-|x|` is at most 1, so nothing overflows, and for
    /// large positive x the result is `-log1p(tiny)` (not `log(1) = 0` after
    /// rounding `sigmoid(x)` to 1), for large negative x it is `x - log1p(tiny)`.
    pub fn logsigmoid(&self, x: &Var<T>) -> Var<T> {
        self.unary(
            "logsigmoid",
            x,
            logsigmoid,
            Derivative::OfInput(|v: T| sigmoid(-v)),
        )
    }

    /// GPT-2's GELU, tanh form:  y = x/2 (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
    ///
    /// dy/dx = (1 + tanh u)/2 + x/2 (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    pub fn gelu(&self, x: &Var<T>) -> Var<T> {
        self.unary("gelu", x, gelu, Derivative::OfInput(gelu_grad))
    }
}

/// Numerically stable logistic function.
pub fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

/// Numerically stable `log(sigmoid(x))`.
pub fn logsigmoid<T: Float>(x: T) -> T {
    x.min(T::zero()) - (-x.abs()).exp().ln_1p()
}

/// sqrt(2 / pi)
const GELU_SCALE: f64 = 0.797_884_560_802_865_4;
const GELU_CUBIC: f64 = 0.044_715;

/// GELU, tanh approximation (GPT-2); `tanh` is [`Float::tanh_fast`]
/// (vectorizable in f32, exact in f64).
pub fn gelu<T: Float>(x: T) -> T {
    let half = T::cast(0.5);
    let u = T::cast(GELU_SCALE) * (x + T::cast(GELU_CUBIC) * x * x * x);
    half * x * (T::one() + u.tanh_fast())
}

/// d gelu(x) / dx.
pub fn gelu_grad<T: Float>(x: T) -> T {
    let half = T::cast(0.5);
    let u = T::cast(GELU_SCALE) * (x + T::cast(GELU_CUBIC) * x * x * x);
    let t = u.tanh_fast();
    let du = T::cast(GELU_SCALE) * (T::one() + T::cast(3.0 * GELU_CUBIC) * x * x);
    half * (T::one() + t) + half * x * (T::one() - t * t) * du
}
