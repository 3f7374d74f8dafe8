#include "parallel/plan_common.h"

#include <array>
#include <bit>
#include <vector>

#include "attention/local_checks.h"
#include "common/check.h"
#include "ulysses/sharding.h"

namespace ulysses::parallel {

using detail::arg_error;
using detail::str_cat;

TensorView as_bshd(const TensorView& t, Layout layout) {
  if (layout == Layout::kBSHD || t.ndim != 3) return t;
  TensorView out = t;
  out.ndim = 4;
  for (int d = 3; d >= 1; --d) {
    out.shape[static_cast<std::size_t>(d)] = t.shape[static_cast<std::size_t>(d - 1)];
    out.strides[static_cast<std::size_t>(d)] = t.strides[static_cast<std::size_t>(d - 1)];
  }
  out.shape[0] = 1;
  out.strides[0] = 0;
  return out;
}

// A [H, T] (kTHD) LSE view as [1, H, T].
TensorView lse_as_bhs(const TensorView& t, Layout layout) {
  if (layout == Layout::kBSHD || t.ndim != 2) return t;
  TensorView out = t;
  out.ndim = 3;
  out.shape = {1, t.shape[0], t.shape[1], 0};
  out.strides = {0, t.strides[0], t.strides[1], 0};
  return out;
}

TensorView lse_as_rows(const TensorView& bhs) {
  return TensorView::strided(bhs.data, bhs.dtype, {bhs.size(0), bhs.size(2), bhs.size(1), 1},
                             {bhs.stride(0), bhs.stride(2), bhs.stride(1), 1}, bhs.device);
}

namespace {

// Every field that must agree across ranks, as integers (for the create-time consensus).
struct Fingerprint {
  static constexpr int kFields = 24;
  // clang-format off
  static constexpr std::array<std::string_view, kFields> kNames = {
      "format", "layout", "dtype", "batch", "seqlen", "training",
      "strategy", "cp", "ulysses_degree", "packed_sharding", "overlap_chunks",
      "backward_keeps_saved",
      "saved_activations", "chunks_in_flight", "payload",
      "num_heads_q", "num_heads_kv", "head_dim", "softmax_scale", "causal",
      "window_left", "window_right", "sinks", "head_dim_v"};
  // clang-format on
  std::array<std::int64_t, kFields> v{};

