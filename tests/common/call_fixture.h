// One rank's views for a plan's forward and backward calls: host tensors of the shapes the plan
// expects for its config (this rank's shard of seqlen / cp tokens), for tests that spoil or fill
// them. cu (packed layouts) is left empty for the test to set.
#pragma once

#include <cstdint>
#include <vector>

#include "common/test_util.h"
#include "ulysses/attention.h"

namespace ulysses::testing {

struct CallFixture {
  PlanConfig cfg;
  HostTensor q, k, v, o, lse, d_o, dq, dk, dv, sinks, dsinks;
  std::vector<std::int32_t> cu;
  explicit CallFixture(PlanConfig c) : cfg(c) {
    const auto& a = c.attention;
    const std::int64_t sl = c.seqlen / c.parallel.cp;
    auto act = [&](int h, int d) {
      return c.layout == Layout::kTHD ? HostTensor(c.dtype, {sl, h, d})
                                      : HostTensor(c.dtype, {c.batch, sl, h, d});
    };
    const int dqk = a.head_dim, dv_ = a.value_dim();
    q = act(a.num_heads_q, dqk);
    k = act(a.num_heads_kv, dqk);
    v = act(a.num_heads_kv, dv_);
    o = act(a.num_heads_q, dv_);
    d_o = act(a.num_heads_q, dv_);
    dq = act(a.num_heads_q, dqk);
    dk = act(a.num_heads_kv, dqk);
    dv = act(a.num_heads_kv, dv_);
    lse = c.layout == Layout::kTHD ? HostTensor(DType::kFloat32, {a.num_heads_q, sl})
                                   : HostTensor(DType::kFloat32, {c.batch, a.num_heads_q, sl});
    sinks = HostTensor(DType::kFloat32, {a.num_heads_q});
    dsinks = sinks;
  }

  // Forward's and backward's arguments over these tensors with `workspace` and `saved`: sinks
  // where the config has them, `cu` as cu_seqlens in layout thd (set it first). Backward's q, k,
  // v and o (read with saved_activations = lse) are left for the test to give.
  ForwardArgs forward_args(void* workspace, void* saved) const {
    ForwardArgs f{.q = q.view,
                  .k = k.view,
                  .v = v.view,
                  .o = o.view,
                  .lse = lse.view,
                  .workspace = workspace,
                  .saved = saved};
    if (cfg.attention.sinks) f.sinks = sinks.view;
    if (cfg.layout == Layout::kTHD) f.cu_seqlens = cu;
    return f;
  }
  BackwardArgs backward_args(void* workspace, void* saved) const {
    BackwardArgs b{.d_o = d_o.view,
                   .dq = dq.view,
                   .dk = dk.view,
                   .dv = dv.view,
                   .workspace = workspace,
                   .saved = saved};
    if (cfg.attention.sinks) {
      b.sinks = sinks.view;
      b.dsinks = dsinks.view;
    }
    if (cfg.layout == Layout::kTHD) b.cu_seqlens = cu;
    return b;
  }
};

}  // namespace ulysses::testing
