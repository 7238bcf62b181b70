//! f32 <-> bfloat16.
//!
//! bfloat16 is the top half of an f32: 1 sign bit, the same 8 exponent bits,
//! 7 of the 23 mantissa bits. So it has f32's range and 8 significant bits
//! (relative spacing 2^-7, rounding error at most 2^-8 relative), and
//! widening it back to f32 is a shift: `f32::from_bits((b as u32) << 16)`.
//!
//! Narrowing rounds to nearest, ties to even, on the 16 dropped bits:
//!
//! ```text
//! bits   = x.to_bits()
//! b      = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
//! ```
//!
//! (a carry out of the mantissa correctly bumps the exponent, and values
//! past the largest bf16 round to infinity). Two special cases, as
//! `vcvtne2ps2bf16` does them: NaN stays a (quiet) NaN, and f32 denormals
//! become a zero of the same sign, which is what `vdpbf16ps` would do to them
//! anyway ("input denormals are treated as zero").

/// A bfloat16 value, as its 16 bits.
pub type Bf16 = u16;

/// `x` rounded to the nearest bf16 (ties to even); NaN stays NaN, denormals
/// flush to a signed zero. Branch-free (selects), so loops over it vectorize.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> Bf16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16;
    let is_nan = bits & 0x7FFF_FFFF > 0x7F80_0000;
    let is_zero_or_denormal = bits & 0x7F80_0000 == 0;
    let quiet_nan = (bits >> 16) | 0x0040;
    let signed_zero = (bits >> 16) & 0x8000;
    let out = if is_nan {
        quiet_nan
    } else if is_zero_or_denormal {
        signed_zero
    } else {
        rounded
    };
    out as Bf16
}

/// The f32 with the same value as `b` (exact).
#[inline(always)]
pub fn bf16_to_f32(b: Bf16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// `x` rounded to bf16 and widened back: the value a bf16 GEMM multiplies.
#[inline(always)]
pub fn round_to_bf16(x: f32) -> f32 {
    bf16_to_f32(f32_to_bf16(x))
}

/// Two bf16 values in one 32-bit word, `lo` in the low half: the unit that
/// `vdpbf16ps` multiplies (a pair of consecutive `k`).
#[inline(always)]
pub fn pair(lo: f32, hi: f32) -> u32 {
    f32_to_bf16(lo) as u32 | (f32_to_bf16(hi) as u32) << 16
}

/// The two f32 values of a [`pair`] word: (low, high).
#[inline(always)]
pub fn unpair(word: u32) -> (f32, f32) {
    (
        f32::from_bits(word << 16),
        f32::from_bits(word & 0xFFFF_0000),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even() {
        let one = 1.0f32.to_bits();
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1).
        assert_eq!(round_to_bf16(f32::from_bits(one + 0x8000)), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even (1 + 2^-6).
        assert_eq!(
            round_to_bf16(f32::from_bits(one + 0x18000)),
            1.0 + 2f32.powi(-6)
        );
        // just above the halfway point rounds up
        assert_eq!(
            round_to_bf16(f32::from_bits(one + 0x8001)),
            1.0 + 2f32.powi(-7)
        );
        assert_eq!(round_to_bf16(-3.0), -3.0);
        assert_eq!(round_to_bf16(f32::MAX), f32::INFINITY);
        assert!(round_to_bf16(f32::NAN).is_nan());
        assert_eq!(round_to_bf16(f32::INFINITY), f32::INFINITY);
        let denormal = f32::from_bits(1);
        assert_eq!(round_to_bf16(denormal).to_bits(), 0);
        assert_eq!(round_to_bf16(-denormal).to_bits(), 0x8000_0000);
    }

    #[test]
    fn rounding_error_is_at_most_half_a_bf16_ulp() {
        let mut x = 1.0e-30f32;
        while x < 1.0e30 {
            for v in [x, -x * 1.2345] {
                let r = round_to_bf16(v);
                assert!(((r - v) / v).abs() <= 2f32.powi(-8), "{v} -> {r}");
            }
            x *= 1.37;
        }
    }

    #[test]
    fn pairs_round_trip() {
        let (lo, hi) = unpair(pair(1.5, -2.25));
        assert_eq!((lo, hi), (1.5, -2.25));
    }
}
