//! Causal multi-head self-attention forward and backward loops.
