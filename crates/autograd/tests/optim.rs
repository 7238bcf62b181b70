//! Optimizers, clipping and schedules against formulas written out here
//! independently, in f64.

use std::sync::Arc;

use autograd::optim::{clip_grad_norm, global_grad_norm, AdamW, LrSchedule, Optimizer, Sgd};
use autograd::Tensor;
use ndarray::{array, IxDyn};

/// PyTorch's `torch.optim.AdamW` (amsgrad=False, maximize=False), one
/// parameter, written from its documented algorithm.
struct TorchAdamW {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    step: i32,
    exp_avg: Vec<f64>,
    exp_avg_sq: Vec<f64>,
}

impl TorchAdamW {
    fn step(&mut self, param: &mut [f64], grad: &[f64]) {
        self.step += 1;
        let (beta1, beta2) = self.betas;
        for i in 0..param.len() {
            param[i] *= 1.0 - self.lr * self.weight_decay;
            self.exp_avg[i] = beta1 * self.exp_avg[i] + (1.0 - beta1) * grad[i];
            self.exp_avg_sq[i] = beta2 * self.exp_avg_sq[i] + (1.0 - beta2) * grad[i] * grad[i];
            let bias_correction1 = 1.0 - beta1.powi(self.step);
            let bias_correction2 = 1.0 - beta2.powi(self.step);
            let step_size = self.lr / bias_correction1;
            let denom = self.exp_avg_sq[i].sqrt() / bias_correction2.sqrt() + self.eps;
            param[i] -= step_size * self.exp_avg[i] / denom;
        }
    }
}

/// Gradients that change sign and size from step to step, including a zero.
fn grad_at(step: usize) -> Vec<f64> {
    let s = step as f64;
    vec![
        0.5 - 0.3 * s,
        1e-3 * (s + 1.0),
        -2.0,
        0.0,
        (s * 0.7).sin() * 10.0,
    ]
}

#[test]
fn adamw_matches_pytorch_formula() {
    let (lr, wd) = (1e-2, 0.1);
    let init = vec![1.0, -0.5, 0.25, 2.0, -3.0];
    let mut reference = TorchAdamW {
        lr,
        betas: (0.9, 0.999),
        eps: 1e-8,
        weight_decay: wd,
        step: 0,
        exp_avg: vec![0.0; 5],
        exp_avg_sq: vec![0.0; 5],
    };
    let mut expected = init.clone();

    let mut params = vec![Arc::new(
        Tensor::from_shape_vec(IxDyn(&[5]), init.clone()).unwrap(),
    )];
    let mut params_f32 = vec![Arc::new(params[0].mapv(|v| v as f32))];
    let mut adamw = AdamW::<f64>::new(wd);
    let mut adamw_f32 = AdamW::<f32>::new(wd);
    for step in 0..6 {
        let g = grad_at(step);
        reference.step(&mut expected, &g);
        let grad = Tensor::from_shape_vec(IxDyn(&[5]), g).unwrap();
        adamw.step(&mut params, std::slice::from_ref(&grad), lr);
        adamw_f32.step(&mut params_f32, &[grad.mapv(|v| v as f32)], lr);
        for i in 0..5 {
            let (got, want) = (params[0][i], expected[i]);
            assert!(
                (got - want).abs() <= 1e-14 * want.abs().max(1.0),
                "step {step} param {i}: {got} vs {want}"
            );
            let got32 = params_f32[0][i] as f64;
            assert!(
                (got32 - want).abs() <= 1e-6 * want.abs().max(1.0),
                "f32 step {step}: {got32} vs {want}"
            );
        }
    }
    assert_eq!(Optimizer::<f64>::steps_taken(&adamw), 6);
    let names: Vec<&str> = adamw.state().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["exp_avg", "exp_avg_sq"]);
}

