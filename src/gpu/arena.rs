//! Arenas on a GPU: the parameters, their gradients and each optimizer state tensor, laid out
//! alike (`ParamLayout`), held in as many buffers as the device's `max_buffer_size` needs and
//! bound in ranges no larger than its `max_storage_buffer_binding_size`.
//!
//! A buffer holds whole tensors, so a matmul binds its weight inside one buffer; a kernel that
//! walks the whole arena (the optimizer, the gradient norm, clipping) runs once per chunk, a
//! range within one buffer that fits one binding. A model that fits one binding has one buffer
//! and one chunk, and its kernels run exactly as they would without this module.

use std::ops::Range;

use super::{BufferRange, GpuContext};
use crate::error::{KilnError, Result};
use crate::model::ParamLayout;
use crate::train::PARAM_ALIGN;

/// How an arena of a layout splits on a device; every arena of one trainer shares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaSplit {
    /// Each buffer's [start, end), in arena elements: runs of whole tensors, in order.
    parts: Vec<Range<usize>>,
    /// The ranges a whole-arena kernel binds at once, in order; each within one part, starting
    /// at a multiple of [`PARAM_ALIGN`] (a valid storage offset on every device).
    chunks: Vec<Range<usize>>,
}

impl ArenaSplit {
    /// The split of `layout` for a device whose buffers hold at most `max_buffer` bytes and
    /// whose bindings at most `max_binding`. Errs, naming the tensor and the limit, when one
    /// tensor is over either (a matmul binds each weight whole).
    pub fn new(layout: &ParamLayout, max_buffer: u64, max_binding: u64) -> Result<Self> {
        if layout.len > u32::MAX as usize {
            return Err(KilnError::invalid(
                "model",
                format!(
                    "{} parameters (with padding): GPU kernels index an arena with 32-bit \
                     words, so at most {}",
                    layout.len,
                    u32::MAX
                ),
            ));
        }
        let floats = |bytes: u64| (bytes / 4) as usize / PARAM_ALIGN * PARAM_ALIGN;
        let (buffer_floats, binding_floats) = (floats(max_buffer), floats(max_binding));
        if binding_floats == 0 {
            // Chunks start at 256-byte boundaries, so a binding must hold at least one.
            return Err(KilnError::OverLimit {
                tensor: "arena chunk".into(),
                size: PARAM_ALIGN as u64 * 4,
                limit_name: "max_storage_buffer_binding_size",
                limit: max_binding,
            });
        }
        let tensors = crate::weights::tensors(layout, "");
        let mut parts = Vec::new();
        let mut part_start = 0;
        for (i, (name, shape, start)) in tensors.iter().enumerate() {
            // A tensor's extent runs to the next one (or the arena's end): its padding with it.
            let end = tensors.get(i + 1).map_or(layout.len, |t| t.2);
            let len: usize = shape.iter().product();
            let over = |limit_name, limit| KilnError::OverLimit {
                tensor: format!("parameter {name}"),
                size: len as u64 * 4,
                limit_name,
                limit,
            };
            if len as u64 * 4 > max_binding {
                return Err(over("max_storage_buffer_binding_size", max_binding));
            }
            if end - start > buffer_floats {
                // With its padding, in the whole 256-byte units a buffer is split in.
                return Err(KilnError::OverLimit {
                    tensor: format!("parameter {name}"),
                    size: (end - start) as u64 * 4,
                    limit_name: "max_buffer_size",
                    limit: buffer_floats as u64 * 4,
                });
            }
            if end - part_start > buffer_floats {
                parts.push(part_start..*start);
                part_start = *start;
            }
        }
        parts.push(part_start..layout.len);
        let chunks = parts
            .iter()
            .flat_map(|p| {
                (p.start..p.end)
                    .step_by(binding_floats)
                    .map(move |s| s..(s + binding_floats).min(p.end))
            })
            .collect();
        Ok(ArenaSplit { parts, chunks })
    }

    /// The split on `ctx`'s device.
    pub fn on(ctx: &GpuContext, layout: &ParamLayout) -> Result<Self> {
        let limits = ctx.limits();
        Self::new(
            layout,
            limits.max_buffer_size,
            limits.max_storage_buffer_binding_size,
        )
    }

    /// The ranges a whole-arena kernel binds, one dispatch each.
    pub fn chunks(&self) -> &[Range<usize>] {
        &self.chunks
    }

    /// Each buffer's range of the arena.
    pub fn parts(&self) -> &[Range<usize>] {
        &self.parts
    }
}

/// One arena's buffers, split as an [`ArenaSplit`] says. Cloning shares the buffers.
#[derive(Clone)]
pub struct Arena {
    buffers: Vec<wgpu::Buffer>,
    parts: Vec<Range<usize>>,
}

