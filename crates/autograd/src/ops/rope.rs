//! Rotary position embeddings (RoPE) as transformers 5.24 computes them for
//! Llama-family models: the frequencies ([`RopeFrequencies`], `default` and
//! `llama3` types, float32 rounding included) and the op [`Tape::rope`].
//! The loops are in [`crate::kernels::rope`].

use std::collections::BTreeMap;

use ndarray::IxDyn;
use rayon::prelude::*;

use crate::float::Float;
use crate::kernels::rope::{rope_backward, rope_forward};
use crate::tape::{contiguous, Tape, Tensor, Var};

/// The parameters of transformers' `llama3` RoPE type (`rope_parameters` of
/// Llama 3.1/3.2 configs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3RopeScaling {
    /// `factor` (32 for Llama 3.2): long wavelengths are divided by it.
    pub factor: f64,
    /// `low_freq_factor` (1).
    pub low_freq_factor: f64,
    /// `high_freq_factor` (4).
    pub high_freq_factor: f64,
    /// `original_max_position_embeddings` (8192).
    pub original_max_position_embeddings: usize,
}

/// The inverse frequencies of rotary embeddings (one per pair of a head's
/// values: `head_dim / 2`), and the factor on cos and sin.
///
/// The constructors reproduce transformers' float32 computation to the bit
/// (checked by `tests/rope_golden.rs` against `scripts/rope_golden.py`),
/// including PyTorch's `pow`, which on x86 CPUs is SLEEF's `powf_u10` (not
/// correctly rounded: [`sleef_powf`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeFrequencies {
    /// `inv_freq[i]`, `i < head_dim / 2`.
    pub inv_freq: Vec<f32>,
    /// transformers' `attention_scaling`: cos and sin are multiplied by it
    /// (1 for the `default` and `llama3` types).
    pub attention_scaling: f32,
}

