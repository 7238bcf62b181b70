//! LayerNorm forward and backward loops (llm.c style).
