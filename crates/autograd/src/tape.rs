//! The tape: a list of recorded ops, walked in reverse by [`Tape::backward`].
//!
//! Ops are pushed in the order they run, so the reverse of the list is already
//! a topological order of the graph: no graph search is needed. A [`Var`] is a
//! handle to one recorded value: an index into the tape plus a shared pointer
//! to the value itself. Each op's backward is a closure, written right under
//! its forward, that maps the gradient of the op's output to the gradients of
//! its inputs. Gradients are accumulated with `+=` (the whole story for a value
//! used twice), and an intermediate gradient is taken out, and freed, as soon
//! as its node has run.
//!
//! In no-grad mode ([`Tape::no_grad`]) nothing is recorded: a `Var` is just its
//! value, and an activation is freed as soon as the last `Var` pointing at it
//! is dropped. The frozen DPO reference model runs this way.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};

use crate::float::Float;
use crate::precision::Precision;

/// An n-dimensional, row-major array of `T`: the data of every value.
pub type Tensor<T> = ArrayD<T>;

/// The elements of `t` in row-major order as one slice, for the kernels
/// (which take plain slices): borrowed when `t` is in standard layout, a
/// copy only when it is not (a transposed, broadcast or strided view).
pub fn contiguous<T: Copy>(t: &Tensor<T>) -> Cow<'_, [T]> {
    match t.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(t.iter().copied().collect()),
    }
}

/// The backward of one op: from the gradient of its output to the gradients
/// of its inputs (in the order the inputs were passed to [`Tape::record`];
/// `None` for an input that needs no gradient).
pub type BackwardFn<T> = Box<dyn FnOnce(&Tensor<T>) -> Vec<Option<Tensor<T>>>>;

static NEXT_TAPE_ID: AtomicUsize = AtomicUsize::new(1);

/// Marks a `Var` that is not on any tape (a constant, or any value in no-grad mode).
const UNTRACKED: usize = usize::MAX;

/// A value computed on a tape: a handle (index) plus the value itself.
///
/// Cloning a `Var` is cheap (a reference count), and the value is never copied.
#[derive(Clone)]
pub struct Var<T> {
    pub(crate) index: usize,
    pub(crate) tape_id: usize,
    pub(crate) value: Arc<Tensor<T>>,
}

impl<T: Float> Var<T> {
    /// The value.
    pub fn value(&self) -> &Tensor<T> {
        &self.value
    }

    /// A shared pointer to the value (no copy).
    pub fn value_arc(&self) -> Arc<Tensor<T>> {
        self.value.clone()
    }

    /// The shape of the value.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.value.ndim()
    }

    /// The single element of a value with one element (e.g. a loss).
    ///
    /// # Panics
    /// If the value has more than one element.
    pub fn item(&self) -> T {
        assert_eq!(
            self.value.len(),
            1,
            "item: expected a value with one element, got shape {:?}",
            self.shape()
        );
        *self.value.iter().next().unwrap()
    }

    /// Whether gradients flow into this value (it is recorded on a tape).
    pub fn requires_grad(&self) -> bool {
        self.index != UNTRACKED
    }
}

impl<T: Float> std::fmt::Debug for Var<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var(#{} {:?})", self.index, self.shape())
    }
}

struct Node<T> {
    /// Tape indices of the inputs that need a gradient (`UNTRACKED` for the others).
    inputs: Vec<usize>,
    /// `None` for leaves.
    backward: Option<BackwardFn<T>>,
}

/// A record of the ops of one step; consumed by [`Tape::backward`].
///
/// All ops are methods on `Tape` (see the `ops` modules) and take `&self`, so a
/// forward pass reads like ordinary code: `let h = tape.gelu(&tape.linear(&x, &w, Some(&b)));`.
///
/// Errors are panics with a message naming the op and the shapes involved
/// (shape mismatch, axis out of range, a `Var` from another tape, backward of a
/// non-scalar): these are programming errors, never bad user data.
pub struct Tape<T> {
    id: usize,
    grad_enabled: bool,
    precision: Precision,
    nodes: RefCell<Vec<Node<T>>>,
}

impl<T: Float> Default for Tape<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> Tape<T> {
    /// A tape that records ops for a backward pass.
    pub fn new() -> Self {
        Self::with_grad(true)
    }

    /// A tape that records nothing: values only, freed as soon as unused.
    pub fn no_grad() -> Self {
        Self::with_grad(false)
    }

    fn with_grad(grad_enabled: bool) -> Self {
        Tape {
            id: NEXT_TAPE_ID.fetch_add(1, Ordering::Relaxed),
            grad_enabled,
            precision: Precision::F32,
            nodes: RefCell::new(Vec::new()),
        }
    }

