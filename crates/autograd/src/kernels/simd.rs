//! The vectorization helpers every kernel shares: row reductions in lanes,
//! and `exp`/`tanh` written so that the loops calling them vectorize.
//!
//! **Why lanes.** Floating-point addition is not associative, so the
//! compiler may not turn `for x in row { sum += x }` into vector code: that
//! would change the order of the additions, hence the result. Written with 8
//! independent accumulators (`acc[l] += x[8*i + l]`), the loop *is* the
//! vector code: one 8-wide add per step, no dependence between lanes. The
//! lanes are then combined in a fixed tree, so
//!
//! - the result depends only on the data (the row and its length), never on
//!   the number of threads or on how rows were split over them: the kernels
//!   call these helpers on whole rows, one row per call;
//! - it differs from a left-to-right sum only by rounding (a different but
//!   fixed order, usually a more accurate one).
//!
//! **Why branch-free `exp` and `tanh`.** libm's `expf`/`tanhf` are calls
//! with branches, so a loop over them stays scalar, and in f32 they would be
//! the whole cost of a softmax or a GELU. [`exp_f32`] and [`tanh_f32`] are
//! straight-line polynomials with clamps (min/max and selects), which the
//! compiler inlines and vectorizes. The kernels do not call them directly:
//! they call [`Float::exp_fast`] and [`Float::tanh_fast`], which are these
//! polynomials for `f32` and the exact libm functions for `f64`, so gradient
//! checks (f64) see the true functions.

use crate::float::Float;

/// Independent accumulators of the lane reductions (8 f32 fill one 256-bit
/// AVX register).
const LANES: usize = 8;

/// `sum_i x_i` in 8 interleaved partial sums, combined in a fixed order.
#[inline(always)]
pub fn sum_lanes<T: Float>(x: &[T]) -> T {
    sum_map_lanes(x, |v| v)
}

/// `sum_i f(x_i)` in 8 interleaved partial sums, combined in a fixed order:
///
/// ```text
/// acc[l] = sum over whole chunks of f(x[8 i + l])          l = 0..8
/// total  = sum of f over the last len % 8 values (in order)
///        + ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
/// ```
/// `f` is inlined into the loop (e.g. `(x - mean)^2` for a variance).
#[inline(always)]
pub fn sum_map_lanes<T: Float>(x: &[T], f: impl Fn(T) -> T) -> T {
    let mut acc = [T::zero(); LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += f(c[l]);
        }
    }
    let mut total = T::zero();
    for &v in chunks.remainder() {
        total += f(v);
    }
    let pairs = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    total + ((pairs[0] + pairs[2]) + (pairs[1] + pairs[3]))
}

/// Independent accumulators of [`sum_exp_lanes`]: twice [`LANES`].
const EXP_LANES: usize = 16;

/// `sum_i exp(x_i - shift)` ([`Float::exp_fast`]) in 16 interleaved partial
/// sums, folded left to right, then the last `len % 16` terms in order.
///
/// Sixteen, not eight: each term is a polynomial whose result feeds one
/// accumulator, and with eight the loop did not vectorize: the log-prob
/// kernel's forward + backward on [16, 128, 32000] logits took 3.6x as long
/// (`cargo bench --bench logprobs`: 360 against 100 ms, 1 thread, on a Xeon
/// of family 6, model 207). The log-softmax of the log-prob kernels is its
/// one user.
#[inline(always)]
pub fn sum_exp_lanes<T: Float>(x: &[T], shift: T) -> T {
    let mut acc = [T::zero(); EXP_LANES];
    let mut chunks = x.chunks_exact(EXP_LANES);
    for c in &mut chunks {
        for l in 0..EXP_LANES {
            acc[l] += (c[l] - shift).exp_fast();
        }
    }
    let mut sum = acc.into_iter().fold(T::zero(), |a, b| a + b);
    for &v in chunks.remainder() {
        sum += (v - shift).exp_fast();
    }
    sum
}

/// `sum_i a_i b_i` in 8 interleaved partial sums: the lanes are combined as
/// in [`sum_lanes`], then the products of the last `len % 8` pairs are added
/// in order.
#[inline(always)]
pub fn dot_lanes<T: Float>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a_chunks.remainder(), b_chunks.remainder());
    for (a8, b8) in a_chunks.zip(b_chunks) {
        for l in 0..LANES {
            acc[l] += a8[l] * b8[l];
        }
    }
    let mut dot = sum_lanes(&acc);
    for (&x, &y) in a_rest.iter().zip(b_rest) {
        dot += x * y;
    }
    dot
}

