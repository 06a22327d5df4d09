//! CPU twin of `shaders/matmul.wgsl`: C = op(A)·op(B) (+ bias), row-major f32.
//!
//! Uses `matrixmultiply`'s packed SIMD gemm on all cores: the CPU device is a fair opponent for
//! the GPU, never a naive loop. Transposes are expressed as strides, so nothing is copied.

use crate::ops::{MatmulDims, Transpose};

/// Writes op(A)·op(B) (+ bias broadcast over rows) into `c` ([M, N]).
pub fn matmul(
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
    dims: MatmulDims,
    t: Transpose,
) {
    let MatmulDims { m, n, k } = dims;
    // (row stride, column stride) of op(A) [M,K] and op(B) [K,N] as stored.
    let (rsa, csa) = match t {
        Transpose::Tn => (1, m as isize),
        _ => (k as isize, 1),
    };
    let (rsb, csb) = match t {
        Transpose::Nt => (1, k as isize),
        _ => (n as isize, 1),
    };
    // Checked products: a count that wrapped around would pass a plain comparison.
    let fits =
        |len: usize, rows: usize, cols: usize| rows.checked_mul(cols).is_some_and(|p| p <= len);
    assert!(
        fits(a.len(), m, k) && fits(b.len(), k, n) && fits(c.len(), m, n),
        "matmul operands shorter than [{m}, {k}]·[{k}, {n}] → [{m}, {n}]"
    );
    // SAFETY: the strides above address exactly the [M,K], [K,N] and [M,N] elements of
    // `a`, `b` and `c`, whose lengths (products that did not overflow) were just asserted,
    // so every dimension is below isize::MAX too.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    if let Some(bias) = bias {
        for row in c[..m * n].chunks_exact_mut(n) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The strides must mean what the doc says: compare with a textbook triple loop in f64.
    #[test]
    fn strides_match_a_triple_loop() {
        let (m, n, k) = (5, 3, 4);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.71).cos()).collect();
        let bias = [0.5, -1.0, 2.0];
        for t in Transpose::ALL {
            let at = |r: usize, c: usize| match t {
                Transpose::Tn => a[c * m + r],
                _ => a[r * k + c],
            } as f64;
            let bt = |r: usize, c: usize| match t {
                Transpose::Nt => b[c * k + r],
                _ => b[r * n + c],
            } as f64;
            let mut c = vec![0.0; m * n];
            matmul(&a, &b, Some(&bias), &mut c, MatmulDims { m, n, k }, t);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 =
                        (0..k).map(|p| at(i, p) * bt(p, j)).sum::<f64>() + bias[j] as f64;
                    assert!((c[i * n + j] as f64 - want).abs() < 1e-5, "{t:?} [{i},{j}]");
                }
            }
        }
    }
}
