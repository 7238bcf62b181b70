/// A learning-rate schedule: the multiplier of the base rate at each step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrSchedule {
    /// The base rate at every step.
    Constant,
    /// Linear warmup over `warmup` steps (step `s < warmup` gets
    /// `(s + 1) / warmup`), then linear decay to 0 at step `total`.
    WarmupLinear {
        /// Steps of warmup (0 for none).
        warmup: u64,
        /// The step at which the rate reaches 0.
        total: u64,
    },
    /// Linear warmup as above, then cosine decay to `min_ratio` at step
    /// `total`: `min + (1 - min) (1 + cos(pi p)) / 2`, `p = (s - warmup) / (total - warmup)`.
    WarmupCosine {
        /// Steps of warmup (0 for none).
        warmup: u64,
        /// The step at which the rate reaches `min_ratio` (and stays).
        total: u64,
        /// The final multiplier of the base rate.
        min_ratio: f64,
    },
}

impl LrSchedule {
    /// The learning rate of step `step` (0-based) for base rate `base_lr`.
    pub fn lr(&self, base_lr: f64, step: u64) -> f64 {
        base_lr * self.factor(step)
    }

    /// The multiplier of the base rate at step `step` (0-based).
    pub fn factor(&self, step: u64) -> f64 {
        let warm = |warmup: u64| {
            if warmup > 0 && step < warmup {
                Some((step + 1) as f64 / warmup as f64)
            } else {
                None
            }
        };
        match *self {
            LrSchedule::Constant => 1.0,
            LrSchedule::WarmupLinear { warmup, total } => warm(warmup).unwrap_or_else(|| {
                let span = total.saturating_sub(warmup).max(1) as f64;
                (1.0 - (step - warmup) as f64 / span).max(0.0)
            }),
            LrSchedule::WarmupCosine {
                warmup,
                total,
                min_ratio,
            } => warm(warmup).unwrap_or_else(|| {
                let span = total.saturating_sub(warmup).max(1) as f64;
                let progress = ((step - warmup) as f64 / span).min(1.0);
                min_ratio
                    + (1.0 - min_ratio) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }),
        }
    }
}
