//! A model compiled to the kernel launches of one training step — forward, loss, backward,
//! gradient norm, clipping and the optimizer's update. Both devices execute the same list, so
//! the CPU and GPU steps cannot drift apart.

use crate::model::{Layer, ParamLayout, Sequential};
use crate::ops::{Activation, MatmulDims, Transpose};

/// Where a tensor of the step lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The input batch [B, in].
    Input,
    /// Output of layer i [B, width_i].
    Act(usize),
    /// dL/d(output of layer i).
    ActGrad(usize),
    /// Arena range `[offset, offset + len)` of the parameters.
    Param { offset: usize, len: usize },
    /// The same range of the gradient arena.
    Grad { offset: usize, len: usize },
}

/// A dimension that is either fixed by the model or the batch size of the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    Batch,
    Fixed(usize),
}

impl Extent {
    pub fn at(self, batch: usize) -> usize {
        match self {
            Extent::Batch => batch,
            Extent::Fixed(n) => n,
        }
    }
}

/// One kernel launch of a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Instr {
    Matmul {
        t: Transpose,
        a: Slot,
        b: Slot,
        bias: Option<Slot>,
        c: Slot,
        m: Extent,
        n: Extent,
        k: Extent,
        /// What the product's epilogue does besides the bias.
        epilogue: Epilogue,
    },
    BiasGrad {
        dy: Slot,
        db: Slot,
        cols: usize,
    },
    ActForward {
        act: Activation,
        x: Slot,
        y: Slot,
        cols: usize,
    },
    ActBackward {
        act: Activation,
        x: Slot,
        y: Slot,
        dy: Slot,
        dx: Slot,
        cols: usize,
    },
    /// The batch's mean loss into the loss history and dL/d(output) into `ActGrad(last)`.
    Loss {
        last: usize,
        cols: usize,
    },
    /// ‖g‖² of the gradient arena into the norm history.
    GradNorm,
    /// torch.nn.utils.clip_grad_norm_ on the gradient arena, from the norm just computed.
    Clip {
        max_norm: f32,
    },
    /// The optimizer's update of the whole parameter arena. With non-finite skipping on, an
    /// update whose loss is NaN or infinite changes nothing (for every optimizer alike).
    Update,
}

/// An activation folded into a product (see [`fuse_activations`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Epilogue {
    /// C alone.
    None,
    /// The forward pass's `ActForward` after the product: C keeps the pre-activation and
    /// `y` gets act(C).
    Activation { act: Activation, y: Slot },
    /// The backward pass's `ActBackward` after the product dX = dY·W: C gets dX·act'(·)
    /// straight away, act' read from the layer's input `x` or output `y` as the activation's
    /// backward reads it; `product` is where dX alone went before fusing (nothing may read
    /// it after: `fuse_activations` checks).
    ActivationGrad {
        act: Activation,
        x: Slot,
        y: Slot,
        product: Slot,
    },
}

impl Instr {
    /// The slots the instruction reads (its launch on the GPU binds them read-only).
    fn reads(&self) -> Vec<Slot> {
        match *self {
            Instr::Matmul {
                a,
                b,
                bias,
                epilogue,
                ..
            } => {
                let mut r = vec![a, b];
                r.extend(bias);
                if let Epilogue::ActivationGrad { act, x, y, .. } = epilogue {
                    r.push(if act.grad_reads_output() { y } else { x });
                }
                r
            }
            Instr::BiasGrad { dy, .. } => vec![dy],
            Instr::ActForward { x, .. } => vec![x],
            Instr::ActBackward { x, y, dy, .. } => vec![x, y, dy],
            Instr::Loss { last, .. } => vec![Slot::Act(last)],
            Instr::GradNorm | Instr::Clip { .. } | Instr::Update => Vec::new(),
        }
    }

    /// What the launch does at `batch` rows, as a profile names it: "matmul 256x1024x784 nt
    /// + relu", "relu' 256x1024", "loss 256x10", "sgd update", …
    pub fn name(&self, batch: usize, optimizer: &str) -> String {
        match *self {
            Instr::Matmul {
                t,
                m,
                n,
                k,
                epilogue,
                ..
            } => {
                let d = Instr::matmul_dims(m, n, k, batch);
                let t = format!("{t:?}").to_lowercase();
                let epilogue = match epilogue {
                    Epilogue::None => String::new(),
                    Epilogue::Activation { act, .. } => format!(" + {}", act.name()),
                    Epilogue::ActivationGrad { act, .. } => format!(" * {}'", act.name()),
                };
                format!("matmul {}x{}x{} {t}{epilogue}", d.m, d.n, d.k)
            }
            Instr::BiasGrad { cols, .. } => format!("bias grad {batch}x{cols}"),
            Instr::ActForward { act, cols, .. } => format!("{} {batch}x{cols}", act.name()),
            Instr::ActBackward { act, cols, .. } => format!("{}' {batch}x{cols}", act.name()),
            Instr::Loss { cols, .. } => format!("loss {batch}x{cols}"),
            Instr::GradNorm => "grad norm".into(),
            Instr::Clip { .. } => "clip grad norm".into(),
            Instr::Update => format!("{optimizer} update"),
        }
    }

