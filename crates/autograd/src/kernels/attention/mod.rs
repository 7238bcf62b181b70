//! Causal self-attention with grouped-query heads, three ways. Read them in this order:
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
//!    only the keys they can see; the forward runs the (b, h) pairs in
//!    parallel, the backward the (b, kv head) pairs (a kv head's gradients
//!    sum over its query heads, so one task owns them). It also takes
//!    a [`KeyGap`] per sequence (keys hidden from the later queries, for
//!    prefix sharing) and padding; with no gap it computes what [`plain`]
//!    does, to float rounding.
//! 3. [`cached`]: generation. Forward only: the `T_new` newest queries of one
//!    sequence against all `L` keys and values so far (kept by
//!    `transformer::KvCache`), i.e. the last `T_new` rows of [`plain`]'s
//!    output over the `L` positions, without computing the rows before.
//!
//! **Heads.** Grouped-query attention (GQA, Llama, Qwen, SmolLM2): `NH`
//! query heads share `NKV` key/value heads ([`AttentionHeads`]), every head
//! of size `hs`; query head `h` reads kv head `g = h / G`, `G = NH / NKV`
//! consecutive query heads per kv head (what `repeat_kv` of Hugging Face
//! transformers gives). GPT-2's multi-head attention is `NKV = NH` (G = 1),
//! multi-query attention `NKV = 1`.
//!
//! All three read the output of the qkv projection, `qkv: (B, T, (NH + 2 NKV) hs)`,
//! holding q, k and v in that order along the last axis:
//!
//! ```text
//! [ q head 0 | .. | q head NH-1 | k head 0 | .. | k head NKV-1 | v head 0 | .. | v head NKV-1 ]
//!   each hs wide: q of head h at h*hs, k of kv head g at NH*hs + g*hs, v at (NH + NKV)*hs + g*hs
//! ```
//! The output is `(B, T, NH hs)`, the query heads side by side, head `h` in
//! columns `h*hs .. (h+1)*hs`.
//!
//! The math of all three, per (b, h), `g = h / G`, `scale = 1 / sqrt(hs)`;
//! the backward (not in [`cached`]) runs its lines bottom up, each beside the
//! forward line it differentiates. A kv head serves its G query heads, so its
//! gradients sum over them:
//!
//! ```text
//! forward                                          backward
//! preatt[t, t2] = q[t] . k_g[t2] * scale  t2<=t    dq[t] += dpreatt[t, t2] k_g[t2] * scale,  dk_g[t2] += dpreatt[t, t2] q[t] * scale
//! att[t] = softmax(preatt[t, ..=t]), 0 after       dpreatt[t, t2] = att[t, t2] (datt[t, t2] - sum_t3 att[t, t3] datt[t, t3])
//! out[t] = sum_t2 att[t, t2] v_g[t2]               datt[t, t2] = dout[t] . v_g[t2],  dv_g[t2] += att[t, t2] dout[t]
//! ```
//! so `dk[g]` and `dv[g]` collect the `+=` lines of all the G query heads
//! `h = g*G .. (g+1)*G` of kv head `g`.
//! The forward saves `att: (B, NH, T, T)`, all the backward needs besides
//! `qkv`.

pub mod blocked;
pub mod cached;
pub mod plain;

pub use blocked::KeyGap;

/// The heads of an attention call: `n_head` query heads sharing
/// `n_kv_head` key/value heads, all `head_dim` wide. Query head `h` reads
/// kv head `h / group()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionHeads {
    /// Query heads NH.
    pub n_head: usize,
    /// Key/value heads NKV; divides NH.
    pub n_kv_head: usize,
    /// Size of every head, hs.
    pub head_dim: usize,
}

impl AttentionHeads {
    /// GPT-2's multi-head attention: every query head has its own key and
    /// value head, `head_dim = n_embd / n_head`.
    ///
    /// # Panics
    /// Unless `n_head > 0` divides `n_embd > 0`.
    pub fn multi_head(n_head: usize, n_embd: usize) -> AttentionHeads {
        assert!(
            n_head > 0 && n_embd > 0 && n_embd.is_multiple_of(n_head),
            "attention heads: {n_embd} channels do not split into {n_head} heads"
        );
        AttentionHeads {
            n_head,
            n_kv_head: n_head,
            head_dim: n_embd / n_head,
        }
    }

    /// Width of q and of the output: NH hs.
    pub fn q_width(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of k and of v: NKV hs.
    pub fn kv_width(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// Width of qkv: (NH + 2 NKV) hs.
    pub fn qkv_width(&self) -> usize {
        self.q_width() + 2 * self.kv_width()
    }

    /// Query heads per kv head, G = NH / NKV.
    pub fn group(&self) -> usize {
        self.n_head / self.n_kv_head
    }

    /// `Err` with the reason unless every size is positive and `n_kv_head`
    /// divides `n_head`.
    pub fn check(&self) -> Result<(), String> {
        let AttentionHeads {
            n_head,
            n_kv_head,
            head_dim,
        } = *self;
        if n_head > 0 && n_kv_head > 0 && head_dim > 0 && n_head.is_multiple_of(n_kv_head) {
            Ok(())
        } else {
            Err(format!(
                "attention heads: {n_head} query heads, {n_kv_head} key/value heads of size \
                 {head_dim}: all must be positive and the key/value heads must divide the query heads"
            ))
        }
    }

    /// [`AttentionHeads::check`], panicking with its message.
    pub fn validate(&self) {
        if let Err(message) = self.check() {
            panic!("{message}");
        }
    }
}

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionDims {
    /// Batch size B.
    pub b: usize,
    /// Sequence length T.
    pub t: usize,
    /// The heads: NH, NKV, hs.
    pub heads: AttentionHeads,
}

impl AttentionDims {
    /// Head size hs.
    pub fn hs(&self) -> usize {
        self.heads.head_dim
    }

    /// Panics, naming `kernel`, unless the heads are valid and the buffers of
    /// a forward or backward call have these sizes: `qkv` (B, T, (NH + 2 NKV) hs),
    /// `out` (B, T, NH hs), `att` (B, NH, T, T) (in the backward, `dqkv`,
    /// `dout` and the saved `att`).
    pub fn check(&self, kernel: &str, qkv: usize, out: usize, att: usize) {
        let AttentionDims { b, t, heads } = *self;
        if let Err(message) = heads.check() {
            panic!("{kernel}: {message}");
        }
        let (qkv_name, out_name) = if kernel.ends_with("backward") {
            ("qkv and dqkv", "dout")
        } else {
            ("qkv", "out")
        };
        let (qkv_w, q_w, nh) = (heads.qkv_width(), heads.q_width(), heads.n_head);
        assert_eq!(
            qkv,
            b * t * qkv_w,
            "{kernel}: {qkv_name} is not (B, T, (NH + 2 NKV) hs) = ({b}, {t}, {qkv_w})"
        );
        assert_eq!(
            out,
            b * t * q_w,
            "{kernel}: {out_name} is not (B, T, NH hs) = ({b}, {t}, {q_w})"
        );
        assert_eq!(
            att,
            b * nh * t * t,
            "{kernel}: att is not (B, NH, T, T) = ({b}, {nh}, {t}, {t})"
        );
    }
}
