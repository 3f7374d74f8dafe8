// ulysses: what the Ulysses and ring plans share: buffer carving, view reshaping, the create-time
// consensus across ranks, and the per-call argument checks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "common/tensor_rows.h"
#include "ulysses/attention.h"

namespace ulysses::parallel {

inline constexpr std::string_view kCreateApi = "ulysses::DistributedAttention::create";
inline constexpr std::string_view kForwardApi = "ulysses::DistributedAttention::forward";
inline constexpr std::string_view kBackwardApi = "ulysses::DistributedAttention::backward";

inline constexpr std::size_t kAlign = 256;
inline std::size_t align_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

/// Carves aligned regions out of one caller-provided buffer.
class Arena {
 public:
  /// Regions from offset `start` on (a multiple of kAlign).
  explicit Arena(std::size_t start = 0) : total_(start) {}
  std::size_t take(std::size_t bytes) {
    const std::size_t offset = total_;
    total_ += align_up(bytes);
    return offset;
  }
  std::size_t total() const { return total_; }

 private:
  std::size_t total_ = 0;
};

inline char* at(void* base, std::size_t offset) { return static_cast<char*>(base) + offset; }

/// A [T, H, D] (kTHD) view as [1, T, H, D]; kBSHD views pass through.
TensorView as_bshd(const TensorView& t, Layout layout);
/// A [H, T] (kTHD) LSE view as [1, H, T]; kBSHD views pass through.
TensorView lse_as_bhs(const TensorView& t, Layout layout);
/// A [B, H, S] LSE view as [B, S, H, 1]: rows of one element per head, for the head-wise unpacks
/// (pack_heads/unpack_heads) of one peer at a time.
TensorView lse_as_rows(const TensorView& bhs);
using detail::sequence_rows;  // rows [row0, row0 + rows) of a [B, S, H, D] view

/// Every field of `config` that must agree across ranks, plus this rank's validation result, is
/// all-gathered once; a difference is kConfigMismatch on every rank, a rank's rejection is reported
/// on every rank. Returns `local` when all agree.
Status agree_on_config(const PlanConfig& config, Communicator& comm, const Status& local);

/// kernel.check_support(p) for one call a ring or all-gather plan will make; a refusal says which
/// call (its rows and diagonal offset), so that the user can tell what in the config made it.
Status check_plan_call(const LocalAttention& kernel, const LocalProblem& p,
                       std::string_view strategy);
/// The same for any configuration given as integer fields (names[i] names fields[i] in the
/// kConfigMismatch message); api prefixes the messages.
Status agree_on_fields(std::span<const std::int64_t> fields,
                       std::span<const std::string_view> names, Communicator& comm,
                       const Status& local, std::string_view api);

/// The per-call checks both plans run before any data moves.
struct CallChecks {
  const PlanConfig& config;
  const Communicator& comm;
  const LocalAttention& kernel;
  std::int64_t local_tokens;  // tokens per rank: seqlen / cp
  std::size_t workspace_bytes;
  std::size_t saved_bytes;

  Status forward(const ForwardArgs& a) const;
  Status backward(const BackwardArgs& a) const;

 private:
  // `value`: a V, O, dO or dV view, of head_dim_v.
  Status activation(const TensorView& t, std::string_view name, int heads, DType dtype,
                    std::string_view api, bool value = false) const;
  Status common(const TensorView& sinks, std::span<const std::int32_t> cu_seqlens,
                const std::int32_t* cu_seqlens_device, const void* workspace,
                std::string_view api) const;
};

}  // namespace ulysses::parallel
