// CUDA element-wise kernels (see elementwise.h): one walk (row_walk.h), each thread moving kUnroll
// vectors, all loads issued before the stores. Elements travel as their bits (uint4, uint2, ...),
// so a vector access is one instruction whatever the dtype; conversions pass through fp32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <type_traits>

#include "common/cuda_check.h"
#include "kernels/elementwise.h"
#include "kernels/row_walk.h"

namespace ulysses::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;

template <int kBytes>
struct Raw;
template <>
struct Raw<16> {
  using T = uint4;
};
template <>
struct Raw<8> {
  using T = uint2;
};
template <>
struct Raw<4> {
  using T = unsigned;
};
template <>
struct Raw<2> {
  using T = unsigned short;
};
template <>
struct Raw<1> {
  using T = unsigned char;
};

// Elements as bits, to and from fp32.
template <DType kD>
struct Elem;
template <>
struct Elem<DType::kFloat32> {
  using Bits = unsigned;
  static __device__ float get(Bits b) { return __uint_as_float(b); }
  static __device__ Bits put(float f) { return __float_as_uint(f); }
};
template <>
struct Elem<DType::kFloat16> {
  using Bits = unsigned short;
  static __device__ float get(Bits b) { return __half2float(__ushort_as_half(b)); }
  static __device__ Bits put(float f) { return __half_as_ushort(__float2half_rn(f)); }
};
template <>
struct Elem<DType::kBFloat16> {
  using Bits = unsigned short;
  static __device__ float get(Bits b) { return __bfloat162float(__ushort_as_bfloat16(b)); }
  static __device__ Bits put(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
};

// W elements of dtype kD, loaded and stored as one access.
template <DType kD, int W>
union Pack {
  using Bits = typename Elem<kD>::Bits;
  typename Raw<W * sizeof(Bits)>::T raw;
  Bits e[W];
};

// Where flat vector i of a launch lies in dst and src (in vectors): a whole walk's launch, or
// the rows of pieces (row_walk.h, RowPieces), where flat vector i is vector i % per_row of the
// launch's flat row i / per_row, found among the pieces by piece_row().
struct WholeLocate {
  RowWalkLaunch l;
  __device__ std::uint32_t total() const { return l.total; }
  __device__ void operator()(std::uint32_t i, std::int64_t& d, std::int64_t& s) const {
    locate(l, i, d, s);
  }
};
struct PiecesLocate {
  RowWalkLaunch row;  // one row's walk
  FastDiv per_row;
  std::int64_t dst_row, src_row;  // row strides in vectors
  RowPiecesLaunch l;
  __device__ std::uint32_t total() const { return l.total; }
  __device__ void operator()(std::uint32_t i, std::int64_t& d, std::int64_t& s) const {
    std::uint32_t r = 0, j = 0;
    per_row.divmod(i, r, j);
    const std::int64_t v = piece_row(l, r);
    locate(row, j, d, s);
    d += v * dst_row;
    s += v * src_row;
  }
};

template <class Op, class Locate>
__global__ void __launch_bounds__(kThreads) walk_kernel(Locate loc, Op op) {
  const std::uint32_t first = blockIdx.x * (kThreads * kUnroll) + threadIdx.x;
  const std::uint32_t total = loc.total();
  typename Op::Item x[kUnroll];
  std::int64_t at[kUnroll];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const std::uint32_t i = first + static_cast<std::uint32_t>(u * kThreads);
    if (i < total) {
      std::int64_t src = 0;
      loc(i, at[u], src);
      x[u] = op.load(at[u], src);
    }
  }
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    if (first + static_cast<std::uint32_t>(u * kThreads) < total) op.store(at[u], x[u]);
  }
}

template <class V>
struct ZeroOp {
  struct Item {};
  V* dst;
  __device__ Item load(std::int64_t, std::int64_t) const { return {}; }
  __device__ void store(std::int64_t d, Item) const { dst[d] = V{}; }
};

template <class V>
struct CopyOp {
  using Item = V;
  V* dst;
  const V* src;
  __device__ Item load(std::int64_t, std::int64_t s) const { return src[s]; }
  __device__ void store(std::int64_t d, const Item& x) const { dst[d] = x; }
};

