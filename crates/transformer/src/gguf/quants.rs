//! ggml's tensor types and their dequantization to f32.
//!
//! Each quantized type stores a row as blocks of `block_size` values in
//! `type_size` bytes (little-endian). The layouts and the arithmetic follow
//! gguf-py's `quants.py` (numpy, itself a port of ggml's `dequantize_row_*`)
//! operation for operation, in f32 and without fused multiply-adds, so the
//! values are bitwise the ones gguf-py gives (tests/golden/gguf).

use half::f16;

/// Values in a k-quant super-block.
const QK_K: usize = 256;

/// A ggml tensor type, as numbered in a GGUF file (`ggml_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

impl GgmlType {
    /// The type numbered `id` in a file; `None` for a number ggml does not
    /// define (or one this reader does not know the size of).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            _ => return None,
        })
    }

    /// ggml's name for the type (`Q4_K`, `BF16`, ...).
    pub fn name(self) -> String {
        format!("{self:?}")
    }

    /// (values per block, bytes per block), gguf-py's `GGML_QUANT_SIZES`.
    pub fn block_layout(self) -> (usize, usize) {
        use GgmlType::*;
        match self {
            F32 => (1, 4),
            F16 => (1, 2),
            Q4_0 => (32, 2 + 16),
            Q4_1 => (32, 2 + 2 + 16),
            Q5_0 => (32, 2 + 4 + 16),
            Q5_1 => (32, 2 + 2 + 4 + 16),
            Q8_0 => (32, 2 + 32),
            Q8_1 => (32, 4 + 4 + 32),
            Q2_K => (QK_K, 2 + 2 + QK_K / 16 + QK_K / 4),
            Q3_K => (QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
            Q4_K => (QK_K, 2 + 2 + QK_K / 2 + 12),
            Q5_K => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12),
            Q6_K => (QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16),
            Q8_K => (QK_K, 4 + QK_K + QK_K / 8),
            IQ2_XXS => (QK_K, 2 + QK_K / 4),
            IQ2_XS => (QK_K, 2 + QK_K / 4 + QK_K / 32),
            IQ3_XXS => (QK_K, 2 + QK_K / 4 + QK_K / 8),
            IQ1_S => (QK_K, 2 + QK_K / 8 + QK_K / 16),
            IQ4_NL => (32, 2 + 16),
            IQ3_S => (QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4),
            IQ2_S => (QK_K, 2 + QK_K / 4 + QK_K / 16),
            IQ4_XS => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 64),
            I8 => (1, 1),
            I16 => (1, 2),
            I32 => (1, 4),
            I64 => (1, 8),
            F64 => (1, 8),
            IQ1_M => (QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
            BF16 => (1, 2),
            TQ1_0 => (QK_K, 2 + 4 * 13),
            TQ2_0 => (QK_K, 2 + 64),
            MXFP4 => (32, 1 + 16),
        }
    }

    /// Whether [`dequantize`] reads this type.
    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(
            self,
            F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_1 | Q4_K | Q5_K | Q6_K
        )
    }
}

/// The types [`dequantize`] reads, for error messages.
pub const DEQUANTIZED_TYPES: &str = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K";

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

/// The f32 values of `data`, the bytes of `n_values` values of type `ty`.
///
/// `Err` names the problem (a type not in [`DEQUANTIZED_TYPES`], or a byte
/// count that is not whole blocks of `n_values`); the caller adds the file
/// and tensor.
pub fn dequantize(ty: GgmlType, data: &[u8], n_values: usize) -> Result<Vec<f32>, String> {
    let (block, type_size) = ty.block_layout();
    if !n_values.is_multiple_of(block) || data.len() != n_values / block * type_size {
        return Err(format!(
            "{} values of {} need {} whole blocks of {block}, not {} bytes",
            n_values,
            ty.name(),
            n_values.div_ceil(block),
            data.len()
        ));
    }
    let mut out = vec![0f32; n_values];
    let blocks = data
        .chunks_exact(type_size)
        .zip(out.chunks_exact_mut(block));
    match ty {
        GgmlType::F32 => {
            for (b, y) in blocks {
                y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (b, y) in blocks {
                y[0] = f16_at(b, 0);
            }
        }
        GgmlType::BF16 => {
            for (b, y) in blocks {
                y[0] = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
            }
        }
        GgmlType::Q8_0 => blocks.for_each(|(b, y)| q8_0(b, y)),
        GgmlType::Q4_0 => blocks.for_each(|(b, y)| q4_0(b, y)),
        GgmlType::Q4_1 => blocks.for_each(|(b, y)| q4_1(b, y)),
        GgmlType::Q4_K => blocks.for_each(|(b, y)| q4_k(b, y)),
        GgmlType::Q5_K => blocks.for_each(|(b, y)| q5_k(b, y)),
        GgmlType::Q6_K => blocks.for_each(|(b, y)| q6_k(b, y)),
        _ => {
            return Err(format!(
                "type {} cannot be dequantized (this reader reads {DEQUANTIZED_TYPES})",
                ty.name()
            ))
        }
    }
    Ok(out)
}

/// Q8_0: d: f16, qs: [i8; 32]; y = qs * d.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (yi, &q) in y.iter_mut().zip(&b[2..34]) {
        *yi = f32::from(q as i8) * d;
    }
}

