// ulysses: element-wise device kernels over strided views (CUDA only): zero, copy, convert,
// accumulate. The staging around the attention kernel (prefilled outputs, fp32 partial sums,
// widened gradients, Q copied into O's layout) runs through these, once or more per kernel call,
// so they must move bytes at close to copy speed: 16-byte vectors along the rows both views hold
// densely, 32-bit index decomposition (row_walk.h), memset / memcpy where a view is one block.
//
// Views of up to 4 dims, any non-negative strides, the same shape for dst and src; or the rows of
// pieces of such views (a packed call's sequences, RowPieces).
#pragma once

#include "kernels/row_walk.h"
#include "ulysses/status.h"
#include "ulysses/types.h"

namespace ulysses::kernels::cuda {

/// dst = 0 (all bits clear), any dtype.
Status fill_zero(const TensorView& dst, Stream stream);

/// dst = src, bit for bit (one dtype).
Status copy_elements(const TensorView& dst, const TensorView& src, Stream stream);

/// dst = src (add = false) or dst += src (add = true), each of fp32, fp16, bf16: values pass
/// through fp32 and are rounded once to dst's dtype.
Status convert_elements(const TensorView& dst, const TensorView& src, bool add, Stream stream);

/// fill_zero over the rows of `rows` only (dst: [1, S, ...]).
Status fill_zero_rows(const TensorView& dst, RowPieces rows, Stream stream);

/// convert_elements over the rows of `rows` only (dst and src: [1, S, ...] of one shape); the
/// other rows keep their bits. One launch per kPiecesPerLaunch pieces: the rows of a packed call's
/// sequences inside long views, without walking the gaps between them.
Status convert_rows(const TensorView& dst, const TensorView& src, RowPieces rows, bool add,
                    Stream stream);

/// copy_elements over the rows of `rows` only (dst and src: [1, S, ...] of one shape and dtype);
/// the other rows keep their bits.
Status copy_rows(const TensorView& dst, const TensorView& src, RowPieces rows, Stream stream);

}  // namespace ulysses::kernels::cuda