impl RopeFrequencies {
    /// The `default` RoPE type (`compute_default_rope_parameters`):
    ///
    /// ```text
    /// inv_freq[i] = 1 / theta^(2i / head_dim)      in float32, i < head_dim / 2
    /// ```
    /// i.e. `1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))`.
    ///
    /// # Panics
    /// If `head_dim` is zero or odd, or `theta` is not above 0.
    pub fn new(theta: f64, head_dim: usize) -> Self {
        assert!(
            head_dim > 0 && head_dim.is_multiple_of(2),
            "RopeFrequencies: head size {head_dim} is not even"
        );
        assert!(
            theta > 0.0,
            "RopeFrequencies: rope_theta {theta} is not positive"
        );
        let base = theta as f32;
        let dim = head_dim as f32;
        let inv_freq = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0f32 / sleef_powf(base, i as f32 / dim))
            .collect();
        RopeFrequencies {
            inv_freq,
            attention_scaling: 1.0,
        }
    }

    /// The `llama3` RoPE type (`_compute_llama3_parameters`): the default
    /// frequencies, with long wavelengths divided by `factor` and the band in
    /// between interpolated, every step in float32 as transformers does it:
    ///
    /// ```text
    /// wavelen = 2 pi / inv_freq
    /// low_wavelen = old_len / low_freq_factor,   high_wavelen = old_len / high_freq_factor
    /// wavelen < high_wavelen:  inv_freq                       (short: kept)
    /// wavelen > low_wavelen:   inv_freq / factor              (long: scaled)
    /// otherwise:               (1 - s) inv_freq / factor + s inv_freq,
    ///                          s = (old_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    /// ```
    pub fn llama3(theta: f64, head_dim: usize, scaling: &Llama3RopeScaling) -> Self {
        let base = Self::new(theta, head_dim);
        let old_len = scaling.original_max_position_embeddings as f64;
        // Python floats meet float32 tensors: each is rounded to float32.
        let low_wavelen = (old_len / scaling.low_freq_factor) as f32;
        let high_wavelen = (old_len / scaling.high_freq_factor) as f32;
        let factor = scaling.factor as f32;
        let low = scaling.low_freq_factor as f32;
        let band = (scaling.high_freq_factor - scaling.low_freq_factor) as f32;
        let two_pi = (2.0 * std::f64::consts::PI) as f32;
        let inv_freq = base
            .inv_freq
            .iter()
            .map(|&f| {
                // `scalar / tensor` is `tensor.reciprocal() * scalar` in PyTorch
                let wavelen = (1.0 / f) * two_pi;
                let scaled = if wavelen > low_wavelen { f / factor } else { f };
                let smooth = ((1.0 / wavelen) * old_len as f32 - low) / band;
                let smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
                // not (wavelen < high) and not (wavelen > low); wavelen is never NaN
                let medium = (high_wavelen..=low_wavelen).contains(&wavelen);
                if medium {
                    smoothed
                } else {
                    scaled
                }
            })
            .collect();
        RopeFrequencies {
            inv_freq,
            attention_scaling: 1.0,
        }
    }

    /// The head size these frequencies rotate: `2 * inv_freq.len()`.
    pub fn head_dim(&self) -> usize {
        2 * self.inv_freq.len()
    }

    /// The angles of one position, as transformers computes them: the
    /// product in float32, `freqs[i] = f32(position) * inv_freq[i]`.
    pub fn angles(&self, position: usize) -> impl Iterator<Item = f32> + '_ {
        let p = position as f32;
        self.inv_freq.iter().map(move |&f| p * f)
    }

    /// `cos` and `sin` tables (P, head_dim / 2) of the given positions, in
    /// `T`: the float32 angle of [`RopeFrequencies::angles`], its cos and sin
    /// in f64, times `attention_scaling`, rounded once to `T`.
    pub fn cos_sin<T: Float>(&self, positions: &[usize]) -> (Vec<T>, Vec<T>) {
        let half = self.inv_freq.len();
        let scaling = self.attention_scaling as f64;
        let mut cos = vec![T::zero(); positions.len() * half];
        let mut sin = vec![T::zero(); positions.len() * half];
        let fill = |(&p, (c, s)): (&usize, (&mut [T], &mut [T]))| {
            for ((c, s), a) in c.iter_mut().zip(s.iter_mut()).zip(self.angles(p)) {
                let (sa, ca) = (a as f64).sin_cos();
                *c = T::cast(ca * scaling);
                *s = T::cast(sa * scaling);
            }
        };
        if half == 0 {
            return (cos, sin);
        }
        if positions.len() < 64 {
            positions
                .iter()
                .zip(cos.chunks_mut(half).zip(sin.chunks_mut(half)))
                .for_each(fill);
        } else {
            positions
                .par_iter()
                .zip(cos.par_chunks_mut(half).zip(sin.par_chunks_mut(half)))
                .for_each(fill);
        }
        (cos, sin)
    }
}

/// `x^y` for `x > 0` in float32, as PyTorch computes `base ** tensor` on
/// x86 CPUs: SLEEF's `powf_u10` (AVX2 and AVX-512 builds, with FMA), which
/// is within 1 ulp but not always correctly rounded (of the 64 inverse
/// frequencies of theta 1e6 and head size 128, one differs by an ulp from
/// the correctly rounded value). Written from SLEEF's algorithm:
/// `exp(y log x)` with log and exp in double-float (pairs of f32) arithmetic.
///
/// (PyTorch runs SLEEF on whole vectors only; the last elements of a tensor
/// that do not fill a pair of vectors (a multiple of 32 elements with
/// AVX-512, 16 with AVX2) go through libm's `powf` instead, which may differ
/// by an ulp from this on rare inputs: the head sizes 64 and 128 of the
/// Llama family are whole vectors.)
#[allow(clippy::excessive_precision)]
pub fn sleef_powf(x: f32, y: f32) -> f32 {
    assert!(
        x > 0.0 && x.is_finite(),
        "sleef_powf: base {x} out of range"
    );
    if y == 0.0 || x == 1.0 {
        return 1.0;
    }
    df::expk(df::mul_f(df::logk(x), y))
}

/// Double-float arithmetic: a value is an unevaluated sum `hi + lo` of two
/// f32s (SLEEF's `vfloat2`), with products made exact by fused multiply-add.
#[allow(clippy::excessive_precision)]
mod df {
    #[derive(Clone, Copy)]
    pub struct F2 {
        hi: f32,
        lo: f32,
    }

