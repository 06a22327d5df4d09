//! The devices Kiln runs on: a wgpu GPU, or the CPU reference path. Every kernel is callable
//! on either through the same methods; inputs are checked here, once, before either runs.

use std::sync::Arc;

use crate::cpu;
use crate::error::{KilnError, Result};
use crate::gpu::{AdapterOptions, GpuContext, adapter};
use crate::ops::{self, Activation, Loss, MatmulDims, Targets, Transpose};
use crate::optim::{self, Optimizer};

/// Where kernels run.
#[derive(Clone, Debug)]
pub enum Device {
    /// Plain Rust on the host (`src/cpu/`).
    Cpu,
    /// A wgpu adapter (`src/gpu/`).
    Gpu(Arc<GpuContext>),
}

/// What `--device` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A hardware GPU if there is one, else the CPU device.
    #[default]
    Auto,
    /// Any GPU adapter, software ones included; an error if there is none.
    Gpu,
    /// The CPU device.
    Cpu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = KilnError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "gpu" => Ok(DeviceChoice::Gpu),
            "cpu" => Ok(DeviceChoice::Cpu),
            other => Err(KilnError::invalid(
                "device",
                format!("unknown device {other:?}; use auto, gpu or cpu"),
            )),
        }
    }
}

impl Device {
    /// Opens the device `choice` asks for. Returns it with one line saying which and why.
    ///
    /// ```
    /// use kiln::{AdapterOptions, Device, DeviceChoice};
    /// // Auto never fails for want of a GPU: it falls back to the CPU device.
    /// let (device, why) = Device::select(DeviceChoice::Auto, &AdapterOptions::from_env())?;
    /// assert!(why.starts_with("device: "));
    /// # Ok::<(), kiln::KilnError>(())
    /// ```
    pub fn select(choice: DeviceChoice, opts: &AdapterOptions) -> Result<(Device, String)> {
        opts.check()?;
        match choice {
            DeviceChoice::Cpu => Ok((Device::Cpu, "device: CPU (--device cpu)".into())),
            DeviceChoice::Gpu => {
                let ctx = GpuContext::new(opts)?;
                let why = format!("device: GPU {} (--device gpu)", ctx.name());
                Ok((Device::Gpu(Arc::new(ctx)), why))
            }
            DeviceChoice::Auto => {
                // An explicit adapter request is honoured even if it names a software adapter.
                if opts.adapter.is_some() {
                    let ctx = GpuContext::new(opts)?;
                    let why = format!("device: GPU {} (matches --adapter)", ctx.name());
                    return Ok((Device::Gpu(Arc::new(ctx)), why));
                }
                let adapters = adapter::enumerate(opts)?;
                match adapters
                    .into_iter()
                    .find(|a| adapter::is_hardware(&a.get_info()))
                {
                    Some(a) => {
                        let ctx = GpuContext::from_adapter(a, opts)?;
                        let why = format!("device: GPU {} (hardware adapter found)", ctx.name());
                        Ok((Device::Gpu(Arc::new(ctx)), why))
                    }
                    None => Ok((
                        Device::Cpu,
                        "device: CPU (no hardware GPU adapter; --device gpu uses a software one)"
                            .into(),
                    )),
                }
            }
        }
    }

