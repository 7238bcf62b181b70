//! The integration tests of `autograd`: gradient checks, kernels against
//! their portable paths, goldens, optimizers and determinism.
//!
//! One test binary for the crate, each file below a module of it, so the
//! generic model and tape code is compiled once for the crate's tests rather
//! than once per file. One file's tests:
//! `cargo test --release -p autograd --test autograd_tests sgemm::`.

mod bad_inputs;
mod bf16_gemm;
mod bf16_weights;
mod determinism;
mod dropout;
mod gradcheck_core;
mod gradcheck_llama;
mod gradcheck_nn;
mod gradcheck_shape_reduce;
mod grouped_query_attention;
mod logprobs;
mod no_grad;
mod optim;
mod plain_attention;
mod rope_golden;
mod segment_attention;
mod sgemm;
mod softmax;