impl Arena {
    /// An arena holding `fill` everywhere (storage buffers start zeroed, so 0 costs no
    /// upload); `name` labels its buffers.
    pub fn filled(ctx: &GpuContext, name: &str, split: &ArenaSplit, fill: f32) -> Result<Self> {
        let buffers = split
            .parts
            .iter()
            .map(|p| {
                let label = format!("{name} [{}..{})", p.start, p.end);
                let b = ctx.arena_buffer(&label, p.len())?;
                if fill != 0.0 {
                    ctx.fill(&b, p.len(), fill)?;
                }
                Ok(b)
            })
            .collect::<Result<_>>()?;
        Ok(Arena {
            buffers,
            parts: split.parts.clone(),
        })
    }

    /// An arena holding `values` (the whole arena).
    pub fn upload(
        ctx: &GpuContext,
        name: &str,
        split: &ArenaSplit,
        values: &[f32],
    ) -> Result<Self> {
        let arena = Self::filled(ctx, name, split, 0.0)?;
        arena.write(ctx, values)?;
        Ok(arena)
    }

    /// Overwrites the whole arena with `values`, from the next submission on.
    pub fn write(&self, ctx: &GpuContext, values: &[f32]) -> Result<()> {
        debug_assert_eq!(values.len(), self.len());
        for (b, p) in self.buffers.iter().zip(&self.parts) {
            ctx.write(b, &values[p.clone()])?;
        }
        Ok(())
    }

    /// The whole arena, read back (waits for the GPU).
    pub fn read(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.len());
        for (b, p) in self.buffers.iter().zip(&self.parts) {
            out.extend(ctx.read_back(b, 0, p.len())?);
        }
        Ok(out)
    }

    /// Elements in the whole arena.
    fn len(&self) -> usize {
        self.parts.last().map_or(0, |p| p.end)
    }

    /// Elements `[offset, offset + len)`, which lie in one buffer (a tensor, or a chunk).
    pub fn range(&self, offset: usize, len: usize) -> BufferRange<'_> {
        let i = self
            .parts
            .iter()
            .position(|p| p.contains(&offset))
            .expect("the offset lies in the arena");
        debug_assert!(offset + len <= self.parts[i].end, "a range crosses buffers");
        BufferRange::f32s(&self.buffers[i], offset - self.parts[i].start, len)
    }

    /// The range of a chunk of the split.
    pub fn chunk(&self, chunk: &Range<usize>) -> BufferRange<'_> {
        self.range(chunk.start, chunk.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Layer, Loss, Sequential};

    fn layout(widths: &[usize]) -> ParamLayout {
        let layers = widths.iter().map(|&out| Layer::Dense { out }).collect();
        Sequential::new(10, layers, Loss::Mse)
            .unwrap()
            .param_layout(PARAM_ALIGN)
    }

    #[test]
    fn a_model_within_the_limits_is_one_buffer_and_one_chunk() {
        let l = layout(&[300, 7]);
        let s = ArenaSplit::new(&l, 1 << 30, 1 << 27).unwrap();
        let whole = std::iter::once(0..l.len);
        assert!(s.parts().iter().cloned().eq(whole.clone()), "{s:?}");
        assert!(s.chunks().iter().cloned().eq(whole), "{s:?}");
    }

    #[test]
    fn buffers_hold_whole_tensors_and_chunks_fit_a_binding() {
        // Weights of 3000, 300·70 = 21000 and 70·5 = 350 elements with their biases.
        let l = layout(&[300, 70, 5]);
        let (buffer, binding) = (90_000u64, 85_000u64);
        let s = ArenaSplit::new(&l, buffer, binding).unwrap();
        assert!(s.parts().len() > 1, "{s:?}");
        // Parts cover the arena in order, each starts at a tensor, each fits a buffer.
        let starts: Vec<usize> = crate::weights::tensors(&l, "")
            .iter()
            .map(|t| t.2)
            .collect();
        let mut at = 0;
        for p in s.parts() {
            assert_eq!(p.start, at);
            assert!(starts.contains(&p.start), "{p:?}");
            assert!(p.len() as u64 * 4 <= buffer, "{p:?}");
            at = p.end;
        }
        assert_eq!(at, l.len);
        // Chunks cover the arena in order, each within one part, aligned, within a binding.
        let mut at = 0;
        for c in s.chunks() {
            assert_eq!(c.start, at);
            assert!(c.start.is_multiple_of(PARAM_ALIGN));
            assert!(c.len() as u64 * 4 <= binding, "{c:?}");
            assert!(
                s.parts()
                    .iter()
                    .any(|p| p.start <= c.start && c.end <= p.end)
            );
            at = c.end;
        }
        assert_eq!(at, l.len);
    }

    #[test]
    fn a_tensor_over_a_limit_is_named() {
        let l = layout(&[300, 70]);
        // layers.1.weight is 300·70·4 = 84000 bytes.
        let e = ArenaSplit::new(&l, 1 << 30, 80_000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("layers.1.weight") && e.contains("max_storage_buffer_binding_size"),
            "{e}"
        );
        let e = ArenaSplit::new(&l, 80_000, 1 << 30)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("layers.1.weight") && e.contains("max_buffer_size"),
            "{e}"
        );
    }
}