    /// Floating-point operations of the launch at `batch` rows, for a product (2·m·n·k).
    pub fn flops(&self, batch: usize) -> Option<f64> {
        match *self {
            Instr::Matmul { m, n, k, .. } => {
                let d = Instr::matmul_dims(m, n, k, batch);
                Some(2.0 * d.m as f64 * d.n as f64 * d.k as f64)
            }
            _ => None,
        }
    }

    pub fn matmul_dims(m: Extent, n: Extent, k: Extent, batch: usize) -> MatmulDims {
        MatmulDims {
            m: m.at(batch),
            n: n.at(batch),
            k: k.at(batch),
        }
    }
}

/// The launches of a model: its forward pass (prediction) and its whole training step.
#[derive(Clone, Debug)]
pub struct Program {
    pub forward: Vec<Instr>,
    /// Forward, loss, backward, then (when asked for) the gradient norm and clipping, then
    /// the update.
    pub step: Vec<Instr>,
}

impl Program {
    /// `grad_norm`: whether the step computes ‖g‖² (a schedule reads it, or clipping needs
    /// it; clipping implies it). `fuse`: fold each elementwise activation that follows a dense
    /// layer into that layer's product (see [`fuse_activations`]).
    pub fn new(
        model: &Sequential,
        layout: &ParamLayout,
        grad_norm: bool,
        clip_grad_norm: Option<f32>,
        fuse: bool,
    ) -> Program {
        let widths = model.widths();
        let input_of = |i: usize| {
            if i == 0 {
                Slot::Input
            } else {
                Slot::Act(i - 1)
            }
        };
        let width_in = |i: usize| if i == 0 { model.input() } else { widths[i - 1] };
        let mut forward = Vec::new();
        let mut backward = Vec::new();
        let mut dense = layout.dense.iter();
        let mut dense_of_layer = Vec::new();
        for (i, layer) in model.layers().iter().enumerate() {
            match *layer {
                Layer::Dense { out } => {
                    let d = *dense.next().expect("layout matches model");
                    dense_of_layer.push(Some(d));
                    // Y = X·Wᵀ + b
                    forward.push(Instr::Matmul {
                        t: Transpose::Nt,
                        a: input_of(i),
                        b: Slot::Param {
                            offset: d.weight,
                            len: out * d.fan_in,
                        },
                        bias: Some(Slot::Param {
                            offset: d.bias,
                            len: out,
                        }),
                        c: Slot::Act(i),
                        m: Extent::Batch,
                        n: Extent::Fixed(out),
                        k: Extent::Fixed(d.fan_in),
                        epilogue: Epilogue::None,
                    });
                }
                Layer::Activation(act) => {
                    dense_of_layer.push(None);
                    forward.push(Instr::ActForward {
                        act,
                        x: input_of(i),
                        y: Slot::Act(i),
                        cols: widths[i],
                    });
                }
            }
        }
        for (i, layer) in model.layers().iter().enumerate().rev() {
            let dy = Slot::ActGrad(i);
            match (*layer, dense_of_layer[i]) {
                (Layer::Dense { out }, Some(d)) => {
                    // dW = dYᵀ·X
                    backward.push(Instr::Matmul {
                        t: Transpose::Tn,
                        a: dy,
                        b: input_of(i),
                        bias: None,
                        c: Slot::Grad {
                            offset: d.weight,
                            len: out * d.fan_in,
                        },
                        m: Extent::Fixed(out),
                        n: Extent::Fixed(d.fan_in),
                        k: Extent::Batch,
                        epilogue: Epilogue::None,
                    });
                    backward.push(Instr::BiasGrad {
                        dy,
                        db: Slot::Grad {
                            offset: d.bias,
                            len: out,
                        },
                        cols: out,
                    });
                    // dX = dY·W, not needed for the network's input.
                    if i > 0 {
                        backward.push(Instr::Matmul {
                            t: Transpose::Nn,
                            a: dy,
                            b: Slot::Param {
                                offset: d.weight,
                                len: out * d.fan_in,
                            },
                            bias: None,
                            c: Slot::ActGrad(i - 1),
                            m: Extent::Batch,
                            n: Extent::Fixed(d.fan_in),
                            k: Extent::Fixed(out),
                            epilogue: Epilogue::None,
                        });
                    }
                }
                (Layer::Activation(act), _) if i > 0 => backward.push(Instr::ActBackward {
                    act,
                    x: input_of(i),
                    y: Slot::Act(i),
                    dy,
                    dx: Slot::ActGrad(i - 1),
                    cols: width_in(i),
                }),
                _ => {}
            }
        }
        if fuse {
            forward = fuse_activations(forward);
            backward = fuse_activations(backward);
        }
        let last = widths.len() - 1;
        let mut step = forward.clone();
        step.push(Instr::Loss {
            last,
            cols: widths[last],
        });
        step.extend(backward);
        if grad_norm || clip_grad_norm.is_some() {
            step.push(Instr::GradNorm);
        }
        if let Some(max_norm) = clip_grad_norm {
            step.push(Instr::Clip { max_norm });
        }
        step.push(Instr::Update);
        Program { forward, step }
    }
}

