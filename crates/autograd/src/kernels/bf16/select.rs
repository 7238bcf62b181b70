//! Which bf16 microkernel a CPU with AVX512_BF16 runs: `vdpbf16ps`, or the
//! f32 FMA kernels on bf16-rounded operands. The two give the same bits
//! (module docs of [`super`]), so the choice is only one of speed, and it
//! differs between CPUs that report the same features:
//!
//! - On Zen 4 and Zen 5, one `vdpbf16ps` does twice an FMA's work at the
//!   same rate: 221 GFLOP/s in L1 against ~110 for f32 FMAs on a Zen 4,
//!   470-550 on a Zen 5 (docs/bf16.md).
//! - On an Intel Xeon of cpu family 6, model 207 (Emerald Rapids), it issues
//!   at half an FMA's rate: 87-102 GFLOP/s in L1 against 127-194 for the
//!   512-bit f32 kernel, so the FMA path is the faster there (PyTorch's
//!   oneDNN bf16 `matmul` ran at 84-102 on the same core).
//!
//! Rather than a table of CPU models, the choice is measured once per
//! process, on first use: both microkernels run on one tile in L1,
//! alternating, for about a millisecond, and the faster one is kept. A
//! [`force`] overrides it (the tests compare the two paths this way).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use super::pack::{MR, NR};
use super::{avx512, Microkernel};
use crate::kernels::sgemm::{self, Update};

/// Set by [`force`]: 0 = measured, 1 = `vdpbf16ps`, 2 = the FMA kernels.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// Whether `vdpbf16ps` outran the FMA kernels, measured once.
static VDPBF16PS_FASTER: OnceLock<bool> = OnceLock::new();

/// Makes every later bf16 GEMM of the process run `kernel` (`Some`), or the
/// measured choice again (`None`), for comparisons of the two paths end to
/// end.
///
/// # Panics
/// If `Avx512Bf16` is asked for on a CPU without AVX512_BF16.
pub fn force(kernel: Option<Microkernel>) {
    let code = match kernel {
        None => 0,
        Some(Microkernel::Avx512Bf16) => {
            assert!(avx512::available(), "this CPU has no AVX512_BF16");
            1
        }
        Some(Microkernel::Fma) => 2,
    };
    FORCED.store(code, Ordering::Relaxed);
}

/// The microkernel of the bf16 GEMM: the forced one, else `vdpbf16ps` where
/// the CPU has it and it outruns the FMA kernels, else the FMA kernels.
pub fn chosen() -> Microkernel {
    match FORCED.load(Ordering::Relaxed) {
        1 => Microkernel::Avx512Bf16,
        2 => Microkernel::Fma,
        _ if avx512::available() && *VDPBF16PS_FASTER.get_or_init(vdpbf16ps_is_faster) => {
            Microkernel::Avx512Bf16
        }
        _ => Microkernel::Fma,
    }
}

/// Pairs of `k` per timed call: both kernels' panels stay in a 32 KiB L1
/// (8 + 48 words a pair for `vdpbf16ps`, 14 KiB; up to 8 + 48 floats a
/// step for the FMA kernel, 128 steps, 28 KiB).
const PAIRS: usize = 64;

/// Times both microkernels on one tile in L1, 7 alternating rounds of about
/// 0.1 ms each, and compares their fastest rounds in FLOP/s (a round slowed
/// by other work on the machine does not count).
fn vdpbf16ps_is_faster() -> bool {
    let fma = sgemm::Microkernel::detect();
    let (mr, nr) = fma.tile();
    let steps = 2 * PAIRS;
    // bf16 1.0 in both halves of each word; 1.0 as f32: no denormals.
    let (a_words, b_words) = (
        vec![0x3F80_3F80u32; MR * PAIRS],
        vec![0x3F80_3F80u32; NR * PAIRS],
    );
    let (a_floats, b_floats) = (vec![1.0f32; mr * steps], vec![1.0f32; nr * steps]);
    let mut tile = [0.0f32; MR * NR];
    let mut fma_tile = vec![0.0f32; mr * nr];
    let calls = 96;
    let fastest = |best: &mut f64, f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..calls {
            f();
        }
        *best = best.min(start.elapsed().as_secs_f64());
    };
    let (mut vdp_secs, mut fma_secs) = (f64::MAX, f64::MAX);
    for _ in 0..7 {
        fastest(&mut vdp_secs, &mut || {
            Microkernel::Avx512Bf16.run(&a_words, &b_words, &mut tile)
        });
        fastest(&mut fma_secs, &mut || {
            // SAFETY: `detect` chose a kernel this CPU runs; the panels hold
            // `steps` steps of `mr` and `nr` floats, the tile `mr` rows of `nr`.
            unsafe {
                fma.run(
                    steps,
                    a_floats.as_ptr(),
                    b_floats.as_ptr(),
                    fma_tile.as_mut_ptr(),
                    nr,
                    Update::Set,
                )
            }
        });
    }
    std::hint::black_box((&tile, &fma_tile));
    let vdp_rate = (calls * MR * NR * 2 * steps) as f64 / vdp_secs;
    let fma_rate = (calls * mr * nr * 2 * steps) as f64 / fma_secs;
    vdp_rate >= fma_rate
}
