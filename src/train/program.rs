//! A model compiled to the kernel launches of one training step. Both devices execute the same
//! list, so the CPU and GPU steps cannot drift apart.

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

/// The forward and backward launches of a model.
#[derive(Clone, Debug)]
pub struct Program {
    pub forward: Vec<Instr>,
    /// Ends with the gradients of every parameter in the gradient arena. Starts from
    /// `ActGrad(last)`, which the loss kernel writes.
    pub backward: Vec<Instr>,
}

impl Program {
    pub fn new(model: &Sequential, layout: &ParamLayout) -> Program {
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
        Program { forward, backward }
    }
}
