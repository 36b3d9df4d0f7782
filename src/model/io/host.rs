//! The host tensor: a dense row-major `f32` buffer with its shape, the one type in which
//! tensors travel between files, checkpoints and models (the file readers produce it, the
//! models' `named_tensors`/`hf_tensors` and [`to_host`] give it back).

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Element type a tensor had on disk (it is always held as `f32` here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceDType {
    /// 32-bit float.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit float (narrowed to `f32` on reading).
    F64,
    /// Integer buffers such as `position_ids`: kept so they can be recognised and ignored.
    Int,
}

impl SourceDType {
    /// The PyTorch-style name (`"float32"`, `"bfloat16"`, `"int"`, ...), for messages.
    pub fn name(self) -> &'static str {
        match self {
            SourceDType::F32 => "float32",
            SourceDType::F16 => "float16",
            SourceDType::BF16 => "bfloat16",
            SourceDType::F64 => "float64",
            SourceDType::Int => "int",
        }
    }
}

/// A dense row-major tensor held as `f32` on the host (its element type on disk in `dtype`).
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The elements in row-major order; `data.len()` is the product of `shape`.
    pub data: Vec<f32>,
    /// Element type in the file it came from ([`SourceDType::F32`] when made in memory).
    pub dtype: SourceDType,
}

impl RawTensor {
    /// A tensor of `shape` from row-major `data` (dtype f32); the lengths must agree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        RawTensor {
            shape,
            data,
            dtype: SourceDType::F32,
        }
    }
}

/// Tensors of one checkpoint file, by their key in the file.
pub type TensorMap = BTreeMap<String, RawTensor>;

/// Converts little-endian element bytes of `dtype` to `f32`.
pub(crate) fn decode_le(bytes: &[u8], dtype: SourceDType, int_width: usize) -> Vec<f32> {
    match dtype {
        SourceDType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        SourceDType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        SourceDType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        SourceDType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        SourceDType::Int => bytes
            .chunks_exact(int_width)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..int_width].copy_from_slice(c);
                // sign-extend
                let shift = 64 - 8 * int_width as u32;
                ((i64::from_le_bytes(b) << shift) >> shift) as f32
            })
            .collect(),
    }
}

/// Reads a float tensor back to host memory.
pub fn to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> RawTensor {
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("float tensor to f32");
    RawTensor::new(shape, data)
}

/// `data` `[rows, cols]` transposed to `[cols, rows]` (PyTorch's `Linear` keeps `[out, in]`,
/// burn's `[in, out]`).
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

impl RawTensor {
    /// The transpose of a 2-D tensor (`[rows, cols]` → `[cols, rows]`).
    pub fn transposed(&self) -> RawTensor {
        let (r, c) = (self.shape[0], self.shape[1]);
        RawTensor::new(vec![c, r], transpose(&self.data, r, c))
    }

    /// A tensor of zeros of `shape`.
    pub fn zeros(shape: &[usize]) -> RawTensor {
        RawTensor::new(shape.to_vec(), vec![0.0; shape.iter().product()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_swaps_axes() {
        assert_eq!(
            transpose(&[1., 2., 3., 4., 5., 6.], 2, 3),
            vec![1., 4., 2., 5., 3., 6.]
        );
        let t = RawTensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]).transposed();
        assert_eq!(
            (t.shape, t.data),
            (vec![3, 2], vec![1., 4., 2., 5., 3., 6.])
        );
    }
}