/// Q4_0: d: f16, qs: [u8; 16]; value i < 16 is the low nibble of qs[i],
/// value 16 + i its high nibble; y = d * (q - 8).
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (i, &q) in b[2..18].iter().enumerate() {
        y[i] = d * f32::from((q & 0x0F) as i8 - 8);
        y[i + 16] = d * f32::from((q >> 4) as i8 - 8);
    }
}

/// Q4_1: d: f16, m: f16, qs: [u8; 16] (nibbles as Q4_0); y = d * q + m.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    for (i, &q) in b[4..20].iter().enumerate() {
        y[i] = d * f32::from(q & 0x0F) + m;
        y[i + 16] = d * f32::from(q >> 4) + m;
    }
}

/// The 6-bit scales and mins of the 8 sub-blocks of a Q4_K / Q5_K
/// super-block, packed in 12 bytes (gguf-py's `Q4_K.get_scale_min`).
fn scale_min_k4(scales: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (d, m, md) = (&scales[0..4], &scales[4..8], &scales[8..12]);
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = d[j] & 0x3F;
        mn[j] = m[j] & 0x3F;
        sc[j + 4] = (md[j] & 0x0F) | ((d[j] >> 2) & 0x30);
        mn[j + 4] = (md[j] >> 4) | ((m[j] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Q4_K: d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]. Sub-block j
/// (32 values) takes the low nibbles of qs[32 (j/2)..][..32] for even j, the
/// high ones for odd j; y = (d * sc[j]) * q - (dmin * m[j]).
fn q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let qs = &b[16..144];
    for j in 0..8 {
        let dl = d * f32::from(sc[j]);
        let ml = dmin * f32::from(mn[j]);
        let shift = 4 * (j % 2);
        for l in 0..32 {
            let q = (qs[32 * (j / 2) + l] >> shift) & 0x0F;
            y[32 * j + l] = dl * f32::from(q) - ml;
        }
    }
}

/// Q5_K: Q4_K with a fifth bit: d, dmin, scales: [u8; 12], qh: [u8; 32],
/// qs: [u8; 128]; bit j of qh[l] is bit 4 of value l of sub-block j.
fn q5_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let qh = &b[16..48];
    let qs = &b[48..176];
    for j in 0..8 {
        let dl = d * f32::from(sc[j]);
        let ml = dmin * f32::from(mn[j]);
        let shift = 4 * (j % 2);
        for l in 0..32 {
            let low = (qs[32 * (j / 2) + l] >> shift) & 0x0F;
            let high = (qh[l] >> j) & 0x01;
            y[32 * j + l] = dl * f32::from(low | (high << 4)) - ml;
        }
    }
}

/// Q6_K: ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16. Group g =
/// 4h + 2s + t (h, s, t in 0..2) of 32 values takes nibble s of
/// ql[64h + 32t + l] and bits 2(2s + t).. of qh[32h + l]; value e has the
/// scale scales[e / 16]; y = (d * scale) * (q - 32).
fn q6_k(b: &[u8], y: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let scales = &b[192..208];
    let d = f16_at(b, 208);
    for g in 0..8 {
        let (h, s, t) = (g / 4, (g / 2) % 2, g % 2);
        for l in 0..32 {
            let low = (ql[64 * h + 32 * t + l] >> (4 * s)) & 0x0F;
            let high = (qh[32 * h + l] >> (2 * (2 * s + t))) & 0x03;
            let q = (low | (high << 4)) as i8 - 32;
            let e = 32 * g + l;
            let dl = d * f32::from(scales[e / 16] as i8);
            y[e] = dl * f32::from(q);
        }
    }
}