template <DType kD, DType kS, int W, bool kAdd>
struct ConvertOp {
  using DPack = Pack<kD, W>;
  using SPack = Pack<kS, W>;
  struct Item {
    SPack s;
    DPack d;  // dst before the add (kAdd only)
  };
  DPack* dst;
  const SPack* src;
  __device__ Item load(std::int64_t d, std::int64_t s) const {
    Item x;
    x.s.raw = src[s].raw;
    if constexpr (kAdd) x.d.raw = dst[d].raw;
    return x;
  }
  __device__ void store(std::int64_t d, const Item& x) const {
    DPack y;
#pragma unroll
    for (int j = 0; j < W; ++j) {
      float v = Elem<kS>::get(x.s.e[j]);
      if constexpr (kAdd) v = Elem<kD>::get(x.d.e[j]) + v;
      y.e[j] = Elem<kD>::put(v);
    }
    dst[d].raw = y.raw;
  }
};

unsigned blocks_for(std::uint32_t total) {
  const std::uint32_t per_block = kThreads * kUnroll;
  return static_cast<unsigned>((std::uint64_t{total} + per_block - 1) / per_block);
}

// A whole view (or two of one shape).
struct WholeWalk {
  RowWalk walk;
  int vec() const { return walk.vec; }
  template <class Op>
  Status run(const Op& op, Stream stream) const {
    ULYSSES_ASSIGN_OR_RETURN(auto launches, row_walk_launches(walk));
    for (const RowWalkLaunch& l : launches) {
      walk_kernel<<<blocks_for(l.total), kThreads, 0, stream>>>(WholeLocate{l}, op);
      ULYSSES_CUDA_CHECK_LAUNCH();
    }
    return Status::ok();
  }
};
struct PlanWhole {
  WholeWalk operator()(const TensorView& dst, const TensorView* src,
                       std::span<const int> widths) const {
    return {plan_row_walk(dst, src, widths)};
  }
};

// The rows of pieces of a view (or two of one shape).
struct PiecesWalk {
  PieceWalk walk;
  RowPieces pieces;
  int vec() const { return walk.row.vec; }
  template <class Op>
  Status run(const Op& op, Stream stream) const {
    ULYSSES_ASSIGN_OR_RETURN(auto rows, row_walk_launches(walk.row));
    if (rows.empty()) return Status::ok();
    if (rows.size() != 1) return internal_error("ulysses::kernels::cuda: a row in two launches");
    const RowWalkLaunch& row = rows.front();
    ULYSSES_ASSIGN_OR_RETURN(auto launches, row_pieces_launches(pieces, row.total));
    for (const RowPiecesLaunch& l : launches) {
      const PiecesLocate loc{row, FastDiv(row.total), walk.dst_row, walk.src_row, l};
      walk_kernel<<<blocks_for(l.total), kThreads, 0, stream>>>(loc, op);
      ULYSSES_CUDA_CHECK_LAUNCH();
    }
    return Status::ok();
  }
};
struct PlanPieces {
  RowPieces pieces;
  PiecesWalk operator()(const TensorView& dst, const TensorView* src,
                        std::span<const int> widths) const {
    return {plan_piece_walk(dst, src, widths), pieces};
  }
};

// Widths in elements giving 16, 8, 4, 2 and 1-byte accesses for an element of `bytes` bytes.
std::span<const int> byte_widths(std::size_t bytes) {
  static constexpr int k1[] = {16, 8, 4, 2, 1}, k2[] = {8, 4, 2, 1}, k4[] = {4, 2, 1},
                       k8[] = {2, 1};
  switch (bytes) {
    case 1:
      return k1;
    case 2:
      return k2;
    case 4:
      return k4;
    default:
      return k8;
  }
}

template <class T>
T* as(void* p) {
  return static_cast<T*>(p);
}

Status same_shape(const TensorView& a, const TensorView& b, const char* what) {
  if (a.ndim != b.ndim || a.shape != b.shape) {
    return internal_error(detail::str_cat("ulysses::kernels::cuda::", what, ": shapes differ (",
                                          a.to_string(), " vs ", b.to_string(), ")"));
  }
  return Status::ok();
}

