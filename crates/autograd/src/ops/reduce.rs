//! Reductions: sums and means over all elements or over axes.

use ndarray::IxDyn;

use crate::float::Float;
use crate::kernels::elementwise as k;
use crate::tape::{Tape, Tensor, Var};

impl<T: Float> Tape<T> {
    /// y = sum_i x_i   (a scalar)          dx_i = dy
    pub fn sum_all(&self, x: &Var<T>) -> Var<T> {
        let total = match x.value().as_slice() {
            Some(s) => k::sum(s),
            None => x.value().iter().copied().sum(),
        };
        let shape = x.value().raw_dim();
        self.record(
            "sum_all",
            Tensor::from_elem(IxDyn(&[]), total),
            &[x],
            move |dy| {
                let d = *dy.iter().next().unwrap();
                vec![Some(Tensor::from_elem(shape, d))]
            },
        )
    }

    /// y = (1/n) sum_i x_i   (a scalar)    dx_i = dy / n
    pub fn mean_all(&self, x: &Var<T>) -> Var<T> {
        let n = T::cast(x.value().len() as f64);
        let total = self.sum_all(x);
        self.mul_scalar(&total, T::one() / n)
    }
}
