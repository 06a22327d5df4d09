//! The CPU twins of the WGSL kernels: same names, same semantics, plain Rust over slices.
//! They are the reference the GPU is tested against, and the CPU device runs on them.
//! Inputs are assumed checked (see `crate::ops`); these functions do no validation.

pub mod activation;
pub mod bias;
pub mod loss;
pub mod matmul;
pub mod norm;