    const fn f2(hi: f32, lo: f32) -> F2 {
        F2 { hi, lo }
    }

    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }

    /// x + y of two floats, no ordering assumed.
    fn add2_ff(x: f32, y: f32) -> F2 {
        let s = x + y;
        let v = s - x;
        f2(s, (x - (s - v)) + (y - v))
    }

    /// x + y, |x| >= |y|.
    fn add_22(x: F2, y: F2) -> F2 {
        let s = x.hi + y.hi;
        f2(s, (((x.hi - s) + y.hi) + x.lo) + y.lo)
    }

    /// x + y, no ordering assumed.
    fn add2_22(x: F2, y: F2) -> F2 {
        let s = x.hi + y.hi;
        let v = s - x.hi;
        let t = (x.hi - (s - v)) + (y.hi - v);
        f2(s, t + (x.lo + y.lo))
    }

    /// x + y of a pair and a float, no ordering assumed.
    fn add2_2f(x: F2, y: f32) -> F2 {
        let s = x.hi + y;
        let v = s - x.hi;
        let t = (x.hi - (s - v)) + (y - v);
        f2(s, t + x.lo)
    }

    /// x + y of a float and a pair, |x| >= |y|.
    fn add_f2(x: f32, y: F2) -> F2 {
        let s = x + y.hi;
        f2(s, ((x - s) + y.hi) + y.lo)
    }

    fn normalize(t: F2) -> F2 {
        let s = t.hi + t.lo;
        f2(s, (t.hi - s) + t.lo)
    }

    fn scale(d: F2, s: f32) -> F2 {
        f2(d.hi * s, d.lo * s)
    }

    fn div(n: F2, d: F2) -> F2 {
        let t = 1.0 / d.hi;
        let s = n.hi * t;
        let u = fma(t, n.hi, -s);
        let v = fma(-d.lo, t, fma(-d.hi, t, 1.0));
        f2(s, fma(s, v, fma(n.lo, t, u)))
    }

    fn squ(x: F2) -> F2 {
        let s = x.hi * x.hi;
        f2(s, fma(x.hi + x.hi, x.lo, fma(x.hi, x.hi, -s)))
    }

    fn mul_22(x: F2, y: F2) -> F2 {
        let s = x.hi * y.hi;
        f2(s, fma(x.hi, y.lo, fma(x.lo, y.hi, fma(x.hi, y.hi, -s))))
    }

    pub fn mul_f(x: F2, y: f32) -> F2 {
        let s = x.hi * y;
        f2(s, fma(x.lo, y, fma(x.hi, y, -s)))
    }

    /// ln(d) for a positive normal d, as a pair (SLEEF's `logkf`).
    pub fn logk(d: f32) -> F2 {
        // d = m 2^e with m in [0.75, 1.5)
        let e = exponent(d * (1.0 / 0.75));
        let mut m = f32::from_bits((d.to_bits() & 0x807f_ffff) | 0x3f80_0000); // [1, 2)
        if m >= 1.5 {
            m *= 0.5;
        }
        let x = div(add2_ff(-1.0, m), add2_ff(1.0, m));
        let x2 = squ(x);
        let mut t = 0.240320354700088500976562f32;
        t = fma(t, x2.hi, 0.285112679004669189453125);
        t = fma(t, x2.hi, 0.400007992982864379882812);
        let c = f2(0.66666662693023681640625, 3.69183861259614332084311e-09);
        let mut s = mul_f(f2(0.69314718246459960938, -1.904654323148236017e-09), e);
        s = add_22(s, scale(x, 2.0));
        add_22(s, mul_22(mul_22(x2, x), add2_22(mul_f(x2, t), c)))
    }

    /// exp(d) of a pair, in float32 (SLEEF's `expkf`).
    pub fn expk(d: F2) -> f32 {
        const R_LN2: f32 = std::f32::consts::LOG2_E; // 1 / ln 2
        const L2U: f32 = 0.693145751953125;
        const L2L: f32 = 1.428606765330187045e-06;
        let u = (d.hi + d.lo) * R_LN2;
        let q = u.round_ties_even();
        let mut s = add2_2f(d, q * -L2U);
        s = add2_2f(s, q * -L2L);
        s = normalize(s);
        let mut u = 0.00136324646882712841033936f32;
        u = fma(u, s.hi, 0.00836596917361021041870117);
        u = fma(u, s.hi, 0.0416710823774337768554688);
        u = fma(u, s.hi, 0.166665524244308471679688);
        u = fma(u, s.hi, 0.499999850988388061523438);
        let mut t = add_22(s, mul_f(squ(s), u));
        t = add_f2(1.0, t);
        let u = t.hi + t.lo;
        if d.hi < -104.0 {
            return 0.0;
        }
        u * 2f32.powi(q as i32)
    }

    /// floor(log2(|v|)) of a positive normal float, as a float (`getexp`).
    fn exponent(v: f32) -> f32 {
        (((v.to_bits() >> 23) & 0xff) as i32 - 127) as f32
    }
}