  static Fingerprint of(const PlanConfig& c) {
    Fingerprint f;
    const AttentionConfig& a = c.attention;
    f.v = {0x554c5953,  // "ULYS": catches ranks running different library builds
           static_cast<std::int64_t>(c.layout),
           static_cast<std::int64_t>(c.dtype),
           c.batch,
           c.seqlen,
           c.training ? 1 : 0,
           static_cast<std::int64_t>(c.parallel.strategy),
           c.parallel.cp,
           c.parallel.ulysses_degree,
           static_cast<std::int64_t>(c.parallel.packed_sharding),
           c.overlap_chunks,
           c.backward_keeps_saved ? 1 : 0,
           static_cast<std::int64_t>(c.saved_activations),
           c.chunks_in_flight,
           static_cast<std::int64_t>(c.payload),
           a.num_heads_q,
           a.num_heads_kv,
           a.head_dim,
           a.softmax_scale
               ? static_cast<std::int64_t>(std::bit_cast<std::uint32_t>(*a.softmax_scale))
               : -1,
           a.causal ? 1 : 0,
           a.window_left,
           a.window_right,
           a.sinks ? 1 : 0,
           a.value_dim()};
    return f;
  }
};

}  // namespace

Status agree_on_fields(std::span<const std::int64_t> fields,
                       std::span<const std::string_view> names, Communicator& comm,
                       const Status& local, std::string_view api) {
  // Validate locally, but report only after the ranks have compared configs: a config that is bad
  // on one rank and fine on another must fail everywhere, not leave the good ranks waiting.
  const std::size_t n = fields.size() + 1;  // + this rank's validation status
  std::vector<std::int64_t> mine(fields.begin(), fields.end());
  mine.push_back(static_cast<std::int64_t>(local.code()));
  std::vector<std::int64_t> host_all(static_cast<std::size_t>(comm.size()) * n);
  ULYSSES_RETURN_IF_ERROR(
      comm.host_all_gather(mine.data(), host_all.data(), n * sizeof(std::int64_t)));
  for (int r = 0; r < comm.size(); ++r) {
    for (std::size_t f = 0; f < n; ++f) {
      const std::int64_t theirs = host_all[static_cast<std::size_t>(r) * n + f];
      if (theirs == mine[f]) continue;
      if (f == n - 1 && local.is_ok()) {
        return Status(
            StatusCode::kConfigMismatch,
            str_cat(api, ": rank ", r, " rejected the configuration (status ",
                    status_code_name(static_cast<StatusCode>(theirs)), "); see that rank's error"));
      }
      if (f == n - 1) return local;
      return Status(StatusCode::kConfigMismatch,
                    str_cat(api, ": ", names[f], " differs between ranks (got ", mine[f],
                            " on rank ", comm.rank(), ", ", theirs, " on rank ", r,
                            "; expected the same configuration on every rank)"));
    }
  }
  return local;
}

Status check_plan_call(const LocalAttention& kernel, const LocalProblem& p,
                       std::string_view strategy) {
  const Status s = kernel.check_support(p);
  if (s.is_ok()) return s;
  return Status(
      s.code(),
      str_cat(kCreateApi, ": strategy ", strategy, " calls kernel ", kernel.name(), " on ",
              p.seqlen, " query x ", p.kv_len(), " key rows (diagonal offset ", p.diagonal_offset,
              p.backward ? ", training" : "", "), which it refuses: ", s.message()));
}

Status agree_on_config(const PlanConfig& config, Communicator& comm, const Status& local) {
  const Fingerprint mine = Fingerprint::of(config);
  return agree_on_fields(mine.v, Fingerprint::kNames, comm, local, kCreateApi);
}

Status CallChecks::activation(const TensorView& t, std::string_view name, int heads, DType dtype,
                              std::string_view api, bool value) const {
  const int d = value ? config.attention.value_dim() : config.attention.head_dim;
  if (config.layout == Layout::kTHD) {
    return detail::check_view(t, name, {local_tokens, heads, d}, dtype, comm.device(), true, api);
  }
  return detail::check_view(t, name, {config.batch, local_tokens, heads, d}, dtype, comm.device(),
                            true, api);
}

Status CallChecks::common(const TensorView& sinks, std::span<const std::int32_t> cu_seqlens,
                          const std::int32_t* cu_seqlens_device, const void* workspace,
                          std::string_view api) const {
  const AttentionConfig& c = config.attention;
  if (c.sinks) {
    ULYSSES_RETURN_IF_ERROR(detail::check_view(sinks, "sinks", {c.num_heads_q}, DType::kFloat32,
                                               comm.device(), true, api));
  } else if (!sinks.empty_view()) {
    return arg_error(api, "sinks", "is given but attention.sinks is false", sinks.to_string(),
                     "an empty view");
  }
  if (config.layout == Layout::kTHD) {
    ULYSSES_RETURN_IF_ERROR(validate_cu_seqlens(cu_seqlens, config.seqlen, api));
    if (!kernel.device().is_host() && cu_seqlens_device == nullptr) {
      return arg_error(api, "cu_seqlens_device", "is null", "nullptr",
                       "the cu_seqlens values in device memory");
    }
  } else if (!cu_seqlens.empty()) {
    return arg_error(api, "cu_seqlens", "is given for layout bshd", cu_seqlens.size(),
                     "empty (cu_seqlens needs layout thd)");
  }
  if (workspace_bytes > 0 && workspace == nullptr) {
    return arg_error(api, "workspace", "is null", "nullptr",
                     str_cat(workspace_bytes, " bytes (workspace_bytes())"));
  }
  return Status::ok();
}

Status CallChecks::forward(const ForwardArgs& a) const {
  constexpr std::string_view api = kForwardApi;
  const AttentionConfig& c = config.attention;
  ULYSSES_RETURN_IF_ERROR(activation(a.q, "q", c.num_heads_q, config.dtype, api));
  ULYSSES_RETURN_IF_ERROR(activation(a.k, "k", c.num_heads_kv, config.dtype, api));
  ULYSSES_RETURN_IF_ERROR(activation(a.v, "v", c.num_heads_kv, config.dtype, api, true));
  ULYSSES_RETURN_IF_ERROR(activation(a.o, "o", c.num_heads_q, config.dtype, api, true));
  if (!a.lse.empty_view()) {
    if (!kernel.provides_lse()) {
      return unsupported(str_cat(api, ": lse was requested but kernel ", kernel.name(),
                                 " provides no softmax statistics (got an lse view, expected an "
                                 "empty one)"));
    }
    if (config.layout == Layout::kTHD) {
      ULYSSES_RETURN_IF_ERROR(detail::check_view(a.lse, "lse", {c.num_heads_q, local_tokens},
                                                 DType::kFloat32, comm.device(), false, api));
    } else {
      ULYSSES_RETURN_IF_ERROR(detail::check_view(a.lse, "lse",
                                                 {config.batch, c.num_heads_q, local_tokens},
                                                 DType::kFloat32, comm.device(), false, api));
    }
  }
  ULYSSES_RETURN_IF_ERROR(common(a.sinks, a.cu_seqlens, a.cu_seqlens_device, a.workspace, api));
  if (config.training && saved_bytes > 0 && a.saved == nullptr) {
    return arg_error(api, "saved", "is null while training", "nullptr",
                     str_cat(saved_bytes, " bytes (saved_bytes())"));
  }
  return Status::ok();
}

Status CallChecks::backward(const BackwardArgs& a) const {
  constexpr std::string_view api = kBackwardApi;
  const AttentionConfig& c = config.attention;
  if (!config.training) {
    return arg_error(api, "config.training", "is false", "false",
                     "a plan created with training = true");
  }
  if (!kernel.supports_backward()) {
    return unsupported(str_cat(api, ": kernel ", kernel.name(), " has no backward"));
  }
  ULYSSES_RETURN_IF_ERROR(activation(a.d_o, "d_o", c.num_heads_q, config.dtype, api, true));
  ULYSSES_RETURN_IF_ERROR(activation(a.dq, "dq", c.num_heads_q, config.dtype, api));
  ULYSSES_RETURN_IF_ERROR(activation(a.dk, "dk", c.num_heads_kv, config.dtype, api));
  ULYSSES_RETURN_IF_ERROR(activation(a.dv, "dv", c.num_heads_kv, config.dtype, api, true));
  if (c.sinks) {
    ULYSSES_RETURN_IF_ERROR(detail::check_view(a.dsinks, "dsinks", {c.num_heads_q}, DType::kFloat32,
                                               comm.device(), true, api));
  }
  ULYSSES_RETURN_IF_ERROR(common(a.sinks, a.cu_seqlens, a.cu_seqlens_device, a.workspace, api));
  if (saved_bytes > 0 && a.saved == nullptr) {
    return arg_error(api, "saved", "is null", "nullptr",
                     str_cat(saved_bytes, " bytes from the matching forward()"));
  }
  if (config.saved_activations == SavedActivations::kLseOnly) {
    // The forward's inputs and output, exchanged again with dO.
    ULYSSES_RETURN_IF_ERROR(
        activation(a.q, "q (saved_activations = lse)", c.num_heads_q, config.dtype, api));
    ULYSSES_RETURN_IF_ERROR(
        activation(a.k, "k (saved_activations = lse)", c.num_heads_kv, config.dtype, api));
    ULYSSES_RETURN_IF_ERROR(
        activation(a.v, "v (saved_activations = lse)", c.num_heads_kv, config.dtype, api, true));
    ULYSSES_RETURN_IF_ERROR(
        activation(a.o, "o (saved_activations = lse)", c.num_heads_q, config.dtype, api, true));
  }
  return Status::ok();
}

}  // namespace ulysses::parallel
