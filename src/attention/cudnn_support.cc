#include "attention/cudnn_support.h"

#include <algorithm>
#include <array>

#include "attention/call_parts.h"
#include "attention/local_checks.h"
#include "common/check.h"

namespace ulysses::detail {
namespace {

constexpr std::string_view kApi = "ulysses::CudnnAttention";

}  // namespace

CudnnBand cudnn_band(const LocalProblem& p) {
  const AttentionConfig& c = p.config;
  CudnnBand b;
  if (c.causal || c.window_right >= 0) {
    b.has_right = true;
    b.right = p.diagonal_offset + (c.causal ? 0 : c.window_right);
    b.ok = b.right >= 0;
  }
  if (c.window_left >= 0) {
    b.has_left = true;
    b.left = c.window_left + 1 - p.diagonal_offset;
    b.ok = b.ok && b.left >= 1;
  }
  return b;
}

std::vector<CausalBand> causal_bands(const LocalProblem& p) {
  const AttentionConfig& c = p.config;
  if (c.causal || c.window_right < 1 || p.diagonal_offset != 0 || !p.backward) return {};
  if (p.varlen ? (p.varlen_rows && p.bottom_right) : (p.seqlen != p.kv_len() || p.seqlen < 2)) {
    return {};
  }
  const std::int64_t S = p.seqlen, wr = c.window_right;
  auto band = [&](CausalBand::Kind kind, std::int64_t q0, std::int64_t kv0, std::int64_t rows,
                  bool causal, std::int64_t window_left, std::int64_t kv_rows = 0) {
    CausalBand b{kind, p, q0, kv0, {}};
    b.problem.config.sinks = false;
    b.problem.config.causal = causal;
    b.problem.config.window_left = static_cast<int>(window_left);
    b.problem.config.window_right = -1;
    b.problem.partial_keys = true;
    b.problem.grad_q_fp32 = true;
    b.problem.grad_kv_dtype = DType::kFloat32;
    b.problem.accumulate_dq = b.problem.accumulate_dkv = false;
    if (p.varlen) {  // every row of the call; the sequences' pieces come with each call
      b.problem.varlen_rows = true;
      b.problem.bottom_right = false;
    } else {
      b.problem.seqlen = rows;
      b.problem.seqlen_kv = kv_rows;
    }
    return b;
  };
  if (p.varlen) {
    return {band(CausalBand::kLower, 0, 0, 0, true, c.window_left),
            band(CausalBand::kUpper, 0, 0, 0, true, wr - 1),
            band(CausalBand::kHead, 0, 0, 0, false, 0), band(CausalBand::kTail, 0, 0, 0, false, 0)};
  }
  const std::int64_t t = std::max<std::int64_t>(0, S - wr);
  std::vector<CausalBand> out = {band(CausalBand::kLower, 0, 0, S, true, c.window_left)};
  if (t > 0) out.push_back(band(CausalBand::kUpper, 0, wr, t, true, wr - 1));
  if (t > 0 && wr > 1) {
    out.push_back(band(CausalBand::kHead, 0, 1, std::min(t, wr - 1), false, 0, wr - 1));
  }
  if (S - 1 > t) out.push_back(band(CausalBand::kTail, t, t + 1, S - 1 - t, false, 0));
  return out;
}

std::vector<CausalBand> causal_bands(const LocalProblem& p, const VarlenRows& seqs) {
  std::vector<CausalBand> bands = causal_bands(p);
  if (bands.empty() || !p.varlen) return bands;
  const std::int64_t wr = p.config.window_right;
  std::vector<CausalBand> out;
  for (CausalBand& b : bands) {
    std::array<std::vector<std::int32_t>, 4> r;  // q_begin, q_len, kv_begin, kv_len
    for (int s = 0; s < seqs.num_seqs(); ++s) {
      const auto su = static_cast<std::size_t>(s);
      const std::int64_t qb = seqs.q_begin[su], ql = seqs.q_len[su], kb = seqs.kv_begin[su],
                         kl = seqs.kv_len[su];
      const std::int64_t t = std::max<std::int64_t>(0, std::min(ql, kl - wr));
      std::array<std::int64_t, 4> piece{};
      switch (b.kind) {
        case CausalBand::kLower:
          piece = {qb, ql, kb, kl};
          break;
        case CausalBand::kUpper:
          piece = {qb, t, kb + wr, t};
          break;
        case CausalBand::kHead:
          piece = {qb, std::min(t, wr - 1), kb + 1, wr - 1};
          break;
        case CausalBand::kTail: {
          const std::int64_t end = std::min(ql, kl - 1);
          piece = {qb + t, end - t, kb + t + 1, kl - t - 1};
          break;
        }
      }
      if (piece[1] <= 0 || piece[3] <= 0) continue;
      for (std::size_t i = 0; i < 4; ++i) r[i].push_back(static_cast<std::int32_t>(piece[i]));
    }
    if (r[0].empty() && b.kind != CausalBand::kLower) continue;
    for (const auto& row : r) b.rows.insert(b.rows.end(), row.begin(), row.end());
    out.push_back(std::move(b));
  }
  return out;
}

Status cudnn_forward_support(const LocalProblem& p, CudnnTarget t) {
  ULYSSES_RETURN_IF_ERROR(check_local_problem(p, kApi));
  // Sums are fp32 and cuDNN's own result is staged in the I/O dtype, then added.
  if (p.accumulate_dq && !p.grad_q_fp32) {
    return unsupported(str_cat(kApi, ": accumulate_dq needs an fp32 dq (grad_q_fp32)"));
  }
  if (p.accumulate_dkv && p.grad_kv_dtype != DType::kFloat32) {
    return unsupported(str_cat(kApi, ": accumulate_dkv needs fp32 dk and dv (got grad_kv_dtype ",
                               dtype_name(p.grad_kv_dtype), ", expected fp32)"));
  }
  if (p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16) {
    return unsupported(str_cat(kApi, ": dtype ", dtype_name(p.dtype), " is not supported (got ",
                               dtype_name(p.dtype), ", expected fp16 or bf16)"));
  }
  if (p.config.head_dim % 8 != 0 || p.config.head_dim > 256) {
    return unsupported(str_cat(kApi, ": head_dim ", p.config.head_dim,
                               " is not supported by cuDNN SDPA (got ", p.config.head_dim,
                               ", expected a multiple of 8 up to 256)"));
  }
  const int dv = p.config.value_dim();
  if (dv % 8 != 0 || dv > 256) {
    return unsupported(str_cat(kApi, ": head_dim_v ", dv, " is not supported by cuDNN SDPA (got ",
                               dv, ", expected a multiple of 8 up to 256)"));
  }
  // cudnn-frontend (1.32) takes head dims that differ before Hopper only up to 128.
  if (p.config.mixed_dims() && t.cc_major < 9 && std::max(p.config.head_dim, dv) > 128) {
    return unsupported(str_cat(kApi, ": head_dim ", p.config.head_dim, " with head_dim_v ", dv,
                               " on a compute capability ", t.cc_major,
                               ".x GPU (cuDNN takes head dims that differ up to 128 there)"));
  }
  const CudnnBand b = cudnn_band(p);
  if (!b.ok) {
    return unsupported(str_cat(
        kApi, ": masks on a block with diagonal offset ", p.diagonal_offset,
        " outside the visible band (cuDNN needs a right bound >= 0 and a left bound >= 1: got ",
        b.right, " and ", b.left, ")"));
  }
  // cudnn-frontend (1.32: sdpa_support_surface.h) takes a left bound without a padding mask only
  // for max_s_q <= max_s_kv; packed calls carry a padding mask, dense ones do not. Refused here,
  // when a plan is made, instead of by the first call's graph on one rank.
  if (b.has_left && !p.varlen && p.seqlen > p.kv_len()) {
    return unsupported(str_cat(kApi, ": a sliding window (window_left ", p.config.window_left,
                               ") on a dense call with more query than key rows (got ", p.seqlen,
                               " x ", p.kv_len(),
                               ", expected at most as many query rows: cuDNN "
                               "takes such windows only with a padding mask)"));
  }
  if (p.varlen && !p.varlen_rows && (p.grad_q_fp32 || p.out_fp32)) {
    return unsupported(
        str_cat(kApi, ": an fp32 dq or o with a packed (varlen) batch given by cu_seqlens"));
  }
  if (p.varlen && t.version < 90500) {
    return unsupported(str_cat(kApi,
                               ": packed (varlen) batches need cuDNN 9.5 or newer (int64 ragged "
                               "offsets; running ",
                               t.version, ")"));
  }
  // Sinks have no version rule: cuDNN never sees them (CudnnAttention folds them in itself).
  return Status::ok();
}

Status cudnn_backward_support(const LocalProblem& p, CudnnTarget t) {
  // cuDNN's support matrix (9.18): SDPA backward on Ampere and Ada takes head_dim up to 128,
  // Hopper and newer up to 256; forward takes 256 on all of them.
  const int wide = std::max(p.config.head_dim, p.config.value_dim());
  if (t.cc_major < 9 && wide > 128) {
    return unsupported(str_cat(kApi, "::backward: head_dim ", wide, " on a compute capability ",
                               t.cc_major,
                               ".x GPU (cuDNN's SDPA backward before Hopper takes head_dim up to "
                               "128; forward alone, training = false, runs)"));
  }
  // Measured on one H200 (docs/results/2026-12-02-h200-cudnn-support/): cuDNN 9.14 returned dQ,
  // dK and dV off by O(1) for every packed backward with head_dim past 128 (136 to 256, fp16 and
  // bf16, any mask, one sequence or several), with no error; head_dim 128 packed and 256 dense
  // were right, and 9.19 was right for all of them. The versions between were not available.
  // (head_dim_v past 128, not measured apart, is held to the same rule.)
  if (p.varlen && wide > 128 && t.version < 91900) {
    const char* dim = p.config.head_dim < wide ? "head_dim_v " : "head_dim ";
    return unsupported(str_cat(kApi, "::backward: packed (varlen) batches with ", dim, wide,
                               " need cuDNN 9.19 or newer (running ", t.version,
                               ": 9.14 returned wrong gradients past head_dim 128; forward alone, "
                               "training = false, runs)"));
  }
  // head_dim_v != head_dim, packed (docs/results/2026-12-03-h200-mla-packed/, one H200): cuDNN
  // 9.19 right at 192/128, 192/72, 136/128, 128/72, 80/64, 72/128, 72/64, 64/128, 64/72, 40/64 and
  // with head_dim_v 256 (head_dim 32, 64), but wrong dQ and dK with head_dim 256 and head_dim_v
  // 72, 80 or 96 (no error; 32 and 64 were right), so head_dim past 192 is refused. cuDNN 9.14
  // returned wrong dK and dV at 64/128 from Ulysses' rows. Dense calls were right throughout.
  if (p.varlen && p.config.mixed_dims()) {
    const int D = p.config.head_dim, Dv = p.config.value_dim();
    if (t.version < 91900) {
      return unsupported(str_cat(kApi, "::backward: packed (varlen) batches with head_dim_v ", Dv,
                                 " != head_dim ", D, " need cuDNN 9.19 or newer (running ",
                                 t.version,
                                 ": 9.14 returned wrong dK and dV; forward alone, training = "
                                 "false, runs)"));
    }
    if (D > 192) {
      return unsupported(str_cat(kApi, "::backward: packed (varlen) batches with head_dim ", D,
                                 " past 192 and head_dim_v ", Dv,
                                 " (cuDNN 9.19 returned wrong dQ and dK at head_dim 256 with "
                                 "head_dim_v 72, 80 and 96; running ",
                                 t.version, "; forward alone, training = false, runs)"));
    }
  }
  // (A dense call with s_q = s_kv = 1, which cudnn-frontend 1.32 builds no backward graph for,
  // runs through CudnnAttention's own kernel: kernels::cuda::one_key_backward.)
  // A dense call past 2^31 elements runs in parts (dense_parts()); one that cannot be split is
  // refused here, when a training plan is made, rather than by its first backward. Compact views
  // bound every part: a part's view that reaches further is staged compact.
  if (!p.varlen) {
    const auto parts = dense_parts(p.batch, p.seqlen, p.kv_len(), p.num_heads_q_local,
                                   p.num_heads_kv_local, wide, false, kCudnnIndexLimit);
    if (!parts.is_ok()) return cudnn_past_index_limit(parts.status(), t);
  }
  return Status::ok();
}

Status cudnn_past_index_limit(const Status& split, CudnnTarget t) {
  return unsupported(str_cat(kApi, "::backward: ", split.message(), " (2^31): cuDNN ", t.version,
                             "'s backward returned wrong dQ and dK past element 2^31 of K, O or "
                             "dO"));
}

bool cudnn_packed_workspace_follows_tokens(int head_dim, int head_dim_v, CudnnTarget t) {
  if (t.version < 90600 || head_dim % 16 != 0 || head_dim_v % 16 != 0) return false;
  return !(t.version >= 91801 && (t.cc_major == 8 || t.cc_major == 12));
}

}  // namespace ulysses::detail