    /// This tape with its GEMMs (`linear`, `matmul`, and the kernels that
    /// ask [`Tape::precision`]) in `precision`, forward and backward.
    /// `f64` tapes ignore it.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The arithmetic of this tape's GEMMs ([`Precision::F32`] unless set
    /// by [`Tape::with_precision`]).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Whether this tape records ops.
    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled
    }

    /// Number of recorded nodes (leaves included).
    pub fn len(&self) -> usize {
        self.nodes.borrow().len()
    }

    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A leaf that gets a gradient (a parameter, or an input being checked).
    /// In no-grad mode this is the same as [`Tape::constant`].
    pub fn leaf(&self, value: impl Into<Arc<Tensor<T>>>) -> Var<T> {
        let value = value.into();
        if !self.grad_enabled {
            return self.constant(value);
        }
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(Node {
            inputs: Vec::new(),
            backward: None,
        });
        Var {
            index: nodes.len() - 1,
            tape_id: self.id,
            value,
        }
    }

    /// A value that needs no gradient (token ids as floats, masks, data).
    pub fn constant(&self, value: impl Into<Arc<Tensor<T>>>) -> Var<T> {
        Var {
            index: UNTRACKED,
            tape_id: self.id,
            value: value.into(),
        }
    }

    /// A scalar constant.
    pub fn scalar(&self, x: T) -> Var<T> {
        self.constant(Tensor::from_elem(IxDyn(&[]), x))
    }

    /// Panics unless `v` belongs to this tape.
    pub(crate) fn check(&self, op: &str, v: &Var<T>) {
        assert!(
            v.tape_id == self.id,
            "{op}: input of shape {:?} comes from another tape (#{} != #{})",
            v.shape(),
            v.tape_id,
            self.id
        );
    }

    /// True when an op on `inputs` must be recorded (grad mode and some input tracked).
    pub fn needs_grad(&self, inputs: &[&Var<T>]) -> bool {
        self.grad_enabled && inputs.iter().any(|v| v.requires_grad())
    }

    /// Records an op: its output `value`, its `inputs`, and its `backward`.
    ///
    /// `backward` is called once, with the gradient of the output, and returns
    /// one gradient per input (same order, `None` to skip). It is only kept if
    /// some input needs a gradient; build costly saved state only when
    /// [`Tape::needs_grad`] says so.
    pub fn record(
        &self,
        op: &str,
        value: impl Into<Arc<Tensor<T>>>,
        inputs: &[&Var<T>],
        backward: impl FnOnce(&Tensor<T>) -> Vec<Option<Tensor<T>>> + 'static,
    ) -> Var<T> {
        for v in inputs {
            self.check(op, v);
        }
        let value = value.into();
        if !self.needs_grad(inputs) {
            return self.constant(value);
        }
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(Node {
            inputs: inputs.iter().map(|v| v.index).collect(),
            backward: Some(Box::new(backward)),
        });
        Var {
            index: nodes.len() - 1,
            tape_id: self.id,
            value,
        }
    }

    /// Reverse-mode sweep from a scalar `loss`: d loss / d v for every tracked `v`.
    ///
    /// Consumes the tape: every backward closure runs once, and the saved
    /// activations it held are freed as it goes.
    ///
    /// # Panics
    /// If `loss` has more than one element, or is not on this tape.
    pub fn backward(self, loss: &Var<T>) -> Gradients<T> {
        assert_eq!(
            loss.value.len(),
            1,
            "backward: the loss must be a scalar, got shape {:?}",
            loss.shape()
        );
        self.backward_with(loss, Tensor::from_elem(loss.value.raw_dim(), T::one()))
    }

    /// Reverse-mode sweep seeded with `d output` = `seed` (a vector-Jacobian product).
    pub fn backward_with(self, output: &Var<T>, seed: Tensor<T>) -> Gradients<T> {
        self.check("backward", output);
        assert_eq!(
            seed.shape(),
            output.shape(),
            "backward: seed shape {:?} != output shape {:?}",
            seed.shape(),
            output.shape()
        );
        let mut nodes = self.nodes.into_inner();
        let mut grads: Vec<Option<Tensor<T>>> = (0..nodes.len()).map(|_| None).collect();
        if output.index == UNTRACKED {
            return Gradients { grads };
        }
        grads[output.index] = Some(seed);
        for index in (0..=output.index).rev() {
            let node = &mut nodes[index];
            let Some(backward) = node.backward.take() else {
                continue; // a leaf: its gradient stays in the store
            };
            let Some(dout) = grads[index].take() else {
                continue; // nothing flows back through this node
            };
            let input_grads = backward(&dout);
            drop(dout);
            debug_assert_eq!(input_grads.len(), node.inputs.len());
            for (&input, grad) in node.inputs.iter().zip(input_grads) {
                let Some(grad) = grad else { continue };
                if input == UNTRACKED {
                    continue;
                }
                match &mut grads[input] {
                    slot @ None => *slot = Some(grad),
                    Some(acc) => accumulate(acc, &grad),
                }
            }
        }
        Gradients { grads }
    }
}

/// `acc += grad`, elementwise (same shapes).
fn accumulate<T: Float>(acc: &mut Tensor<T>, grad: &Tensor<T>) {
    assert_eq!(
        acc.shape(),
        grad.shape(),
        "backward: gradient shape mismatch"
    );
    match (acc.as_slice_mut(), grad.as_slice()) {
        (Some(a), Some(g)) => crate::kernels::elementwise::add_assign(a, g),
        _ => *acc += grad,
    }
}

/// The gradients of one backward pass, looked up by the `Var` they belong to.
pub struct Gradients<T> {
    grads: Vec<Option<Tensor<T>>>,
}

impl<T: Float> Gradients<T> {
    /// d loss / d `v`, or `None` if no gradient reached `v`.
    pub fn get(&self, v: &Var<T>) -> Option<&Tensor<T>> {
        self.grads.get(v.index).and_then(|g| g.as_ref())
    }

    /// Takes the gradient of `v` out of the store (no copy).
    pub fn take(&mut self, v: &Var<T>) -> Option<Tensor<T>> {
        self.grads.get_mut(v.index).and_then(|g| g.take())
    }

    /// Takes d loss / d `v` out of the store (no copy), or zeros of `v`'s
    /// shape if no gradient reached it.
    pub fn take_or_zeros(&mut self, v: &Var<T>) -> Tensor<T> {
        self.take(v)
            .unwrap_or_else(|| Tensor::zeros(v.value.raw_dim()))
    }

    /// d loss / d `v` (a copy), or zeros of `v`'s shape if no gradient reached it.
    pub fn get_or_zeros(&self, v: &Var<T>) -> Tensor<T> {
        self.get(v)
            .cloned()
            .unwrap_or_else(|| Tensor::zeros(v.value.raw_dim()))
    }
}
