#include "attention/local_checks.h"

#include <sstream>

#include "common/check.h"
#include "ulysses/sharding.h"

namespace ulysses::detail {

namespace {
std::string shape_string(std::initializer_list<std::int64_t> shape) {
  std::ostringstream os;
  os << "[";
  bool first = true;
  for (std::int64_t s : shape) {
    os << (first ? "" : ", ") << s;
    first = false;
  }
  os << "]";
  return os.str();
}
}  // namespace

Status check_view(const TensorView& view, std::string_view name,
                  std::initializer_list<std::int64_t> shape, DType dtype, Device device,
                  bool last_dim_contiguous, std::string_view api) {
  const int ndim = static_cast<int>(shape.size());
  bool same_shape = view.ndim == ndim;
  if (same_shape) {
    int d = 0;
    for (std::int64_t s : shape) same_shape = same_shape && view.size(d++) == s;
  }
  if (!same_shape) {
    // [seq, batch, heads, dim] memory (Megatron's sbhd) handed over as is: say how it goes in.
    const std::int64_t* want = shape.begin();
    if (ndim == 4 && view.ndim == 4 && want[0] != want[1] && view.size(0) == want[1] &&
        view.size(1) == want[0] && view.size(2) == want[2] && view.size(3) == want[3]) {
      return arg_error(api, name,
                       "has its first two dimensions swapped (a [seq, batch, heads, dim] tensor "
                       "goes in as a [batch, seq, heads, dim] view with no copy, e.g. "
                       "x.transpose(0, 1) in PyTorch)",
                       view.to_string(), shape_string(shape));
    }
    return arg_error(api, name, "has the wrong shape", view.to_string(), shape_string(shape));
  }
  if (view.dtype != dtype) {
    return arg_error(api, name, "has the wrong dtype", dtype_name(view.dtype), dtype_name(dtype));
  }
  if (view.device != device) {
    return arg_error(api, name, "is on the wrong device", view.device.to_string(),
                     device.to_string());
  }
  if (view.numel() > 0 && view.data == nullptr) {
    return arg_error(api, name, "has no data", "nullptr", "a valid pointer");
  }
  for (int d = 0; d < ndim; ++d) {
    if (view.stride(d) < 0) {
      return arg_error(api, str_cat(name, ".strides[", d, "]"), "is negative", view.stride(d),
                       ">= 0");
    }
  }
  if (last_dim_contiguous && ndim > 0 && view.size(ndim - 1) > 1 && view.stride(ndim - 1) != 1) {
    return arg_error(api, str_cat(name, ".strides[", ndim - 1, "]"),
                     "must be 1 (head_dim contiguous)", view.stride(ndim - 1), "1");
  }
  return Status::ok();
}

Status check_local_problem(const LocalProblem& p, std::string_view api) {
  ULYSSES_RETURN_IF_ERROR(p.config.validate());
  const AttentionConfig& c = p.config;
  if (p.batch < 1) return arg_error(api, "batch", "must be positive", p.batch, ">= 1");
  if (p.seqlen < 1) return arg_error(api, "seqlen", "must be positive", p.seqlen, ">= 1");
  if (p.varlen && p.batch != 1) {
    return arg_error(api, "batch", "must be 1 for a packed (varlen) batch", p.batch, "1");
  }
  if (p.num_heads_q_local < 1 || p.head_offset_q < 0 ||
      p.head_offset_q + p.num_heads_q_local > c.num_heads_q) {
    return arg_error(
        api, "query head slice", "is out of range",
        str_cat("[", p.head_offset_q, ", ", p.head_offset_q + p.num_heads_q_local, ")"),
        str_cat("a non-empty range inside [0, ", c.num_heads_q, ")"));
  }
  if (p.num_heads_kv_local < 1 || p.head_offset_kv < 0 ||
      p.head_offset_kv + p.num_heads_kv_local > c.num_heads_kv) {
    return arg_error(
        api, "key/value head slice", "is out of range",
        str_cat("[", p.head_offset_kv, ", ", p.head_offset_kv + p.num_heads_kv_local, ")"),
        str_cat("a non-empty range inside [0, ", c.num_heads_kv, ")"));
  }
  const int ratio = c.num_heads_q / c.num_heads_kv;
  const int first_kv = p.head_offset_q / ratio;
  const int last_kv = (p.head_offset_q + p.num_heads_q_local - 1) / ratio;
  if (first_kv < p.head_offset_kv || last_kv >= p.head_offset_kv + p.num_heads_kv_local) {
    return arg_error(
        api, "key/value head slice", "does not hold the heads the query slice uses",
        str_cat("[", p.head_offset_kv, ", ", p.head_offset_kv + p.num_heads_kv_local, ")"),
        str_cat("a range covering [", first_kv, ", ", last_kv + 1, ")"));
  }
  if (p.seqlen_kv < 0) {
    return arg_error(api, "seqlen_kv", "is negative", p.seqlen_kv, ">= 0 (0: seqlen)");
  }
  if (p.varlen_rows && !p.varlen) {
    return arg_error(api, "varlen_rows", "needs varlen", "true with varlen false",
                     "varlen true (VarlenRows describe a packed batch)");
  }
  if (p.bottom_right && !p.varlen_rows) {
    return arg_error(api, "bottom_right", "needs varlen_rows", "true with varlen_rows false",
                     "varlen_rows true (the corner is each VarlenRows sequence's)");
  }
  if (p.varlen && !p.varlen_rows && (p.seqlen_kv != 0 || p.diagonal_offset != 0)) {
    return arg_error(api, "seqlen_kv / diagonal_offset", "are not supported with cu_seqlens",
                     str_cat(p.seqlen_kv, " / ", p.diagonal_offset),
                     "0 / 0 for a packed batch (or VarlenRows: varlen_rows)");
  }
  if (p.grad_kv_dtype != p.dtype && p.grad_kv_dtype != DType::kFloat32) {
    return arg_error(api, "grad_kv_dtype", "is not supported", dtype_name(p.grad_kv_dtype),
                     str_cat(dtype_name(p.dtype), " or fp32"));
  }
  return Status::ok();
}

namespace {
// One side of VarlenRows: ascending, non-overlapping ranges inside [0, rows).
Status check_row_side(std::span<const std::int32_t> begin, std::span<const std::int32_t> len,
                      std::int64_t rows, std::string_view side, std::string_view api) {
  std::int64_t end = 0;
  for (std::size_t s = 0; s < begin.size(); ++s) {
    if (len[s] < 0) {
      return arg_error(api, str_cat("rows.", side, "_len[", s, "]"), "is negative", len[s], ">= 0");
    }
    if (begin[s] < end || static_cast<std::int64_t>(begin[s]) + len[s] > rows) {
      return arg_error(
          api, str_cat("rows.", side, "_begin[", s, "]"), "puts the sequence outside the free rows",
          str_cat("[", begin[s], ", ", static_cast<std::int64_t>(begin[s]) + len[s], ")"),
          str_cat("a range inside [", end, ", ", rows,
                  ") (ascending, not overlapping the previous sequence)"));
    }
    end = static_cast<std::int64_t>(begin[s]) + len[s];
  }
  return Status::ok();
}

Status check_varlen(const LocalProblem& p, std::span<const std::int32_t> cu_seqlens,
                    const VarlenRows& rows, Device device, std::string_view api) {
  if (!p.varlen) return Status::ok();
  if (!p.varlen_rows) return validate_cu_seqlens(cu_seqlens, p.seqlen, api);
  const std::size_t n = rows.q_begin.size();
  if (rows.q_len.size() != n || rows.kv_begin.size() != n || rows.kv_len.size() != n) {
    return arg_error(
        api, "rows", "has sides of different lengths",
        str_cat(n, ", ", rows.q_len.size(), ", ", rows.kv_begin.size(), ", ", rows.kv_len.size()),
        "q_begin, q_len, kv_begin and kv_len of one length");
  }
  if (!cu_seqlens.empty()) {
    return arg_error(api, "cu_seqlens", "is given with varlen_rows", cu_seqlens.size(),
                     "empty (the sequences are in rows)");
  }
  ULYSSES_RETURN_IF_ERROR(check_row_side(rows.q_begin, rows.q_len, p.seqlen, "q", api));
  ULYSSES_RETURN_IF_ERROR(check_row_side(rows.kv_begin, rows.kv_len, p.kv_len(), "kv", api));
  if (!device.is_host() && n > 0 &&
      (rows.q_begin_device == nullptr || rows.q_len_device == nullptr ||
       rows.kv_begin_device == nullptr || rows.kv_len_device == nullptr)) {
    return arg_error(api, "rows.*_device", "is null", "nullptr",
                     "the four row arrays in device memory");
  }
  return Status::ok();
}

Status check_sinks(const LocalProblem& p, const TensorView& sinks, std::string_view name,
                   Device device, std::string_view api) {
  if (!p.config.sinks) return Status::ok();
  return check_view(sinks, name, {p.config.num_heads_q}, DType::kFloat32, device, false, api);
}
}  // namespace

Status check_local_forward_args(const LocalProblem& p, const LocalForwardArgs& a, Device device,
                                std::string_view api) {
  ULYSSES_RETURN_IF_ERROR(check_local_problem(p, api));
  const std::int64_t B = p.batch, S = p.seqlen, Skv = p.kv_len(), D = p.config.head_dim,
                     Dv = p.config.value_dim();
  const std::int64_t hq = p.num_heads_q_local, hkv = p.num_heads_kv_local;
  ULYSSES_RETURN_IF_ERROR(check_view(a.q, "q", {B, S, hq, D}, p.dtype, device, true, api));
  ULYSSES_RETURN_IF_ERROR(check_view(a.k, "k", {B, Skv, hkv, D}, p.dtype, device, true, api));
  ULYSSES_RETURN_IF_ERROR(check_view(a.v, "v", {B, Skv, hkv, Dv}, p.dtype, device, true, api));
  ULYSSES_RETURN_IF_ERROR(check_view(a.o, "o", {B, S, hq, Dv}, p.out_dtype(), device, true, api));
  if (!a.lse.empty_view()) {
    ULYSSES_RETURN_IF_ERROR(
        check_view(a.lse, "lse", {B, hq, S}, DType::kFloat32, device, false, api));
  }
  ULYSSES_RETURN_IF_ERROR(check_sinks(p, a.sinks, "sinks", device, api));
  return check_varlen(p, a.cu_seqlens, a.rows, device, api);
}

Status check_local_backward_args(const LocalProblem& p, const LocalBackwardArgs& a, Device device,
                                 bool needs_o_lse, std::string_view api) {
  ULYSSES_RETURN_IF_ERROR(check_local_problem(p, api));
  needs_o_lse = needs_o_lse || p.partial_keys;
  const std::int64_t B = p.batch, S = p.seqlen, Skv = p.kv_len(), D = p.config.head_dim,
                     Dv = p.config.value_dim();
  const std::int64_t hq = p.num_heads_q_local, hkv = p.num_heads_kv_local;
  ULYSSES_RETURN_IF_ERROR(check_view(a.q, "q", {B, S, hq, D}, p.dtype, device, true, api));
  ULYSSES_RETURN_IF_ERROR(check_view(a.k, "k", {B, Skv, hkv, D}, p.dtype, device, true, api));
  ULYSSES_RETURN_IF_ERROR(check_view(a.v, "v", {B, Skv, hkv, Dv}, p.dtype, device, true, api));
  if (needs_o_lse) {
    ULYSSES_RETURN_IF_ERROR(check_view(a.o, "o", {B, S, hq, Dv}, p.dtype, device, true, api));
    ULYSSES_RETURN_IF_ERROR(
        check_view(a.lse, "lse", {B, hq, S}, DType::kFloat32, device, false, api));
  }
  ULYSSES_RETURN_IF_ERROR(check_view(a.d_o, "d_o", {B, S, hq, Dv}, p.dtype, device, true, api));
  ULYSSES_RETURN_IF_ERROR(
      check_view(a.dq, "dq", {B, S, hq, D}, p.grad_q_dtype(), device, true, api));
  ULYSSES_RETURN_IF_ERROR(
      check_view(a.dk, "dk", {B, Skv, hkv, D}, p.grad_kv_dtype, device, true, api));
  ULYSSES_RETURN_IF_ERROR(
      check_view(a.dv, "dv", {B, Skv, hkv, Dv}, p.grad_kv_dtype, device, true, api));
  ULYSSES_RETURN_IF_ERROR(check_sinks(p, a.sinks, "sinks", device, api));
  ULYSSES_RETURN_IF_ERROR(check_sinks(p, a.dsinks, "dsinks", device, api));
  return check_varlen(p, a.cu_seqlens, a.rows, device, api);
}

}  // namespace ulysses::detail