#[test]
fn adamw_resumes_from_saved_state() {
    let init =
        Tensor::from_shape_vec(IxDyn(&[2, 3]), vec![0.1, -0.2, 0.3, 0.4, -0.5, 0.6]).unwrap();
    let grad = |s: usize| init.mapv(|v| v * (s as f64 + 1.0) - 0.05);
    let mut straight = vec![Arc::new(init.clone())];
    let mut opt = AdamW::<f64>::new(0.01);
    for s in 0..4 {
        opt.step(&mut straight, &[grad(s)], 3e-3);
    }

    let mut resumed = vec![Arc::new(init.clone())];
    let mut first = AdamW::<f64>::new(0.01);
    for s in 0..2 {
        first.step(&mut resumed, &[grad(s)], 3e-3);
    }
    let state = first.state();
    let mut second = AdamW::<f64>::new(0.01);
    second.load_state(2, state[0].1.to_vec(), state[1].1.to_vec());
    for s in 2..4 {
        second.step(&mut resumed, &[grad(s)], 3e-3);
    }
    assert_eq!(straight[0], resumed[0]);
}

#[test]
fn sgd_is_exactly_w_minus_lr_grad() {
    let w0 = array![[1.5f32, -2.25], [0.1, 3.0]].into_dyn();
    let g = array![[0.3f32, -0.7], [1e-3, 5.0]].into_dyn();
    let lr = 0.05;
    let mut params = vec![Arc::new(w0.clone())];
    let shared_with_a_tape = params[0].clone();
    let mut sgd = Sgd::new(0.0);
    sgd.step(&mut params, std::slice::from_ref(&g), lr);
    let expected: Vec<f32> = w0
        .iter()
        .zip(g.iter())
        .map(|(&w, &g)| w - lr as f32 * g)
        .collect();
    assert_eq!(params[0].as_slice().unwrap(), &expected[..]);
    // A value still shared (e.g. by a tape) is copied, not changed.
    assert_eq!(*shared_with_a_tape, w0);
    assert_eq!(Optimizer::<f32>::steps_taken(&sgd), 1);

    // With decoupled weight decay: w (1 - lr wd) - lr g.
    let mut params = vec![Arc::new(w0.clone())];
    Sgd::new(0.5).step(&mut params, std::slice::from_ref(&g), lr);
    let decay = (1.0 - lr * 0.5) as f32;
    let expected: Vec<f32> = w0
        .iter()
        .zip(g.iter())
        .map(|(&w, &g)| w * decay - lr as f32 * g)
        .collect();
    assert_eq!(params[0].as_slice().unwrap(), &expected[..]);
}

#[test]
fn step_takes_any_list_of_parameters() {
    // e.g. the fields of a model's parameter struct: not one slice of Arcs
    let mut a = Arc::new(array![1.0f64, 2.0].into_dyn());
    let mut b = Arc::new(array![[3.0f64]].into_dyn());
    let grads = [array![1.0, -1.0].into_dyn(), array![[2.0]].into_dyn()];
    Sgd::new(0.0).step([&mut a, &mut b], &grads, 0.5);
    assert_eq!(*a, array![0.5, 2.5].into_dyn());
    assert_eq!(*b, array![[2.0]].into_dyn());
    let mut adamw = AdamW::<f64>::new(0.0);
    adamw.step(vec![&mut a, &mut b], &grads, 0.1);
    // the first AdamW step moves every entry by lr against its gradient's sign
    assert!((a[0] - 0.4).abs() < 1e-6 && (a[1] - 2.6).abs() < 1e-6);
    assert!((b[[0, 0]] - 1.9).abs() < 1e-6);
}

#[test]
#[should_panic(expected = "sgd: 1 params, 2 grads")]
fn a_step_with_a_missing_parameter_is_refused() {
    let mut a = Arc::new(array![1.0f64].into_dyn());
    let grads = [array![1.0].into_dyn(), array![1.0].into_dyn()];
    Sgd::new(0.0).step([&mut a], &grads, 0.5);
}

