//! Matrix products on the CPU, straight into their output buffer.
//!
//! burn-flex (0.21, and 0.23-pre) computes every matmul into `FlexTensor::empty`, which
//! zero-fills a byte vector and then copies it into a 16-byte aligned allocation
//! (`Bytes::from_bytes_vec`): measured on an evaluation pass, 8% of the time in that `memset`
//! and 8% in that `memcpy`, more than softmax and GELU together. The same `gemm` crate is
//! called here on the inputs' strides (transposed views cost nothing), writing an `f32`
//! vector that becomes the tensor without a copy. The linear layer is one 2-D product over
//! all rows (`[rows, in] · [in, out]`), and its weight gradient one `[in, rows] · [rows, out]`
//! product, where burn's composed version runs one product per batch row and then sums the
//! per-row weight gradients.

use burn::tensor::{DType, Shape};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::simd::from_vec;

/// Work (m·n·k multiply-adds) from which one product is split over the threads: burn-flex's
/// threshold, so products of the sizes it ran single-threaded still are.
const PARALLEL_WORK: usize = 192 * 192 * 192;

/// Total work of a batch of small products from which the batch is split over the threads.
const BATCH_PARALLEL_WORK: usize = 128 * 128 * 128;

/// A 2-D operand: base pointer (start offset applied), row and column strides, in elements.
#[derive(Clone, Copy)]
struct Operand {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

/// `out[m, n] = a[m, k] · b[k, n]`, written into `out` (row-major, `n` per row), which gemm
/// overwrites without reading.
///
/// # Safety
/// `a` and `b` must address `m × k` and `k × n` elements through their strides; `out` must
/// have room for `m × n` elements.
unsafe fn gemm_into(
    out: *mut f32,
    (m, n, k): (usize, usize, usize),
    a: Operand,
    b: Operand,
    par: gemm::Parallelism,
) {
    // SAFETY: the caller's contract; dst := 1 · a·b (read_dst false: `out` is not read)
    unsafe {
        gemm::gemm(
            m, n, k, out, 1, n as isize, false, a.ptr, a.cs, a.rs, b.ptr, b.cs, b.rs, 0.0f32,
            1.0f32, false, false, false, par,
        );
    }
}

fn parallelism(work: usize) -> gemm::Parallelism {
    if work >= PARALLEL_WORK {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// A vector of `len` elements for gemm to fill: `fill` must write every element.
fn filled(len: usize, fill: impl FnOnce(*mut f32)) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(len);
    fill(out.spare_capacity_mut().as_mut_ptr().cast());
    // SAFETY: `fill` wrote all `len` elements (gemm overwrites its whole output)
    unsafe { out.set_len(len) };
    out
}

/// The f32 storage of `t` from its start offset (tensors of other dtypes: `None`).
fn base(t: &FlexTensor) -> Option<*const f32> {
    if t.dtype() != DType::F32 {
        return None;
    }
    let data = t.storage::<f32>();
    // SAFETY: the start offset lies within the storage of a valid layout
    Some(unsafe { data.as_ptr().add(t.layout().start_offset()) })
}

/// `lhs [..., m, k] · rhs [..., k, n]` for f32 tensors of equal rank with equal batch
/// dimensions (any strides); `None` for the shapes and dtypes it does not take (the caller
/// falls back to burn's matmul, which also broadcasts).
pub(super) fn matmul(lhs: &FlexTensor, rhs: &FlexTensor) -> Option<FlexTensor> {
    let (ls, rs) = (lhs.layout().shape(), rhs.layout().shape());
    let r = ls.num_dims();
    if r < 2 || rs.num_dims() != r || (0..r - 2).any(|d| ls[d] != rs[d]) || ls[r - 1] != rs[r - 2] {
        return None;
    }
    // addresses, not pointers, so the per-entry closure can run on any thread
    let (pa, pb) = (base(lhs)? as usize, base(rhs)? as usize);
    let (m, k, n) = (ls[r - 2], ls[r - 1], rs[r - 1]);
    let batch_dims: Vec<usize> = (0..r - 2).map(|d| ls[d]).collect();
    let batch: usize = batch_dims.iter().product();
    let (la, lb) = (lhs.layout().strides(), rhs.layout().strides());
    // element offset of batch entry `i` (row-major over the batch dims) in a tensor of strides `s`
    let offset = |mut i: usize, s: &[isize]| -> isize {
        let mut off = 0isize;
        for d in (0..r - 2).rev() {
            off += (i % batch_dims[d]) as isize * s[d];
            i /= batch_dims[d];
        }
        off
    };
    let operand = |p: usize, s: &[isize], i: usize| Operand {
        // SAFETY: an offset of a valid layout
        ptr: unsafe { (p as *const f32).offset(offset(i, s)) },
        rs: s[r - 2],
        cs: s[r - 1],
    };
    let per = m * n;
    let work = m * n * k;
    let data = filled(batch * per, |out| {
        let out = out as usize;
        let one = |i: usize, par| {
            let (a, b) = (operand(pa, la, i), operand(pb, lb, i));
            // SAFETY: entry i's operands are in bounds by their layouts; its output slice is
            // the i-th of `batch` disjoint ranges of `per` elements
            unsafe { gemm_into((out as *mut f32).add(i * per), (m, n, k), a, b, par) };
        };
        let batch_parallel = batch > 1 && batch * work >= BATCH_PARALLEL_WORK;
        if work >= PARALLEL_WORK && !(batch >= 4 && batch_parallel) {
            (0..batch).for_each(|i| one(i, gemm::Parallelism::Rayon(0)));
        } else if batch_parallel {
            (0..batch)
                .into_par_iter()
                .for_each(|i| one(i, gemm::Parallelism::None));
        } else {
            (0..batch).for_each(|i| one(i, gemm::Parallelism::None));
        }
    });
    let mut dims = batch_dims;
    dims.extend([m, n]);
    Some(from_vec(data, Shape::from(dims)))
}

/// `x [rows, in] · weight [in, out] + bias [out]`, one product over all rows (f32, any
/// strides for `x` and `weight`; `None` otherwise).
pub(super) fn linear(x: &FlexTensor, weight: &FlexTensor, bias: &FlexTensor) -> Option<FlexTensor> {
    let (xs, ws) = (x.layout().shape(), weight.layout().shape());
    if xs.num_dims() != 2 || ws.num_dims() != 2 || xs[1] != ws[0] || bias.dtype() != DType::F32 {
        return None;
    }
    let (rows, inp, out) = (xs[0], xs[1], ws[1]);
    let bias = bias.to_contiguous();
    let b = bias.storage::<f32>();
    if b.len() != out {
        return None;
    }
    let (px, pw) = (base(x)?, base(weight)?);
    let operand = |p, t: &FlexTensor| Operand {
        ptr: p,
        rs: t.layout().strides()[0],
        cs: t.layout().strides()[1],
    };
    let (a, w) = (operand(px, x), operand(pw, weight));
    let mut data = filled(rows * out, |dst| {
        // SAFETY: operands in bounds by their layouts; `dst` has rows × out elements
        unsafe { gemm_into(dst, (rows, out, inp), a, w, parallelism(rows * out * inp)) }
    });
    // the bias after the product, as burn adds it (one rounding, the same numbers)
    data.par_chunks_mut(out.max(1)).for_each(|row| {
        for (y, &bj) in row.iter_mut().zip(b) {
            *y += bj;
        }
    });
    Some(from_vec(data, Shape::new([rows, out])))
}
