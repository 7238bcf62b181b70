//! Fused neural-network ops: embedding, LayerNorm, causal self-attention, cross-entropy.