bool is_float(DType t) {
  return t == DType::kFloat32 || t == DType::kFloat16 || t == DType::kBFloat16;
}

template <DType kD, DType kS, int W, class Walk>
Status convert_as(const Walk& walk, const TensorView& dst, const TensorView& src, bool add,
                  Stream stream) {
  using DPack = Pack<kD, W>;
  using SPack = Pack<kS, W>;
  auto* d = static_cast<DPack*>(dst.data);
  const auto* s = static_cast<const SPack*>(src.data);
  if (add) return walk.run(ConvertOp<kD, kS, W, true>{d, s}, stream);
  return walk.run(ConvertOp<kD, kS, W, false>{d, s}, stream);
}

template <DType kD, DType kS, class Plan>
Status convert_typed(const Plan& plan, const TensorView& dst, const TensorView& src, bool add,
                     Stream stream) {
  constexpr int kWide = 16 / static_cast<int>(std::max(sizeof(typename Elem<kD>::Bits),
                                                       sizeof(typename Elem<kS>::Bits)));
  static constexpr int kWidths[] = {kWide, 1};
  const auto walk = plan(dst, &src, kWidths);
  if (walk.vec() == kWide) return convert_as<kD, kS, kWide>(walk, dst, src, add, stream);
  return convert_as<kD, kS, 1>(walk, dst, src, add, stream);
}

template <DType kD, class Plan>
Status convert_to(const Plan& plan, const TensorView& dst, const TensorView& src, bool add,
                  Stream stream) {
  switch (src.dtype) {
    case DType::kFloat32:
      return convert_typed<kD, DType::kFloat32>(plan, dst, src, add, stream);
    case DType::kFloat16:
      return convert_typed<kD, DType::kFloat16>(plan, dst, src, add, stream);
    default:
      return convert_typed<kD, DType::kBFloat16>(plan, dst, src, add, stream);
  }
}

// dst = src or dst += src over what `plan` walks (views checked by the caller: check_convert()).
template <class Plan>
Status convert_with(const Plan& plan, const TensorView& dst, const TensorView& src, bool add,
                    Stream stream) {
  switch (dst.dtype) {
    case DType::kFloat32:
      return convert_to<DType::kFloat32>(plan, dst, src, add, stream);
    case DType::kFloat16:
      return convert_to<DType::kFloat16>(plan, dst, src, add, stream);
    default:
      return convert_to<DType::kBFloat16>(plan, dst, src, add, stream);
  }
}

// f(pointer to `data` as the unsigned type of `bytes` bytes: 16, 8, 4, 2, else 1), the vector
// the walks below move.
template <class F>
Status with_vector(std::size_t bytes, void* data, F f) {
  switch (bytes) {
    case 16:
      return f(as<uint4>(data));
    case 8:
      return f(as<uint2>(data));
    case 4:
      return f(as<unsigned>(data));
    case 2:
      return f(as<unsigned short>(data));
    default:
      return f(as<unsigned char>(data));
  }
}

// Zero over what `walk` visits (vectors of walk.vec() elements of `bytes` bytes).
template <class Walk>
Status zero_with(const Walk& walk, void* data, std::size_t bytes, Stream stream) {
  return with_vector(static_cast<std::size_t>(walk.vec()) * bytes, data, [&](auto* d) {
    using V = std::remove_pointer_t<decltype(d)>;
    return walk.run(ZeroOp<V>{d}, stream);
  });
}

// dst = src, bits unchanged, over what `walk` visits (vectors of walk.vec() elements).
template <class Walk>
Status copy_with(const Walk& walk, const TensorView& dst, const TensorView& src, Stream stream) {
  const std::size_t bytes = static_cast<std::size_t>(walk.vec()) * dtype_size(dst.dtype);
  return with_vector(bytes, dst.data, [&](auto* d) {
    using V = std::remove_pointer_t<decltype(d)>;
    return walk.run(CopyOp<V>{d, static_cast<const V*>(src.data)}, stream);
  });
}

