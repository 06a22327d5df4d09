//! CPU twin of `shaders/bias.wgsl`: the bias gradient, column sums of dy [rows, cols].

/// Rows the GPU kernel sums per thread before the parts' sums are added (its
/// `ROWS_PER_PART`): the CPU sums in the same order so that both devices agree to the bit.
pub const ROWS_PER_PART: usize = 32;

/// `db[col] = Σ_row dy[row, col]`, summed as the GPU kernel sums: each part of
/// [`ROWS_PER_PART`] rows in row order, then the parts' sums in part order.
pub fn bias_grad(dy: &[f32], rows: usize, cols: usize, db: &mut [f32]) {
    db[..cols].fill(0.0);
    let mut part = vec![0.0f32; cols];
    for rows_of_part in dy[..rows * cols].chunks(ROWS_PER_PART * cols) {
        part.fill(0.0);
        for row in rows_of_part.chunks_exact(cols) {
            for (p, g) in part.iter_mut().zip(row) {
                *p += g;
            }
        }
        for (d, p) in db.iter_mut().zip(&part) {
            *d += p;
        }
    }
}