    /// "cpu", or the adapter's name and backend.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Gpu(ctx) => ctx.name(),
        }
    }

    /// C = op(A)·op(B) (+ bias), row-major; see [`Transpose`] for the stored shapes.
    pub fn matmul(
        &self,
        a: &[f32],
        b: &[f32],
        bias: Option<&[f32]>,
        dims: MatmulDims,
        t: Transpose,
    ) -> Result<Vec<f32>> {
        ops::check_matmul(a.len(), b.len(), bias.map(<[f32]>::len), dims, t)?;
        match self {
            Device::Cpu => {
                let mut c = ops::zeros("matmul output", dims.m * dims.n)?;
                cpu::matmul::matmul(a, b, bias, &mut c, dims, t);
                Ok(c)
            }
            Device::Gpu(ctx) => ctx.matmul(a, b, bias, dims, t, None),
        }
    }

    /// Column sums of dy [rows, cols]: the bias gradient.
    pub fn bias_grad(&self, dy: &[f32], cols: usize) -> Result<Vec<f32>> {
        let rows = ops::check_rows("bias_grad", "dy", dy.len(), cols)?;
        match self {
            Device::Cpu => {
                let mut db = vec![0.0; cols];
                cpu::bias::bias_grad(dy, rows, cols, &mut db);
                Ok(db)
            }
            Device::Gpu(ctx) => ctx.bias_grad(dy, rows, cols),
        }
    }

    /// y = act(x) over rows of `cols`.
    pub fn activation_forward(&self, act: Activation, x: &[f32], cols: usize) -> Result<Vec<f32>> {
        act.check("activation")?;
        ops::check_rows(act.name(), "x", x.len(), cols)?;
        match self {
            Device::Cpu => {
                let mut y = vec![0.0; x.len()];
                cpu::activation::forward(act, x, cols, &mut y);
                Ok(y)
            }
            Device::Gpu(ctx) => ctx.activation_forward(act, x, cols),
        }
    }

    /// dx = dy·act'(x), given the forward's input `x` and output `y`.
    pub fn activation_backward(
        &self,
        act: Activation,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        cols: usize,
    ) -> Result<Vec<f32>> {
        act.check("activation")?;
        let ctx = format!("{} backward", act.name());
        ops::check_rows(&ctx, "x", x.len(), cols)?;
        ops::check_len(&ctx, "y", y.len(), x.len(), "same as x")?;
        ops::check_len(&ctx, "dy", dy.len(), x.len(), "same as x")?;
        match self {
            Device::Cpu => {
                let mut dx = vec![0.0; x.len()];
                cpu::activation::backward(act, x, y, dy, cols, &mut dx);
                Ok(dx)
            }
            Device::Gpu(ctx) => ctx.activation_backward(act, x, y, dy, cols),
        }
    }

    /// Mean loss and dL/d(output), output shaped [rows, cols].
    pub fn loss(
        &self,
        loss: Loss,
        output: &[f32],
        targets: Targets,
        cols: usize,
    ) -> Result<(f32, Vec<f32>)> {
        ops::check_loss(loss, output, targets, cols)?;
        match self {
            Device::Cpu => {
                let mut grad = vec![0.0; output.len()];
                let value = cpu::loss::loss(loss, output, targets, cols, &mut grad);
                Ok((value, grad))
            }
            Device::Gpu(ctx) => ctx.loss(loss, output, targets, cols),
        }
    }

    /// ‖grad‖²: the squared global L2 norm.
    pub fn grad_norm_sq(&self, grad: &[f32]) -> Result<f32> {
        ops::check_finite("gradient", grad)?;
        match self {
            Device::Cpu => Ok(cpu::norm::sum_squares(grad)),
            Device::Gpu(ctx) => ctx.grad_norm(&mut grad.to_vec(), None),
        }
    }

    /// torch.nn.utils.clip_grad_norm_ (norm_type 2): scales `grad` so its norm is at most
    /// `max_norm` and returns the norm it had before.
    pub fn clip_grad_norm(&self, grad: &mut [f32], max_norm: f32) -> Result<f32> {
        check_max_norm(max_norm)?;
        ops::check_finite("gradient", grad)?;
        let norm_sq = match self {
            Device::Cpu => {
                let norm_sq = cpu::norm::sum_squares(grad);
                cpu::norm::clip(grad, norm_sq, max_norm);
                norm_sq
            }
            Device::Gpu(ctx) => ctx.grad_norm(grad, Some(max_norm))?,
        };
        Ok(norm_sq.sqrt())
    }

    /// One update of `param` in place by `optimizer` at rate `lr`, as `optimizer.step()` in
    /// PyTorch. `state` comes from [`Optimizer::new_state`] and is kept by the caller.
    ///
    /// ```
    /// use kiln::optim::{Adam, Optimizer};
    /// use kiln::Device;
    /// let adam = Optimizer::new(Adam::default())?;
    /// let mut p = vec![1.0f32, -2.0];
    /// let mut state = adam.new_state(p.len());
    /// Device::Cpu.update(&adam, 0.1, &mut p, &[0.5, -0.25], &mut state)?;
    /// // Adam's first step moves each parameter by about lr against its gradient's sign.
    /// assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] + 1.9).abs() < 1e-6);
    /// # Ok::<(), kiln::KilnError>(())
    /// ```
    pub fn update(
        &self,
        optimizer: &Optimizer,
        lr: f64,
        param: &mut [f32],
        grad: &[f32],
        state: &mut optim::State,
    ) -> Result<()> {
        // The rule's check of a hyperparameter: finite, >= 0 and within f32.
        optim::check_non_negative("lr", lr)?;
        let ctx = format!("{} update", optimizer.name());
        ops::check_len(&ctx, "grad", grad.len(), param.len(), "same as param")?;
        let blocks = optimizer.state_blocks();
        ops::check_len(
            &ctx,
            "state",
            state.blocks.len(),
            blocks.len(),
            "one per state tensor",
        )?;
        for (b, v) in blocks.iter().zip(&state.blocks) {
            let want = if b.used { param.len() } else { 0 };
            ops::check_len(
                &ctx,
                b.name,
                v.len(),
                want,
                "same as param when used, else empty",
            )?;
            // The state is the caller's to build: held to what a checkpoint's is.
            b.check_values(
                v,
                &format!("{ctx}: state `{}`", b.name),
                &format!("state.{}", b.name),
                "",
            )?;
        }
        optim::check_scalars(&state.scalars)?;
        ops::check_finite(&format!("{ctx}: grad"), grad)?;
        let uniform = optimizer.one_off_uniform(lr, param.len(), &mut state.scalars)?;
        match self {
            Device::Cpu => {
                optim::update_arena(
                    optimizer.rule(),
                    &uniform.scalars,
                    &[],
                    param,
                    grad,
                    &mut state.blocks,
                );
                Ok(())
            }
            Device::Gpu(ctx) => ctx.update(optimizer, &uniform, param, grad, &mut state.blocks),
        }
    }
}

/// `max_norm` of gradient clipping must be finite and > 0.
pub fn check_max_norm(max_norm: f32) -> Result<()> {
    if max_norm.is_finite() && max_norm > 0.0 {
        Ok(())
    } else {
        Err(KilnError::invalid(
            "clip_grad_norm",
            format!("max_norm must be finite and > 0, got {max_norm}"),
        ))
    }
}
