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

impl Instr {
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
    /// it; clipping implies it).
    pub fn new(
        model: &Sequential,
        layout: &ParamLayout,
        grad_norm: bool,
        clip_grad_norm: Option<f32>,
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