impl<T: Float> Tape<T> {
    /// Rotary position embedding of every head, rotate-half layout
    /// (transformers' `apply_rotary_pos_emb`):
    /// x: (..., NH * hd), positions: one per row (the product of the leading
    /// axes) -> y: the shape of x
    ///
    /// ```text
    /// y  = x * cos + rotate_half(x) * sin          rotate_half(x) = cat(-x2, x1)
    ///    = (x1 cos - x2 sin, x2 cos + x1 sin)      x1, x2: the halves of each head
    /// dx = dy * cos - rotate_half(dy * sin)        the transposed rotation (by -angle):
    ///    = (dy1 cos + dy2 sin, dy2 cos - dy1 sin)
    /// cos, sin = cos, sin(cat(freqs, freqs)) * attention_scaling,
    /// freqs[i] = f32(position) * inv_freq[i]       (in float32, as transformers)
    /// ```
    /// cos and sin are taken in f64 of the float32 angle and rounded to `T`
    /// once. Rows at the same position share one row of the tables.
    ///
    /// # Panics
    /// If `head_dim` is not `freqs.head_dim()`, the last axis is not a
    /// multiple of `head_dim`, or `positions` does not have one entry per row.
    pub fn rope(
        &self,
        x: &Var<T>,
        positions: &[usize],
        freqs: &RopeFrequencies,
        head_dim: usize,
    ) -> Var<T> {
        let sx = x.shape().to_vec();
        assert!(
            head_dim > 0 && head_dim == freqs.head_dim(),
            "rope: head size {head_dim} does not match {} frequencies",
            freqs.inv_freq.len()
        );
        let c = *sx.last().unwrap_or(&0);
        assert!(
            c > 0 && c.is_multiple_of(head_dim),
            "rope: input {sx:?} is not rows of heads of {head_dim}"
        );
        let n = x.value().len() / c;
        assert!(
            positions.len() == n,
            "rope: {} positions for {n} rows of input {sx:?}",
            positions.len()
        );
        // One table row per distinct position.
        let mut table_row = BTreeMap::new();
        for &p in positions {
            let next = table_row.len();
            table_row.entry(p).or_insert(next);
        }
        let mut table_positions = vec![0; table_row.len()];
        for (&p, &r) in &table_row {
            table_positions[r] = p;
        }
        let rows: Vec<usize> = positions.iter().map(|p| table_row[p]).collect();
        let (cos, sin) = freqs.cos_sin::<T>(&table_positions);

        let inp = contiguous(x.value());
        let mut out = vec![T::zero(); n * c];
        rope_forward(&mut out, &inp, &cos, &sin, &rows, head_dim);
        drop(inp);
        let y = Tensor::from_shape_vec(IxDyn(&sx), out).unwrap();
        if !self.needs_grad(&[x]) {
            return self.record("rope", y, &[x], |_| vec![None]);
        }
        self.record("rope", y, &[x], move |dy| {
            let dout = contiguous(dy);
            let mut dinp = vec![T::zero(); n * c];
            rope_backward(&mut dinp, &dout, &cos, &sin, &rows, head_dim);
            vec![Some(Tensor::from_shape_vec(IxDyn(&sx), dinp).unwrap())]
        })
    }
}
