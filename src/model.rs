//! The model: a `Sequential` stack of dense layers and activations followed by a loss, and the
//! flat layout of its parameters.

use rand::{RngExt, SeedableRng};

use crate::error::{KilnError, Result};
use crate::ops::{Activation, Loss};

/// The largest alignment [`Sequential::param_layout`] takes, in f32s: every model is checked
/// to be countable with this much padding.
const MAX_ALIGN: usize = 1 << 16;

/// One entry of a `Sequential`, numbered like `nn.Sequential` (activations count).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layer {
    /// `nn.Linear(in, out)`; `in` is the previous width.
    Dense {
        /// Output width.
        out: usize,
    },
    /// An activation applied elementwise (softmax along each row).
    Activation(Activation),
}

/// A multilayer perceptron: layers in order, then a loss on the last output.
#[derive(Clone, Debug, PartialEq)]
pub struct Sequential {
    input: usize,
    layers: Vec<Layer>,
    loss: Loss,
}

/// Where one dense layer's parameters live in the flat parameter arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseParams {
    /// Position in `Sequential::layers`.
    pub layer: usize,
    /// Input width.
    pub fan_in: usize,
    /// Output width.
    pub fan_out: usize,
    /// Offset (in f32s) of the weight, stored [out, in] like `nn.Linear.weight`.
    pub weight: usize,
    /// Offset of the bias, `[out]`.
    pub bias: usize,
}

/// The flat layout shared by the parameter, gradient and momentum arenas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamLayout {
    /// Each dense layer's place, in model order.
    pub dense: Vec<DenseParams>,
    /// Arena length in f32s, padding included.
    pub len: usize,
}

impl Sequential {
    /// A model reading `input` features. Errs on a zero width or a model with no dense layer.
    pub fn new(input: usize, layers: Vec<Layer>, loss: Loss) -> Result<Self> {
        if input == 0 {
            return Err(KilnError::invalid(
                "model.input",
                "input width must be at least 1",
            ));
        }
        for (i, layer) in layers.iter().enumerate() {
            match layer {
                Layer::Dense { out: 0 } => {
                    return Err(KilnError::invalid(
                        format!("model.layers[{i}]"),
                        "dense layer with zero width",
                    ));
                }
                Layer::Activation(act) => act.check(&format!("model.layers[{i}]"))?,
                _ => {}
            }
        }
        if loss == Loss::Bce
            && !matches!(
                layers.last(),
                Some(Layer::Activation(Activation::Sigmoid | Activation::Softmax))
            )
        {
            return Err(KilnError::invalid(
                "model.loss",
                "bce reads probabilities: end the model with \"sigmoid\", or use bce_with_logits on raw outputs",
            ));
        }
        if !layers.iter().any(|l| matches!(l, Layer::Dense { .. })) {
            return Err(KilnError::invalid(
                "model.layers",
                "the model needs at least one dense layer",
            ));
        }
        let model = Sequential {
            input,
            layers,
            loss,
        };
        model.checked_len(MAX_ALIGN)?;
        Ok(model)
    }

    /// The arena length of [`Sequential::param_layout`], in checked arithmetic: an error
    /// naming the layer where the count leaves what a `usize` holds.
    fn checked_len(&self, align: usize) -> Result<usize> {
        let mut len = 0usize;
        let mut fan_in = self.input;
        for (i, l) in self.layers.iter().enumerate() {
            if let Layer::Dense { out } = *l {
                let next = out
                    .checked_mul(fan_in)
                    .and_then(|w| len.checked_add(w))
                    .and_then(|b| b.checked_next_multiple_of(align))
                    .and_then(|b| b.checked_add(out))
                    .and_then(|e| e.checked_next_multiple_of(align))
                    // Bytes, not just elements, must be countable.
                    .filter(|e| e.checked_mul(16).is_some());
                len = next.ok_or_else(|| {
                    KilnError::invalid(
                        format!("model.layers[{i}]"),
                        format!("a dense layer of {out} × {fan_in} makes more parameters than can be counted"),
                    )
                })?;
                fan_in = out;
            }
        }
        Ok(len)
    }

    /// Width of the input.
    pub fn input(&self) -> usize {
        self.input
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The loss on the last output.
    pub fn loss(&self) -> Loss {
        self.loss
    }

    /// Width of the tensor after each layer (`widths()[i]` is layer i's output).
    pub fn widths(&self) -> Vec<usize> {
        let mut w = self.input;
        self.layers
            .iter()
            .map(|l| {
                if let Layer::Dense { out } = l {
                    w = *out;
                }
                w
            })
            .collect()
    }

    /// Width of the model's output.
    pub fn output(&self) -> usize {
        *self.widths().last().expect("a model has layers")
    }

    /// Parameter layout with every tensor starting at a multiple of `align` f32s (GPU storage
    /// bindings need offsets aligned to the device's `min_storage_buffer_offset_alignment`).
    /// `align` is taken between 1 and 65536 (WebGPU's largest alignment is 64 f32s): the
    /// model's size was checked with room for that much padding, and no more.
    pub fn param_layout(&self, align: usize) -> ParamLayout {
        let align = align.clamp(1, MAX_ALIGN);
        let mut len = 0;
        let mut fan_in = self.input;
        let mut dense = Vec::new();
        for (layer, l) in self.layers.iter().enumerate() {
            if let Layer::Dense { out } = *l {
                let weight = len;
                let bias = (weight + out * fan_in).next_multiple_of(align);
                len = (bias + out).next_multiple_of(align);
                dense.push(DenseParams {
                    layer,
                    fan_in,
                    fan_out: out,
                    weight,
                    bias,
                });
                fan_in = out;
            }
        }
        ParamLayout { dense, len }
    }

    /// Parameters initialised like `nn.Linear`: weight and bias ~ U(−1/√in, 1/√in), drawn
    /// layer by layer, weight then bias, from a ChaCha8 stream seeded with `seed`. Errs if
    /// `layout` (built by hand) places a tensor past its end.
    pub fn init_params(&self, layout: &ParamLayout, seed: u64) -> Result<Vec<f32>> {
        layout.check()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut params = vec![0.0; layout.len];
        for d in &layout.dense {
            // A hand-built layout with no inputs draws from [−1, 1], not an infinite range.
            let bound = 1.0 / (d.fan_in.max(1) as f32).sqrt();
            for range in [
                d.weight..d.weight + d.fan_in * d.fan_out,
                d.bias..d.bias + d.fan_out,
            ] {
                for p in &mut params[range] {
                    *p = rng.random_range(-bound..bound);
                }
            }
        }
        Ok(params)
    }
}

impl ParamLayout {
    /// Errs unless every tensor lies within the arena: a layout built by hand (its fields are
    /// public) may not, and then no arena of it can be read or written.
    pub fn check(&self) -> Result<()> {
        for (i, d) in self.dense.iter().enumerate() {
            let weight_end = d
                .fan_in
                .checked_mul(d.fan_out)
                .and_then(|n| n.checked_add(d.weight));
            let bias_end = d.bias.checked_add(d.fan_out);
            for (what, end) in [("weight", weight_end), ("bias", bias_end)] {
                if end.is_none_or(|e| e > self.len) {
                    return Err(KilnError::invalid(
                        format!("layout.dense[{i}]"),
                        format!(
                            "its {what} ends past the arena of {} floats (a layout not made by \
                             Sequential::param_layout?)",
                            self.len
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
