//! CPU twin of `shaders/bias.wgsl`: the bias gradient, column sums of dy [rows, cols].

/// `db[col] = Σ_row dy[row, col]`, summed in row order like the GPU kernel.
pub fn bias_grad(dy: &[f32], rows: usize, cols: usize, db: &mut [f32]) {
    db[..cols].fill(0.0);
    for row in dy[..rows * cols].chunks_exact(cols) {
        for (d, g) in db.iter_mut().zip(row) {
            *d += g;
        }
    }
}
