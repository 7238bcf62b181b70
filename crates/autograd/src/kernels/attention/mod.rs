//! Causal multi-head self-attention, three ways. Read them in this order:
//!
//! 1. [`plain`]: what attention is. One query row at a time, in scalar
//!    loops: dot products with the earlier keys, a softmax, a weighted sum of
//!    the values; the backward undoes the same three passes in reverse, each
//!    loop quoting the forward line it differentiates. No GEMM, no blocks, no
//!    threads. It is gradchecked in f64 (`Tape::plain_causal_attention`) and
//!    is the oracle the other two are tested against.
//! 2. [`blocked`]: what the model runs (`Tape::causal_attention`,
//!    `Tape::segment_attention`). The same math, but per (b, h) the two
//!    products `q @ k^T` and `att @ v` are GEMMs on strided views of `qkv`;
//!    the queries go in blocks of [`blocked::ROW_BLOCK`] rows that multiply
//!    only the keys they can see; (b, h) pairs run in parallel. It also takes
//!    a [`KeyGap`] per sequence (keys hidden from the later queries, for
//!    prefix sharing) and padding; with no gap it computes what [`plain`]
//!    does, to float rounding.
//! 3. [`cached`]: generation. Forward only: the `T_new` newest queries of one
//!    sequence against all `L` keys and values so far (kept by
//!    `transformer::KvCache`), i.e. the last `T_new` rows of [`plain`]'s
//!    output over the `L` positions, without computing the rows before.
//!
//! All three read the output of the `c_attn` projection, `qkv: (B, T, 3C)`,
//! holding q, k and v in that order along the last axis: head `h` of q is
//! the column block `h*hs .. (h+1)*hs` (hs = C / NH), of k the same block
//! shifted by C, of v shifted by 2C. The output is `(B, T, C)`, the heads
//! side by side in the same column blocks.
//!
//! The math of all three, per (b, h), `scale = 1 / sqrt(hs)`; the backward
//! (not in [`cached`]) runs its lines bottom up, each beside the forward line
//! it differentiates:
//!
//! ```text
//! forward                                       backward
//! preatt[t, t2] = q[t] . k[t2] * scale  t2<=t   dq[t] += dpreatt[t, t2] k[t2] * scale,  dk[t2] += dpreatt[t, t2] q[t] * scale
//! att[t] = softmax(preatt[t, ..=t]), 0 after    dpreatt[t, t2] = att[t, t2] (datt[t, t2] - sum_t3 att[t, t3] datt[t, t3])
//! out[t] = sum_t2 att[t, t2] v[t2]              datt[t, t2] = dout[t] . v[t2],  dv[t2] += att[t, t2] dout[t]
//! ```
//! The forward saves `att: (B, NH, T, T)`, all the backward needs besides
//! `qkv`.

pub mod blocked;
pub mod cached;
pub mod plain;

pub use blocked::KeyGap;

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionDims {
    /// Batch size B.
    pub b: usize,
    /// Sequence length T.
    pub t: usize,
    /// Channels C (= NH * hs).
    pub c: usize,
    /// Number of heads NH.
    pub nh: usize,
}

impl AttentionDims {
    /// Head size hs = C / NH.
    pub fn hs(&self) -> usize {
        self.c / self.nh
    }

    /// Panics, naming `kernel`, unless the buffers of a forward or backward
    /// call have these sizes: `qkv` (B, T, 3C), `out` (B, T, C), `att`
    /// (B, NH, T, T) (in the backward, `dqkv`, `dout` and the saved `att`).
    pub fn check(&self, kernel: &str, qkv: usize, out: usize, att: usize) {
        let AttentionDims { b, t, c, nh } = *self;
        let (qkv_name, out_name) = if kernel.ends_with("backward") {
            ("qkv and dqkv", "dout")
        } else {
            ("qkv", "out")
        };
        assert_eq!(qkv, b * t * 3 * c, "{kernel}: {qkv_name} is not (B, T, 3C)");
        assert_eq!(out, b * t * c, "{kernel}: {out_name} is not (B, T, C)");
        assert_eq!(att, b * nh * t * t, "{kernel}: att is not (B, NH, T, T)");
    }
}