Status check_copy(const TensorView& dst, const TensorView& src, const char* what) {
  ULYSSES_RETURN_IF_ERROR(same_shape(dst, src, what));
  if (dst.dtype != src.dtype) {
    return internal_error(detail::str_cat("ulysses::kernels::cuda::", what, ": dtypes differ (",
                                          dtype_name(dst.dtype), " vs ", dtype_name(src.dtype),
                                          ")"));
  }
  return Status::ok();
}

Status check_convert(const TensorView& dst, const TensorView& src, const char* what) {
  ULYSSES_RETURN_IF_ERROR(same_shape(dst, src, what));
  if (!is_float(dst.dtype) || !is_float(src.dtype)) {
    return unsupported(detail::str_cat("ulysses::kernels::cuda::", what, ": dtypes ",
                                       dtype_name(dst.dtype), " <- ", dtype_name(src.dtype),
                                       " (expected fp32, fp16 or bf16)"));
  }
  return Status::ok();
}

Status check_pieces_view(const TensorView& t, const char* what) {
  if (t.ndim < 2 || t.size(0) != 1) {
    return internal_error(detail::str_cat("ulysses::kernels::cuda::", what,
                                          ": expected a view of [1, S, ...], got ", t.to_string()));
  }
  return Status::ok();
}

}  // namespace

Status fill_zero(const TensorView& dst, Stream stream) {
  const std::size_t e = dtype_size(dst.dtype);
  const RowWalk walk = plan_row_walk(dst, nullptr, byte_widths(e));
  if (walk.total() == 0) return Status::ok();
  if (walk.outer_dims == 0) {  // one block of memory
    ULYSSES_CUDA_CHECK(cudaMemsetAsync(
        dst.data, 0,
        static_cast<std::size_t>(walk.row_vecs) * static_cast<std::size_t>(walk.vec) * e, stream));
    return Status::ok();
  }
  return zero_with(WholeWalk{walk}, dst.data, e, stream);
}

Status fill_zero_rows(const TensorView& dst, RowPieces rows, Stream stream) {
  ULYSSES_RETURN_IF_ERROR(check_pieces_view(dst, "fill_zero_rows"));
  const std::size_t e = dtype_size(dst.dtype);
  return zero_with(PlanPieces{rows}(dst, nullptr, byte_widths(e)), dst.data, e, stream);
}

Status copy_elements(const TensorView& dst, const TensorView& src, Stream stream) {
  ULYSSES_RETURN_IF_ERROR(check_copy(dst, src, "copy_elements"));
  const std::size_t e = dtype_size(dst.dtype);
  const RowWalk walk = plan_row_walk(dst, &src, byte_widths(e));
  if (walk.total() == 0) return Status::ok();
  if (walk.outer_dims == 0) {
    ULYSSES_CUDA_CHECK(cudaMemcpyAsync(
        dst.data, src.data,
        static_cast<std::size_t>(walk.row_vecs) * static_cast<std::size_t>(walk.vec) * e,
        cudaMemcpyDeviceToDevice, stream));
    return Status::ok();
  }
  return copy_with(WholeWalk{walk}, dst, src, stream);
}

Status convert_elements(const TensorView& dst, const TensorView& src, bool add, Stream stream) {
  ULYSSES_RETURN_IF_ERROR(check_convert(dst, src, "convert_elements"));
  if (!add && dst.dtype == src.dtype) return copy_elements(dst, src, stream);
  return convert_with(PlanWhole{}, dst, src, add, stream);
}

Status convert_rows(const TensorView& dst, const TensorView& src, RowPieces rows, bool add,
                    Stream stream) {
  ULYSSES_RETURN_IF_ERROR(check_convert(dst, src, "convert_rows"));
  ULYSSES_RETURN_IF_ERROR(check_pieces_view(dst, "convert_rows"));
  return convert_with(PlanPieces{rows}, dst, src, add, stream);
}

Status copy_rows(const TensorView& dst, const TensorView& src, RowPieces rows, Stream stream) {
  ULYSSES_RETURN_IF_ERROR(check_copy(dst, src, "copy_rows"));
  ULYSSES_RETURN_IF_ERROR(check_pieces_view(dst, "copy_rows"));
  return copy_with(PlanPieces{rows}(dst, &src, byte_widths(dtype_size(dst.dtype))), dst, src,
                   stream);
}

}  // namespace ulysses::kernels::cuda
