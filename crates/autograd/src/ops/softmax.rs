//! Softmax and log-softmax along an axis (stable), and cross-entropy.
