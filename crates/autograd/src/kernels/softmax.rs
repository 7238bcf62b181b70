//! Row softmax / log-softmax loops.