/// `instrs` (a forward or a backward pass) with every elementwise activation that reads a
/// product's output folded into that product's epilogue: one launch instead of two, and the
/// product's output is not read back to apply it. Forward, the pre-activation is still written
/// (the backward pass reads it); backward, dX·act' is written instead of dX, which nothing else
/// reads. The step computes the same numbers. Softmax, which needs whole rows, stays a launch
/// of its own.
fn fuse_activations(instrs: Vec<Instr>) -> Vec<Instr> {
    let mut out: Vec<Instr> = Vec::with_capacity(instrs.len());
    for instr in instrs {
        let elementwise = |act| crate::gpu::kernels::fused_activation_id(act).is_some();
        let prev = out.last_mut();
        match (instr, prev) {
            (
                Instr::ActForward { act, x, y, .. },
                Some(Instr::Matmul {
                    c,
                    epilogue: e @ Epilogue::None,
                    ..
                }),
            ) if elementwise(act) && *c == x => {
                *e = Epilogue::Activation { act, y };
            }
            (
                Instr::ActBackward {
                    act, x, y, dy, dx, ..
                },
                Some(Instr::Matmul {
                    c,
                    bias: None,
                    epilogue: e @ Epilogue::None,
                    ..
                }),
            ) if elementwise(act) && *c == dy => {
                *e = Epilogue::ActivationGrad {
                    act,
                    x,
                    y,
                    product: dy,
                };
                *c = dx;
            }
            (instr, _) => out.push(instr),
        }
    }
    // A folded gradient product is no longer written: nothing may read it.
    debug_assert!(out.iter().all(|i| match i {
        Instr::Matmul {
            epilogue: Epilogue::ActivationGrad { product, .. },
            ..
        } => out.iter().all(|j| !j.reads().contains(product)),
        _ => true,
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Loss;
    use crate::train::PARAM_ALIGN;

    #[test]
    fn elementwise_activations_fold_into_the_product_before_them() {
        let model = Sequential::new(
            3,
            vec![
                Layer::Dense { out: 5 },
                Layer::Activation(Activation::Relu),
                Layer::Activation(Activation::Tanh),
                Layer::Dense { out: 4 },
                Layer::Activation(Activation::Softmax),
            ],
            Loss::Mse,
        )
        .unwrap();
        let layout = model.param_layout(PARAM_ALIGN);
        let separate = Program::new(&model, &layout, false, None, false);
        let fused = Program::new(&model, &layout, false, None, true);
        // Relu folds into the first product; tanh reads relu's output, not a product's, and
        // softmax needs whole rows: both stay launches.
        assert_eq!(separate.forward.len(), 5);
        assert_eq!(fused.forward.len(), 4);
        match fused.forward[0] {
            Instr::Matmul {
                c: Slot::Act(0),
                epilogue:
                    Epilogue::Activation {
                        act: Activation::Relu,
                        y: Slot::Act(1),
                    },
                ..
            } => {}
            ref other => panic!("{other:?}"),
        }
        assert!(matches!(
            fused.forward[1],
            Instr::ActForward {
                act: Activation::Tanh,
                ..
            }
        ));
        assert!(matches!(
            fused.forward[3],
            Instr::ActForward {
                act: Activation::Softmax,
                ..
            }
        ));
        // Backward, tanh's gradient folds into the product dX = dY·W of the dense layer after
        // it; softmax's stays (it needs rows), and so does relu's (it follows tanh's, not a
        // product).
        let back = |p: &Program| p.step[p.forward.len()..].to_vec();
        let (fused_back, separate_back) = (back(&fused), back(&separate));
        assert_eq!(fused_back.len() + 1, separate_back.len());
        let folded = fused_back
            .iter()
            .find_map(|i| match *i {
                Instr::Matmul {
                    c,
                    epilogue: Epilogue::ActivationGrad { act, x, y, product },
                    ..
                } => Some((c, act, x, y, product)),
                _ => None,
            })
            .expect("tanh's gradient is folded");
        assert_eq!(
            folded,
            (
                Slot::ActGrad(1),
                Activation::Tanh,
                Slot::Act(1),
                Slot::Act(2),
                Slot::ActGrad(2)
            )
        );
    }
}