#[test]
fn sgd_accepts_non_contiguous_grads() {
    let w0 = array![[1.0f64, 2.0, 3.0], [4.0, 5.0, 6.0]].into_dyn();
    let g_stored = array![[1.0f64, 4.0], [2.0, 5.0], [3.0, 6.0]].into_dyn();
    let g = g_stored.reversed_axes(); // logically equal to w0
    let mut params = vec![Arc::new(w0.clone())];
    Sgd::new(0.0).step(&mut params, &[g], 1.0);
    assert!(params[0].iter().all(|&v| v == 0.0));
}

#[test]
fn clip_grad_norm_as_pytorch() {
    // norm of (3, 4) and (12) is 13.
    let mut grads = vec![array![3.0f64, 4.0].into_dyn(), array![[12.0f64]].into_dyn()];
    assert_eq!(global_grad_norm(&grads), 13.0);
    let norm = clip_grad_norm(&mut grads, 6.5);
    assert_eq!(norm, 13.0);
    let coef = 6.5 / (13.0 + 1e-6);
    assert_eq!(grads[0], array![3.0 * coef, 4.0 * coef].into_dyn());
    assert_eq!(grads[1], array![[12.0 * coef]].into_dyn());
    assert!((global_grad_norm(&grads) - 6.5).abs() < 1e-6);

    // Below the limit nothing changes (coef >= 1 is not applied).
    let mut small = vec![array![0.3f32, 0.4].into_dyn()];
    let norm = clip_grad_norm(&mut small, 1.0);
    assert!((norm - 0.5).abs() < 1e-7);
    assert_eq!(small[0], array![0.3f32, 0.4].into_dyn());

    // A non-contiguous gradient counts the same.
    let t = array![[1.0f64, 2.0], [2.0, 4.0]].into_dyn().reversed_axes();
    assert_eq!(global_grad_norm(&[t]), 5.0);
}

#[test]
fn schedules() {
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert_eq!(LrSchedule::Constant.factor(0), 1.0);
    assert_eq!(LrSchedule::Constant.lr(3e-4, 1000), 3e-4);

    // Warmup: step s < warmup gets (s + 1) / warmup.
    let linear = LrSchedule::WarmupLinear {
        warmup: 10,
        total: 110,
    };
    assert!(close(linear.factor(0), 0.1));
    assert!(close(linear.factor(4), 0.5));
    assert!(close(linear.factor(9), 1.0));
    // Then linear decay to 0 at `total`.
    assert!(close(linear.factor(10), 1.0));
    assert!(close(linear.factor(60), 0.5));
    assert!(close(linear.factor(85), 0.25));
    assert!(close(linear.factor(110), 0.0));
    assert!(close(linear.factor(500), 0.0));
    assert!(close(linear.lr(2e-3, 60), 1e-3));

    let cosine = LrSchedule::WarmupCosine {
        warmup: 10,
        total: 110,
        min_ratio: 0.1,
    };
    assert!(close(cosine.factor(0), 0.1));
    assert!(close(cosine.factor(10), 1.0));
    // min + (1 - min) (1 + cos(pi p)) / 2 at p = 1/4, 1/2, 1
    let expected = |p: f64| 0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
    assert!(close(cosine.factor(35), expected(0.25)));
    assert!(close(cosine.factor(60), 0.55));
    assert!(close(cosine.factor(110), 0.1));
    assert!(close(cosine.factor(1000), 0.1));

    // No warmup: full rate at step 0.
    let no_warmup = LrSchedule::WarmupLinear {
        warmup: 0,
        total: 4,
    };
    assert_eq!(no_warmup.factor(0), 1.0);
    assert!(close(no_warmup.factor(2), 0.5));
    let no_warmup = LrSchedule::WarmupCosine {
        warmup: 0,
        total: 4,
        min_ratio: 0.0,
    };
    assert_eq!(no_warmup.factor(0), 1.0);
    assert!(close(no_warmup.factor(2), 0.5));
}