/// `max_i x_i` in 8 interleaved partial maxima (`-inf` for an empty row).
///
/// The compare-and-select is written out (`if x > m { x } else { m }`), not
/// `f32::max`, whose NaN rule costs extra instructions per element.
#[inline(always)]
pub fn max_lanes<T: Float>(x: &[T]) -> T {
    let mut acc = [T::neg_infinity(); LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let mut m = T::neg_infinity();
    for &v in chunks.remainder().iter().chain(acc.iter()) {
        m = if v > m { v } else { m };
    }
    m
}

/// `e^x` in f32, branch-free: Cephes' `expf`, the body of
/// [`Float::exp_fast`] for `f32` (5-10x faster than libm's in a loop).
///
/// `x = n ln2 + r` with `|r| <= ln2/2`, `e^r` by a degree-6 polynomial
/// (relative error below 2 ulp), then `2^n` built in the exponent bits (as
/// two factors, so that `n = 128` is fine). Below `ln(FLT_MIN) = -87.34` the
/// result flushes to 0 (softmax only ever needs `x <= 0`), above
/// `ln(FLT_MAX)` it is `inf`, and NaN stays NaN. The polynomial's
/// coefficients are Cephes' as published.
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub fn exp_f32(x: f32) -> f32 {
    const LO: f32 = -87.336_55; // ln(FLT_MIN)
    const HI: f32 = 88.722_83; // ln(FLT_MAX)
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // ln 2 = LN2_HI + LN2_LO, LN2_HI exact in few bits
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest with the 1.5 * 2^23 trick: plain adds, so it vectorizes
    // without SSE4.1's round instruction.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(LO, HI); // NaN stays NaN
    let shifted = xc * LOG2E + ROUND;
    let n = shifted - ROUND;
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 5.000_000_1e-1;
    let er = p * r2 + r + 1.0;
    let n_half = n_int >> 1;
    let scale_a = f32::from_bits(((n_half + 127) as u32) << 23);
    let scale_b = f32::from_bits(((n_int - n_half + 127) as u32) << 23);
    let y = er * scale_a * scale_b;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        y
    }
}

/// `tanh(x)` in f32, branch-free: the body of [`Float::tanh_fast`] for
/// `f32`, for the GELU of the MLPs (3-4x faster than libm's `tanhf`, which
/// dominated the MLP's time).
///
/// A rational minimax approximation (Eigen's `ptanh_float`): odd degree-13
/// numerator over even degree-6 denominator on [-7.9053, 7.9053], outside
/// which f32 tanh is already +-1; accurate to a few ulp. The coefficients are
/// Eigen's, written in f64 and rounded to f32 once. (NaN comes out as -1:
/// `f32::max` drops it at the clamp; GELU's `x/2 (1 + tanh u)` is NaN anyway.)
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    const CLAMP: f64 = 7.905_311_107_635_498;
    const ALPHA: [f64; 7] = [
        4.893_524_558_917_86e-3,
        6.372_619_288_754_36e-4,
        1.485_722_357_179_79e-5,
        5.122_297_090_371_14e-8,
        -8.604_671_522_137_35e-11,
        2.000_187_904_824_77e-13,
        -2.760_768_477_423_55e-16,
    ];
    const BETA: [f64; 4] = [
        4.893_525_185_543_85e-3,
        2.268_434_632_439e-3,
        1.185_347_056_866_54e-4,
        1.198_258_394_667_02e-6,
    ];
    let x = x.max(-CLAMP as f32).min(CLAMP as f32);
    let x2 = x * x;
    let mut p = ALPHA[6] as f32;
    for &a in ALPHA[..6].iter().rev() {
        p = p * x2 + a as f32;
    }
    let mut q = BETA[3] as f32;
    for &b in BETA[..3].iter().rev() {
        q = q * x2 + b as f32;
    }
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_fast_is_accurate_in_f32_and_exact_in_f64() {
        let mut worst = 0f64;
        for i in -1_000_000..=1_000_000 {
            let x = i as f32 * 8.7e-5; // [-87, 87]: normal results
            let exact = (x as f64).exp();
            let err = (x.exp_fast() as f64 - exact).abs() / exact;
            worst = worst.max(err);
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!((-1e4f32).exp_fast(), 0.0);
        assert_eq!((-100f32).exp_fast(), 0.0);
        assert_eq!(0f32.exp_fast(), 1.0);
        assert_eq!(88.7f32.exp_fast(), 88.7f32.exp());
        assert_eq!(89f32.exp_fast(), f32::INFINITY);
        assert!(f32::NAN.exp_fast().is_nan());
        assert_eq!((-0.7f64).exp_fast(), (-0.7f64).exp());
    }

    #[test]
    fn tanh_fast_is_accurate_in_f32_and_exact_in_f64() {
        let mut worst = 0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4; // [-20, 20]
            let exact = (x as f64).tanh();
            let err = (x.tanh_fast() as f64 - exact).abs() / exact.abs().max(1e-30);
            worst = worst.max(if x == 0.0 { 0.0 } else { err });
        }
        assert!(worst < 1e-6, "relative error {worst}");
        assert_eq!(0.3f64.tanh_fast(), 0.3f64.tanh());
    }

    #[test]
    fn lane_reductions() {
        let x: Vec<f64> = (0..37).map(|i| ((i * 13) % 17) as f64 - 8.0).collect();
        assert_eq!(sum_lanes(&x), x.iter().sum::<f64>());
        assert_eq!(
            sum_map_lanes(&x, |v| v * v),
            x.iter().map(|v| v * v).sum::<f64>()
        );
        assert_eq!(dot_lanes(&x, &x), x.iter().map(|v| v * v).sum::<f64>());
        assert_eq!(max_lanes(&x), 8.0);
        assert_eq!(
            max_lanes(&x[..3]),
            x[..3].iter().cloned().fold(f64::MIN, f64::max)
        );
        assert_eq!(max_lanes::<f32>(&[]), f32::NEG_INFINITY);
    }
}
