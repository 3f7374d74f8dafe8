// Dispatch of the merge operations to the host or CUDA implementation, by the first view's device.
#include "kernels/merge.h"

namespace ulysses::kernels {

Status packed_chunk_tables(const std::int32_t* cu_seqlens, int num_seqs, int non_empty, int ring,
                           std::int32_t* out, Device device, Stream stream) {
  if (device.is_host()) {
    return host::packed_chunk_tables(cu_seqlens, num_seqs, non_empty, ring, out);
  }
  return cuda::packed_chunk_tables(cu_seqlens, num_seqs, non_empty, ring, out, stream);
}

Status packed_pair_tables(const std::int32_t* chunk_tables, int n, int qc, int kc, std::int64_t lo,
                          std::int64_t hi, PairPart part, std::int32_t* out, Device device,
                          Stream stream) {
  if (device.is_host()) return host::packed_pair_tables(chunk_tables, n, qc, kc, lo, hi, part, out);
  return cuda::packed_pair_tables(chunk_tables, n, qc, kc, lo, hi, part, out, stream);
}

Status reset_partial(const TensorView& o_acc, const TensorView& lse_acc, Stream stream) {
  if (o_acc.device.is_host()) return host::reset_partial(o_acc, lse_acc);
  return cuda::reset_partial(o_acc, lse_acc, stream);
}

Status merge_partial(const TensorView& o_acc, const TensorView& lse_acc, const TensorView& o_blk,
                     const TensorView& lse_blk, Stream stream) {
  if (o_acc.device.is_host()) return host::merge_partial(o_acc, lse_acc, o_blk, lse_blk);
  return cuda::merge_partial(o_acc, lse_acc, o_blk, lse_blk, stream);
}

Status finalize_partial(const TensorView& o_acc, const TensorView& lse_acc, const TensorView& sinks,
                        int head_offset, const TensorView& o, const TensorView& lse,
                        Stream stream) {
  if (o_acc.device.is_host()) {
    return host::finalize_partial(o_acc, lse_acc, sinks, head_offset, o, lse);
  }
  return cuda::finalize_partial(o_acc, lse_acc, sinks, head_offset, o, lse, stream);
}

Status merge_stacked(const TensorView& o_parts, const TensorView& lse_parts, int parts,
                     std::int64_t o_part_stride, std::int64_t lse_part_stride,
                     const TensorView& sinks, int head_offset, const TensorView& o,
                     const TensorView& lse, Stream stream) {
  if (o.device.is_host()) {
    return host::merge_stacked(o_parts, lse_parts, parts, o_part_stride, lse_part_stride, sinks,
                               head_offset, o, lse);
  }
  return cuda::merge_stacked(o_parts, lse_parts, parts, o_part_stride, lse_part_stride, sinks,
                             head_offset, o, lse, stream);
}

Status write_table(std::span<const std::int32_t> values, std::int32_t* dst, Device device,
                   Stream stream) {
  if (device.is_host()) return host::write_table(values, dst);
  return cuda::write_table(values, dst, stream);
}

Status read_back(const void* src, void* dst, std::size_t bytes, Device device, Stream stream) {
  if (device.is_host()) return host::read_back(src, dst, bytes);
  return cuda::read_back(src, dst, bytes, stream);
}

Status accumulate(const TensorView& acc, const TensorView& src, Stream stream) {
  if (acc.device.is_host()) return host::accumulate(acc, src);
  return cuda::accumulate(acc, src, stream);
}

Status convert(const TensorView& dst, const TensorView& src, Stream stream) {
  if (dst.device.is_host()) return host::convert(dst, src);
  return cuda::convert(dst, src, stream);
}

Status zero(const TensorView& dst, Stream stream) {
  if (dst.device.is_host()) return host::zero(dst);
  return cuda::zero(dst, stream);
}

Status sink_grad(const TensorView& o, const TensorView& d_o, const TensorView& lse,
                 const TensorView& sinks, int head_offset, const TensorView& dsinks,
                 Stream stream) {
  if (o.device.is_host()) return host::sink_grad(o, d_o, lse, sinks, head_offset, dsinks);
  return cuda::sink_grad(o, d_o, lse, sinks, head_offset, dsinks, stream);
}

}  // namespace ulysses::kernels
