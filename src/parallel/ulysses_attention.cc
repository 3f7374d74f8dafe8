// Ulysses attention: sequence-sharded -> head-sharded all-to-all, local attention on the full
// sequence, and back. Forward and backward.
//
// Legend: P = cp ranks, this rank r; B batch; S global tokens, Sl = S / P per shard; D head_dim;
// hq / hkv query / KV heads per rank after the exchange; C = hq + 2 hkv channels of a QKV message
// row. (With head_dim_v != head_dim, V, O, dO and dV heads are Dv wide: a channel is then
// gcd(D, Dv) elements and a head spans D or Dv of them; see the members' comment.)
//
// Forward, on rank r:
//
//   q, k, v [B, Sl, H*, D] (any strides)
//      | pack (one pass; picks each peer's heads, incl. KV replicas when P > Hkv)
//      v
//   send_qkv [p][Sl][B][C][D]     C = | q heads of p | k heads of p | v heads of p |
//      | ONE all-to-all (Q, K and V together)
//      v
//   qkv_full [P*Sl = S][B][C][D]  <- the local kernel reads q, k, v through strides straight from
//   here
//      | local attention (heads q_begin[r] .., full sequence)
//      v
//   o_head [S][B][hq][D], lse_head [S][B][hq]   rows [p*Sl, (p+1)*Sl) are peer p's message: no copy
//      | ONE batched exchange (O and LSE of each peer together)
//      v
//   o_recv [p][Sl][B][hq][D] --unpack--> o [B, Sl, Hq, D];  lse_recv --> lse [B, Hq, Sl]
//
// Backward moves dO in with one all-to-all (the saved qkv_full, o_head and lse_head are reused),
// writes dQ and dK/dV straight into the returning message buffers (grad_q [S][B][hq][D], grad_kv
// [S][B][2 hkv][D]), sends them back in one batched exchange and unpacks; replicated KV heads
// arrive as fp32 partials from each replica and are summed in rank order. Unless the config keeps
// `saved`, grad_q lives where dO was packed (dead once sent) and the returning dQ | dK/dV of a
// chunk land in that chunk's saved Q | K V block (dead once its kernel ran; same bytes per row).
//
// SavedActivations::kLseOnly keeps only lse_head in `saved`. Each head chunk c then goes through
// one slot (c mod chunks_in_flight) of exchange buffers, everything but the kernel on the exchange
// stream (inference runs its forward the same way, the LSE in the slot):
//
//   forward   pack Q|K|V -> send slot ==a2a==> recv slot -> kernel -> o slot (lse -> saved)
//             ==exchange==> send slot -> unpack O (and LSE)
//   backward  pack Q|K|V, O, dO -> send slot ==a2a==> recv slot -> kernel -> dQ|dK dV in send slot
//             ==exchange==> recv slot -> unpack (summing KV replicas)
//
// and chunk c + slots is packed into the slot only after chunk c's results are unpacked from it.
//
// Streams with head chunks (overlap_chunks = K > 1): packs on the caller's stream; each chunk's
// exchanges and unpacks, in chunk order, on side stream 0 (its inbound exchange as soon as it is
// packed, its unpack right after its results return); chunk c's kernel on the caller's stream, or,
// when the kernel's concurrent_calls() asks for it (and chunks do not go through one slot), on the
// caller's stream for even c and side stream 1 for odd c, each with its own kernel workspace. A
// kernel waits for its chunk's "arrived" event and the exchange stream for its "computed" event,
// and the caller's stream waits for the exchange stream at the end, so every stream's work of
// this call precedes what the caller enqueues next. On one H200, two 8-head cuDNN calls of 8k
// tokens on two streams take as long as one 16-head call, one after another +14% (docs/PERF.md).
//
// A rank's own rows (own_in_place_): where the communicator's copy of them to itself is a
// separate copy on the rank's device (copies_own_rows(): the loopback and peer-copy groups), they
// skip the exchanges. The packs write them where they arrive (own_in(): the receive buffer or, fp8,
// the payload's arrival region), the exchange gives them a zero count, the returning exchanges do
// not send them, and the unpacks read them where the kernel wrote them (own_out()). Such a copy
// runs on the SMs, so beside a kernel that fills the GPU it waited for that kernel's tail (one
// H200: a chunk's copy to itself ended with the previous chunk's call; docs/PERF.md). Not with
// replicated KV heads (their gradients are summed over every peer's region in one pass) nor over
// NCCL (its all-to-all takes every rank's slot in one call). Results are bitwise the same.
// With saved heads they also leave the exchanges' critical path (own_apart(); not fp8, and only
// for chunks whose kernel runs on the caller's stream): the exchanges then run on side stream 0
// even with one chunk, the peers' rows are packed first and travel while the caller's stream packs
// the rank's own, and the last chunk's own rows are unpacked on the caller's stream while the
// peers' rows return (2x H200, 32k: the SM work outside the kernels 0.46 -> 0.26 ms per step with
// one chunk, 0.31 -> 0.20 with two; docs/PERF.md "Own rows beside the exchange").
//
// cp = 1 (native rows): nothing travels, so no exchange runs and there are no chunks (K = 1
// whatever overlap_chunks says: there is no exchange to overlap). Rows are packed where they would
// arrive and unpacked from where they were sent (pack_to(), unpack_from()), and where the caller's
// views suit the kernel (kernel_may_use()) the kernel reads and writes them in place: forward of
// kLseOnly and inference reads q, k, v and writes o with no copy at all; backward reads d_o (and,
// kLseOnly, q, k, v, o) and writes dq, dk, dv in place. kHeadSharded still copies Q|K|V and O into
// `saved` (the caller may reuse its inputs once forward returns). Results are bitwise those of the
// copies. Head-sharded Q|K|V rows are then Q rows followed by K|V rows, not one row set (nothing
// arrives as a message), so that Q has O's token stride as cuDNN's packed backward wants
// (qkv_rows()). The caller's workspace then holds only what those calls need (the kernel's
// workspace, dSinks, inference's LSE); a call that must copy rows runs in the plan's own scratch,
// allocated when the first such call comes (with_copy_buffers()).
//
// Uneven heads (head_routing.h: cp < Hkv not dividing it; ranks own different head counts): every
// rank's own rows (what arrives for it, what its kernel reads and writes, what leaves from it) are
// laid out as above for its own heads, so its kernel sees the dense rows of an even split; on the
// far side of each exchange peer p's rows sit in a region of their own, as wide as the busiest
// rank's rows (slot(c)), packed and unpacked one peer at a time. Exactly each peer's bytes travel.
// Head chunks need not be equal either: each rank cuts its own KV heads into K chunks (with K >= 3
// the first and last small, chunk_heads()), so chunk c has rows of its own per rank and per
// peer; chunk c's blocks follow chunk c - 1's, as wide as its widest rows (slot(c), start()).
//
// Payload::kFp8: the inbound messages (Q|K|V, dO) carry fp8 rows instead (pack_heads_fp8 writes
// them from the caller's tensors), and one pass on the exchange stream turns them back into the
// plan's dtype where the kernel reads them (dequantize_fp8) before the chunk's "arrived" event.
// The codes travel in the regions native rows use (see layout_buffers()).
#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "common/check.h"
#include "kernels/layout.h"
#include "kernels/merge.h"
#include "kernels/streams.h"
#include "parallel/head_routing.h"
#include "parallel/plan_common.h"
#include "parallel/plans.h"

namespace ulysses::parallel {

using detail::arg_error;
using detail::str_cat;

namespace {

class UlyssesAttention final : public DistributedAttention {
 public:
  UlyssesAttention(const PlanConfig& config, const PlanConfig& reported, Communicator& comm,
                   LocalAttention& kernel, HeadRouting routing,
                   std::unique_ptr<kernels::StreamSet> streams)
      : config_(config),
        reported_(reported),
        comm_(comm),
        kernel_(kernel),
        routing_(std::move(routing)),
        streams_(std::move(streams)) {
    P_ = config.parallel.cp;
    rank_ = comm.rank();
    B_ = config.batch;
    S_ = config.seqlen;
    Sl_ = S_ / P_;
    Dq_ = config.attention.head_dim;
    Dv_ = config.attention.value_dim();
    U_ = std::gcd(Dq_, Dv_);
    hq_ = routing_.q_heads_of(rank_);
    uneven_ = routing_.uneven();
    fp8_ = config.payload == Payload::kFp8;
    self_ = P_ == 1 && !fp8_;
    // (Replicated KV heads: their gradients are summed over every peer's region in one pass.)
    own_in_place_ = !self_ && comm.copies_own_rows() && !routing_.replicated();
    K_ = self_ ? 1 : config.overlap_chunks;
    qu_ = static_cast<int>(Dq_ / U_);
    build_rows();
    dtype_ = config.dtype;
    kv_grad_dtype_ = routing_.replicated() ? DType::kFloat32 : dtype_;
    has_lse_ = kernel.provides_lse();
    lse_only_ = config.training && config.saved_activations == SavedActivations::kLseOnly;
    slotted_ = lse_only_ || !config.training;
    slots_ = std::min(K_, config.chunks_in_flight);
    problem_ = local_problem(config, routing_, rank_);
    build_chunk_maps();
    layout_buffers();
  }

  static LocalProblem local_problem(const PlanConfig& c, const HeadRouting& r, int rank) {
    LocalProblem p;
    p.config = c.attention;
    p.dtype = c.dtype;
    p.batch = c.batch;
    p.seqlen = c.seqlen;
    p.varlen = c.layout == Layout::kTHD;
    p.head_offset_q = r.q_begin[static_cast<std::size_t>(rank)];
    p.num_heads_q_local = r.q_heads_of(rank);
    p.head_offset_kv = r.kv_begin[static_cast<std::size_t>(rank)];
    p.num_heads_kv_local = r.kv_heads_of(rank);
    p.grad_kv_dtype = r.replicated() ? DType::kFloat32 : c.dtype;
    p.backward = c.training;
    return p;
  }

  // Per chunk and token, the rows of a rank that owns `q` query and `kv` KV heads: channels of a
  // Q|K|V row (K from k_channel, V from v_channel), an O or dO row, a dQ row and a dK|dV row (dV
  // from dv_channel). `none` is 0: the first channel, for member pointers.
  struct Rows {
    int q = 0, kv = 0;
    int qkv = 0, o = 0, dq = 0, gkv = 0;
    int k_channel = 0, v_channel = 0, dv_channel = 0;
    int none = 0;
  };
  // Bytes of a chunk's block of each kind of buffer: Q|K|V, O (and dO), dQ, LSE and dK|dV rows of
  // every token; a Q|K|V and a dO message in the inbound payload; a block of send_dO (dO, or the
  // dQ that comes back into it).
  struct Blocks {
    std::size_t qkv = 0, o = 0, q = 0, lse = 0, gkv = 0, qkv_in = 0, do_in = 0, do_stride = 0;
  };
  Rows rows_of(int q, int kv) const {
    const int vu = static_cast<int>(Dv_ / U_);  // channels of a V or O head
    Rows r;
    r.q = q;
    r.kv = kv;
    r.qkv = (q + kv) * qu_ + kv * vu;
    r.o = q * vu;
    r.dq = q * qu_;
    r.gkv = kv * (qu_ + vu);
    r.k_channel = q * qu_;
    r.v_channel = (q + kv) * qu_;
    r.dv_channel = kv * qu_;
    return r;
  }

  const PlanConfig& config() const override { return reported_; }
  std::size_t workspace_bytes() const override { return workspace_bytes_; }
  std::size_t saved_bytes() const override { return saved_bytes_; }
  std::size_t held_bytes() const override { return streams_->scratch_bytes(); }
  Status release_held(Stream stream) override { return streams_->release_scratch(stream); }

  Status forward(const ForwardArgs& a, Stream stream) override {
    ULYSSES_RETURN_IF_ERROR(checks().forward(a));
    // (cp = 1: head-sharded saves copy the rows into `saved` whatever the views, which needs the
    // kernel's workspace only.)
    if (!slotted_) return forward_saving_heads(a, stream);
    if (direct_forward(a)) return forward_in_place(a, stream);
    ULYSSES_ASSIGN_OR_RETURN(const ForwardArgs copying, with_copy_buffers(a, stream));
    return forward_in_slots(copying, stream);
  }

  Status backward(const BackwardArgs& a, Stream stream) override {
    ULYSSES_RETURN_IF_ERROR(checks().backward(a));
    if (!lse_only_ && !config_.backward_keeps_saved) ULYSSES_RETURN_IF_ERROR(consume(a.saved));
    if (direct_backward(a)) return backward_in_place(a, stream);
    ULYSSES_ASSIGN_OR_RETURN(const BackwardArgs copying, with_copy_buffers(a, stream));
    return lse_only_ ? backward_in_slots(copying, stream) : backward_saved_heads(copying, stream);
  }

 private:
  // --- head-sharded saves: Q|K|V, O and the LSE stay in `saved` from forward to backward -------

  Status forward_saving_heads(const ForwardArgs& a, Stream stream) {
    if (!config_.backward_keeps_saved) std::erase(consumed_, a.saved);  // filled again
    char* qkv_full = at(a.saved, qkv_full_);
    char* o_head = at(a.saved, o_head_);
    char* lse_head = has_lse_ ? at(a.saved, lse_head_) : nullptr;
    char* send_qkv = at(a.workspace, send_qkv_);
    char* wire_qkv = send_qkv + start(K_).qkv_in;  // fp8: where the codes arrive
    char* o_recv = at(a.workspace, o_recv_);
    char* lse_recv = at(a.workspace, lse_recv_);
    auto lse_of = [&](char* base, int c) { return has_lse_ ? base + start(c).lse : nullptr; };
    const Stream side = exchange_stream(stream);
    const bool two = two_compute_streams();

    // Chunk c's all-to-all on the exchange stream, once its rows are packed.
    auto send_chunk = [&](int c) -> Status {
      ULYSSES_RETURN_IF_ERROR(after_packed(c, stream, side));
      ULYSSES_RETURN_IF_ERROR(exchange_in(c, send_qkv + start(c).qkv_in, wire_qkv + start(c).qkv_in,
                                          qkv_full + start(c).qkv, &Rows::qkv, side));
      return streams_->record(kEvChunk + c, side);
    };
    // 1. Per chunk: pack Q, K, V (one message buffer per chunk) on the caller's stream, then
    // 2. the chunk's all-to-all on the exchange stream, as soon as it is packed (in chunk order):
    //    chunk 0's peers' rows first, then the rest of every chunk's rows while they travel
    //    (pack_chunks()), and each later chunk travels while the one before it computes. The
    //    later chunks' exchanges are issued once the first chunk's kernel is (first_kernel_then()).
    ULYSSES_RETURN_IF_ERROR(pack_chunks(
        two, stream, side,
        [&](int c, Part part) {
          char* send = pack_to(send_qkv + start(c).qkv_in, qkv_full + start(c).qkv);
          char* own = own_in(c, wire_qkv + start(c).qkv_in, qkv_full + start(c).qkv, &Rows::qkv);
          return pack_qkv(c, a.q, a.k, a.v, send, stream, own, part);
        },
        send_chunk));
    // 3. Per chunk: local attention reading the receive buffer in place, then O (and LSE) back to
    //    the sequence owners and into the caller's tensors on the exchange stream while the next
    //    chunk computes (the last chunk's own rows apart: on the caller's stream, beside the
    //    exchange, not after it).
    //    Consecutive chunks' kernels alternate between two streams when the kernel allows it.
    for (int c = 0; c < K_; ++c) {
      const Stream cs = compute_stream(c, two, stream);
      ULYSSES_RETURN_IF_ERROR(streams_->wait(cs, kEvChunk + c));
      ULYSSES_RETURN_IF_ERROR(
          run_forward(c, head_rows(c, qkv_full + start(c).qkv, o_head + start(c).o),
                      lse_of(lse_head, c), a, cs));
      ULYSSES_RETURN_IF_ERROR(first_kernel_then(c, K_, send_chunk));
      ULYSSES_RETURN_IF_ERROR(hand_over(cs, side, ev_computed(c)));
      ULYSSES_RETURN_IF_ERROR(return_outputs(c, o_head + start(c).o, lse_of(lse_head, c),
                                             o_recv + start(c).o, lse_of(lse_recv, c), side));
      char* o_in = unpack_from(o_head + start(c).o, o_recv + start(c).o);
      char* lse_in = unpack_from(lse_of(lse_head, c), lse_of(lse_recv, c));
      ULYSSES_RETURN_IF_ERROR(unpack_chunk(c, two, stream, side, [&](Stream on, Part part) {
        return unpack_outputs(c, o_in, lse_in, a, on, o_head + start(c).o, lse_of(lse_head, c),
                              part);
      }));
    }
    // 4. The caller's stream waits for the last unpack.
    return hand_over(side, stream, kEvDone);
  }

  // Refuses a `saved` that an earlier backward() consumed; else remembers it as consumed now.
  Status consume(const void* saved) {
    if (std::find(consumed_.begin(), consumed_.end(), saved) != consumed_.end()) {
      return arg_error(kBackwardApi, "saved",
                       "was consumed by an earlier backward() (PlanConfig::backward_keeps_saved "
                       "is false)",
                       saved, "the buffer of a forward() run since then");
    }
    if (consumed_.size() == kConsumedMemory) consumed_.erase(consumed_.begin());
    consumed_.push_back(saved);
    return Status::ok();
  }

  Status backward_saved_heads(const BackwardArgs& a, Stream stream) {
    char* qkv_full = at(a.saved, qkv_full_);
    char* o_head = at(a.saved, o_head_);
    char* lse_head = has_lse_ ? at(a.saved, lse_head_) : nullptr;
    // Chunk c's dO leaves from its block of send_do (fp8: as codes, which fit) and arrives in
    // do_head (fp8: through wire_do).
    char* send_do = at(a.workspace, send_do_);
    char* wire_do = at(a.workspace, wire_do_);
    char* do_head = at(a.workspace, do_head_);
    char* grad_q = at(a.workspace, grad_q_);
    char* grad_kv = at(a.workspace, grad_kv_);
    // Chunk c's returning dQ and dK/dV: in the workspace, or in chunk c's saved Q/K/V block.
    auto dq_recv = [&](int c) {
      return grads_into_saved_ ? qkv_full + start(c).qkv : at(a.workspace, dq_recv_) + start(c).q;
    };
    auto dkv_recv = [&](int c) {
      return grads_into_saved_ ? qkv_full + start(c).qkv + block(c).q
                               : at(a.workspace, dkv_recv_) + start(c).gkv;
    };
    float* dsinks_local = dsinks_of(a.workspace);
    ULYSSES_RETURN_IF_ERROR(zero_dsinks(dsinks_local, stream));
    const Stream side = exchange_stream(stream);
    const bool two = two_compute_streams();

    // 1. dO to the head owners, chunk by chunk: packed on the caller's stream (chunk 0's peers'
    //    rows first, the rest while they travel: pack_chunks()), sent on the exchange stream as
    //    soon as it is packed. (The later chunks' exchanges are issued once the first chunk's
    //    kernel is.)
    const TensorView d_o = as_bshd(a.d_o, config_.layout);
    auto send_chunk = [&](int c) -> Status {
      ULYSSES_RETURN_IF_ERROR(after_packed(c, stream, side));
      ULYSSES_RETURN_IF_ERROR(exchange_in(c, send_do + start(c).do_stride, wire_do + start(c).do_in,
                                          do_head + start(c).o, &Rows::o, side));
      return streams_->record(kEvChunk + c, side);
    };
    ULYSSES_RETURN_IF_ERROR(pack_chunks(
        two, stream, side,
        [&](int c, Part part) {
          const std::vector<int>& q_begin = q_begin_[static_cast<std::size_t>(c)];
          char* send = pack_to(send_do + start(c).do_stride, do_head + start(c).o);
          char* own = own_in(c, wire_do + start(c).do_in, do_head + start(c).o, &Rows::o);
          return batched<true>(stream, [&] {
            return pack_in(c, d_o, q_begin, &Rows::q, send, &Rows::o, &Rows::none, stream, own,
                           part);
          });
        },
        send_chunk));
    // 2. Per chunk: local backward (dQ, dK, dV land in the returning message buffers), then send
    //    them back and unpack them (summing KV replicas) on the exchange stream while the next
    //    chunk computes (the last chunk's own rows apart: on the caller's stream, beside the
    //    exchange).
    for (int c = 0; c < K_; ++c) {
      const Stream cs = compute_stream(c, two, stream);
      ULYSSES_RETURN_IF_ERROR(streams_->wait(cs, kEvChunk + c));
      // (Into send_dO's block c, which later chunks' dO exchanges do not read, or a region of its
      // own.)
      char* gq = grad_q + (grads_into_saved_ ? start(c).do_stride : start(c).q);
      char* gkv = grad_kv + start(c).gkv;
      ULYSSES_RETURN_IF_ERROR(run_backward(
          c,
          head_rows(c, qkv_full + start(c).qkv, o_head + start(c).o, do_head + start(c).o, gq, gkv),
          has_lse_ ? lse_head + start(c).lse : nullptr, a, dsinks_local, cs));
      ULYSSES_RETURN_IF_ERROR(first_kernel_then(c, K_, send_chunk));
      ULYSSES_RETURN_IF_ERROR(hand_over(cs, side, ev_computed(c)));
      ULYSSES_RETURN_IF_ERROR(return_grads(c, gq, gkv, dq_recv(c), dkv_recv(c), side));
      char* dq_in = unpack_from(gq, dq_recv(c));
      char* dkv_in = unpack_from(gkv, dkv_recv(c));
      ULYSSES_RETURN_IF_ERROR(unpack_chunk(c, two, stream, side, [&](Stream on, Part part) {
        return unpack_grads(c, dq_in, dkv_in, a, on, gq, gkv, part);
      }));
    }
    // 3. The caller's stream waits for the last unpack.
    ULYSSES_RETURN_IF_ERROR(hand_over(side, stream, kEvDone));
    // 4. dSinks: each rank has the complete gradient of its own heads; gather them everywhere.
    return gather_dsinks(dsinks_local, a.dsinks, stream);
  }

  // --- kLseOnly and inference: one slot of exchange buffers per chunk in flight ---------------

  // Chunk c's LSE as the kernel writes it: kept in `saved` for backward (kLseOnly), or in its slot
  // (inference). Null when the kernel provides none.
  char* slot_lse(const ForwardArgs& a, int c) const {
    if (!has_lse_) return nullptr;
    return lse_only_ ? at(a.saved, lse_head_) + start(c).lse
                     : at(a.workspace, fwd_lse_[slot_of(c)]);
  }

  Status forward_in_slots(const ForwardArgs& a, Stream stream) {
    const Stream side = exchange_stream(stream);
    auto lse_head = [&](int c) { return slot_lse(a, c); };
    // Chunk c's Q, K, V to the head owners, into its slot (on the exchange stream).
    auto send_inputs = [&](int c) -> Status {
      const std::size_t s = slot_of(c);
      char* send = at(a.workspace, fwd_send_[s]);
      char* recv = at(a.workspace, fwd_recv_[s]);
      char* wire = send + align_up(slot_blocks_[s].qkv_in);
      ULYSSES_RETURN_IF_ERROR(
          pack_qkv(c, a.q, a.k, a.v, pack_to(send, recv), side, own_in(c, wire, recv, &Rows::qkv)));
      ULYSSES_RETURN_IF_ERROR(exchange_in(c, send, wire, recv, &Rows::qkv, side));
      return streams_->record(kEvChunk + c, side);
    };
    // Chunk 0's inputs first; the other slots' chunks once its kernel is issued.
    ULYSSES_RETURN_IF_ERROR(hand_over(stream, side, kEvPacked));
    ULYSSES_RETURN_IF_ERROR(send_inputs(0));
    const bool two = two_compute_streams();
    for (int c = 0; c < K_; ++c) {
      const std::size_t s = slot_of(c);
      char* o_head = at(a.workspace, fwd_o_[s]);
      char* o_recv = at(a.workspace, fwd_send_[s]);  // the packed Q/K/V are dead once sent
      char* lse_recv = has_lse_ ? o_recv + align_up(slot_blocks_[s].o) : nullptr;
      const Stream cs = compute_stream(c, two, stream);
      ULYSSES_RETURN_IF_ERROR(streams_->wait(cs, kEvChunk + c));
      ULYSSES_RETURN_IF_ERROR(
          run_forward(c, head_rows(c, at(a.workspace, fwd_recv_[s]), o_head), lse_head(c), a, cs));
      ULYSSES_RETURN_IF_ERROR(first_kernel_then(c, slots_, send_inputs));
      ULYSSES_RETURN_IF_ERROR(hand_over(cs, side, ev_computed(c)));
      ULYSSES_RETURN_IF_ERROR(return_outputs(c, o_head, lse_head(c), o_recv, lse_recv, side));
      ULYSSES_RETURN_IF_ERROR(unpack_outputs(c, unpack_from(o_head, o_recv),
                                             unpack_from(lse_head(c), lse_recv), a, side, o_head,
                                             lse_head(c)));
      if (c + slots_ < K_) ULYSSES_RETURN_IF_ERROR(send_inputs(c + slots_));
    }
    return hand_over(side, stream, kEvDone);
  }

  Status backward_in_slots(const BackwardArgs& a, Stream stream) {
    const Stream side = exchange_stream(stream);
    char* lse_head = has_lse_ ? at(a.saved, lse_head_) : nullptr;
    float* dsinks_local = dsinks_of(a.workspace);
    ULYSSES_RETURN_IF_ERROR(zero_dsinks(dsinks_local, stream));
    // Where each kind of rows sits in slot s's buffers (see SlotOffsets).
    const std::array<SlotOffsets, 2> offsets{slot_offsets(0), slot_offsets(1)};
    // Chunk c's Q, K, V, O and dO to the head owners in one grouped exchange, into its slot.
    auto send_inputs = [&](int c) -> Status {
      const std::size_t s = slot_of(c);
      const SlotOffsets& off = offsets[s];
      char* recv = at(a.workspace, bwd_recv_[s]);
      // (Native rows leave from the offsets where they arrive: cp = 1 packs them there.)
      char* send = pack_to(at(a.workspace, bwd_send_[s]), recv);
      char* arrive_at = fp8_ ? send + off.wire : recv;
      const std::vector<int>& q_begin = q_begin_[static_cast<std::size_t>(c)];
      const Layout l = config_.layout;
      const Rows& m = mine(c);
      // This rank's own rows where they arrive (own_in_place_), at its offsets below; O is not
      // in the inbound payload, so its rows are the plan's dtype (as where they leave from).
      char* own_qkv = own_in(c, send + off.wire, recv, &Rows::qkv);
      char* own_o = own_out(c, recv + off.o, &Rows::o, dtype_);
      char* own_do = own_in(c, send + off.wire + off.wire_do, recv + off.wire_do, &Rows::o);
      ULYSSES_RETURN_IF_ERROR(pack_qkv(c, a.q, a.k, a.v, send, side, own_qkv));
      const Status packed = batched<true>(side, [&]() -> Status {
        ULYSSES_RETURN_IF_ERROR(move_peers<true>(c, as_bshd(a.o, l), q_begin, &Rows::q,
                                                 send + off.send_o, dtype_, U_, &Rows::o,
                                                 &Rows::none, side, own_o));
        return pack_in(c, as_bshd(a.d_o, l), q_begin, &Rows::q, send + off.send_do, &Rows::o,
                       &Rows::none, side, own_do);
      });
      ULYSSES_RETURN_IF_ERROR(packed);
      if (!self_) {
        // Peer p's regions of the send slot are the chunk's region width apart; what arrives is
        // this rank's rows from every peer, one after another.
        const Rows& wide = slot(c);
        const std::size_t s_qkv = in_peer_bytes(wide.qkv), s_do = in_peer_bytes(wide.o),
                          s_o = peer_bytes(wide.o, dtype_, -1);
        const std::size_t r_qkv = in_peer_bytes(m.qkv), r_do = in_peer_bytes(m.o),
                          r_o = peer_bytes(m.o, dtype_, -1);
        ULYSSES_RETURN_IF_ERROR(comm_.group_start());
        for (int p = 0; p < P_; ++p) {
          if (!travels(p)) continue;
          const Rows& to = peer(c, p);
          const auto i = static_cast<std::size_t>(p);
          ULYSSES_RETURN_IF_ERROR(comm_.send(send + i * s_qkv, in_peer_bytes(to.qkv), p, side));
          ULYSSES_RETURN_IF_ERROR(
              comm_.send(send + off.send_o + i * s_o, peer_bytes(to.o, dtype_, -1), p, side));
          ULYSSES_RETURN_IF_ERROR(
              comm_.send(send + off.send_do + i * s_do, in_peer_bytes(to.o), p, side));
          ULYSSES_RETURN_IF_ERROR(comm_.recv(arrive_at + i * r_qkv, r_qkv, p, side));
          ULYSSES_RETURN_IF_ERROR(comm_.recv(recv + off.o + i * r_o, r_o, p, side));
          ULYSSES_RETURN_IF_ERROR(comm_.recv(arrive_at + off.wire_do + i * r_do, r_do, p, side));
        }
        ULYSSES_RETURN_IF_ERROR(comm_.group_end());
      }
      ULYSSES_RETURN_IF_ERROR(arrive(arrive_at, recv, m.qkv, side));
      ULYSSES_RETURN_IF_ERROR(arrive(arrive_at + off.wire_do, recv + off.d_o, m.o, side));
      return streams_->record(kEvChunk + c, side);
    };
    // Chunk 0's inputs first; the other slots' chunks once its kernel is issued.
    ULYSSES_RETURN_IF_ERROR(hand_over(stream, side, kEvPacked));
    ULYSSES_RETURN_IF_ERROR(send_inputs(0));
    const bool two = two_compute_streams();
    for (int c = 0; c < K_; ++c) {
      const std::size_t s = slot_of(c);
      const SlotOffsets& off = offsets[s];
      char* in = at(a.workspace, bwd_recv_[s]);
      char* gq = at(a.workspace, bwd_send_[s]);  // the packed inputs are dead once sent
      char* gkv = gq + off.dkv;
      const Stream cs = compute_stream(c, two, stream);
      ULYSSES_RETURN_IF_ERROR(streams_->wait(cs, kEvChunk + c));
      ULYSSES_RETURN_IF_ERROR(run_backward(c, head_rows(c, in, in + off.o, in + off.d_o, gq, gkv),
                                           has_lse_ ? lse_head + start(c).lse : nullptr, a,
                                           dsinks_local, cs));
      ULYSSES_RETURN_IF_ERROR(first_kernel_then(c, slots_, send_inputs));
      ULYSSES_RETURN_IF_ERROR(hand_over(cs, side, ev_computed(c)));
      // The gradients come back into the receive slot (the kernel has read it).
      ULYSSES_RETURN_IF_ERROR(return_grads(c, gq, gkv, in, in + off.dkv, side));
      ULYSSES_RETURN_IF_ERROR(
          unpack_grads(c, unpack_from(gq, in), unpack_from(gkv, in + off.dkv), a, side, gq, gkv));
      if (c + slots_ < K_) ULYSSES_RETURN_IF_ERROR(send_inputs(c + slots_));
    }
    ULYSSES_RETURN_IF_ERROR(hand_over(side, stream, kEvDone));
    return gather_dsinks(dsinks_local, a.dsinks, stream);
  }

  // Backward's offsets in slot s's buffers, from its blocks (slot_blocks_[s]). The receive slot
  // holds the inputs as the kernel reads them: Q|K|V rows, then O rows (at `o`), then dO rows (at
  // `d_o`; O, dO and dQ share one token stride, which cuDNN's packed-batch backward needs). The
  // kernel writes dQ, then dK|dV (at `dkv`), into the send slot, and they come back into the
  // receive slot at the same offsets. As they travel, Q|K|V and dO rows are in the inbound payload
  // (fp8: smaller), O in the plan's dtype: the sent rows at 0, `send_o` and `send_do` of the send
  // slot; Q|K|V and dO arrive at wire offsets 0 and `wire_do` (fp8: at `wire` of the send slot,
  // behind the sent codes, turned back into the receive slot before the kernel writes gradients
  // there; native: in place).
  struct SlotOffsets {
    std::size_t o, d_o, dkv, send_o, send_do, wire, wire_do;
  };
  SlotOffsets slot_offsets(std::size_t s) const {
    const Blocks& b = slot_blocks_[s];
    SlotOffsets off;
    off.o = align_up(b.qkv);
    off.d_o = off.o + align_up(b.o);
    off.dkv = align_up(b.q);
    off.send_o = align_up(b.qkv_in);
    off.send_do = off.send_o + align_up(b.o);
    off.wire = align_up(off.send_do + b.do_in);
    off.wire_do = fp8_ ? align_up(b.qkv_in) : off.d_o;
    return off;
  }

  // --- one chunk's steps, shared by both buffer schemes ---------------------------------------

  // Which rows a pack or unpack moves: every peer's; all but this rank's own where those have a
  // place of their own (own_in(), own_out()); or only those (nothing where they have none).
  enum class Part { kAll, kPeers, kOwn };

  // Chunk c's Q, K, V heads for every peer into the [p][Sl][B][Cc][D] message at `send` (in the
  // inbound payload: fp8 rows with Payload::kFp8); cp = 1: Q rows, then K|V rows (qkv_rows()).
  Status pack_qkv(int c, const TensorView& q, const TensorView& k, const TensorView& v, char* send,
                  Stream stream, char* own = nullptr, Part part = Part::kAll) {
    const std::vector<int>& q_begin = q_begin_[static_cast<std::size_t>(c)];
    const std::vector<int>& kv_begin = kv_begin_[static_cast<std::size_t>(c)];
    const Layout l = config_.layout;
    return batched<true>(stream, [&]() -> Status {
      if (self_) {  // Q rows, then K|V rows (qkv_rows())
        ULYSSES_RETURN_IF_ERROR(
            pack_in(c, as_bshd(q, l), q_begin, &Rows::q, send, &Rows::dq, &Rows::none, stream));
        char* kv = send + q_block_;
        ULYSSES_RETURN_IF_ERROR(
            pack_in(c, as_bshd(k, l), kv_begin, &Rows::kv, kv, &Rows::gkv, &Rows::none, stream));
        return pack_in(c, as_bshd(v, l), kv_begin, &Rows::kv, kv, &Rows::gkv, &Rows::dv_channel,
                       stream);
      }
      ULYSSES_RETURN_IF_ERROR(pack_in(c, as_bshd(q, l), q_begin, &Rows::q, send, &Rows::qkv,
                                      &Rows::none, stream, own, part));
      ULYSSES_RETURN_IF_ERROR(pack_in(c, as_bshd(k, l), kv_begin, &Rows::kv, send, &Rows::qkv,
                                      &Rows::k_channel, stream, own, part));
      return pack_in(c, as_bshd(v, l), kv_begin, &Rows::kv, send, &Rows::qkv, &Rows::v_channel,
                     stream, own, part);
    });
  }

  // Where a chunk's Q and K|V rows sit in its Q|K|V block (qkv_block_ bytes at `block`). cp > 1:
  // one row set [S][B][Cc channels], Q's heads first, as peers' messages arrive whole. cp = 1,
  // where nothing travels: Q rows [S][B][qc][Dq], then K|V rows [S][B][kc Dq + kc Dv], so that Q
  // has O's token stride when the head dims agree (cuDNN's packed backward needs one for both,
  // else its backend stages Q).
  struct QkvRows {
    char* q;
    int q_channels;
    char* kv;
    int kv_channels, k_channel, v_channel;  // K's and V's first channels in the K|V rows
  };
  QkvRows qkv_rows(int c, char* block) const {
    const Rows& m = mine(c);
    if (self_) return {block, m.dq, block + q_block_, m.gkv, 0, m.dv_channel};
    return {block, m.qkv, block, m.qkv, m.k_channel, m.v_channel};
  }

  // --- the inbound payload: rows in the plan's dtype, or FP8 rows turned back on arrival -----

  kernels::Fp8MessageLayout fp8_msg(void* base, int channels) const {
    return {base, P_, Sl_, B_, channels, U_};  // rows of U_ values, a head spans several
  }
  // Bytes of one peer's inbound message with `channels` rows per token.
  std::size_t in_peer_bytes(int channels) const {
    return fp8_ ? fp8_msg(nullptr, channels).peer_bytes() : peer_bytes(channels, dtype_, -1);
  }

  // Chunk c: peer p's heads (`heads` of peer(c, p)) of `act` into peer p's region of the inbound
  // message at `send` (in the inbound payload), rows `ch` channels wide from channel `c0` on (see
  // move_peers()); this rank's own rows at `own` instead when it is given (own_in()).
  Status pack_in(int c, const TensorView& act, const std::vector<int>& head_begin, int Rows::*heads,
                 char* send, int Rows::*ch, int Rows::*c0, Stream stream, char* own = nullptr,
                 Part part = Part::kAll) {
    if (!fp8_) {
      return move_peers<true>(c, act, head_begin, heads, send, dtype_, U_, ch, c0, stream, own,
                              part);
    }
    const Rows& wide = slot(c);
    const std::size_t region = fp8_msg(nullptr, wide.*ch).peer_bytes();
    if (!uneven_) {
      for (const auto& [first, count] : peer_runs(own != nullptr, part)) {
        kernels::Fp8MessageLayout m = fp8_msg(region_of(first, send, region, own), wide.*ch);
        m.peers = count;
        ULYSSES_RETURN_IF_ERROR(kernels::pack_heads_fp8(
            act, {&head_begin[static_cast<std::size_t>(first)], static_cast<std::size_t>(count)},
            wide.*heads, m, wide.*c0, stream));
      }
      return Status::ok();
    }
    for (int p = 0; p < P_; ++p) {
      if (!wanted(p, own != nullptr, part)) continue;
      const Rows& r = peer(c, p);
      const auto i = static_cast<std::size_t>(p);
      kernels::Fp8MessageLayout one = fp8_msg(region_of(p, send, region, own), r.*ch);
      one.peers = 1;
      ULYSSES_RETURN_IF_ERROR(
          kernels::pack_heads_fp8(act, {&head_begin[i], 1}, r.*heads, one, r.*c0, stream));
    }
    return Status::ok();
  }

  // Whether peer p's rows go through the exchanges: all but this rank's own when own_in_place_
  // (packed where they arrive, unpacked from where the kernel wrote them).
  bool travels(int p) const { return !(own_in_place_ && p == rank_); }
  // Where this rank's own rows of chunk c's inbound message (`ch` channels) arrive: in `dst`, or
  // in the payload at `wire` (fp8), at its offset of exchange_in(); null unless own_in_place_ (the
  // packs then write them there and the exchange leaves them out).
  char* own_in(int c, char* wire, char* dst, int Rows::*ch) const {
    if (!own_in_place_) return nullptr;
    return (fp8_ ? wire : dst) + static_cast<std::size_t>(rank_) * in_peer_bytes(mine(c).*ch);
  }
  // This rank's region of `buf` in rows of its own width and `dtype`: where its own rows of a
  // returning exchange leave from (send_rows()) or, not in the inbound payload, arrive; null
  // unless own_in_place_.
  char* own_out(int c, const char* buf, int Rows::*ch, DType dtype, std::int64_t width = -1) const {
    if (!own_in_place_ || buf == nullptr) return nullptr;
    return const_cast<char*>(buf) +
           static_cast<std::size_t>(rank_) * peer_bytes(mine(c).*ch, dtype, width);
  }

  // Runs body(), whose move_peers() calls on `stream` (packs if kPack, else unpacks) are deferred
  // and then issued together in as few launches as they allow (kernels::move_heads()): at 8k
  // tokens one head chunk's Q, K and V each move in a few microseconds, about what a launch of
  // its own costs on the GPU, and they sit on the step's critical path (docs/PERF.md). Whatever
  // else body() launches goes out at once, so it must not touch what the moves read or write.
  // Inside another batch, body()'s moves join that one.
  template <bool kPack, typename Body>
  Status batched(Stream stream, Body&& body) {
    if (batching_) return body();  // (move_peers() refuses moves of the other kind or stream)
    batch_.clear();
    batching_ = true;
    batch_packs_ = kPack;
    batch_stream_ = stream;
    const Status status = body();
    batching_ = false;
    ULYSSES_RETURN_IF_ERROR(status);
    return kernels::move_heads(kPack, batch_, stream);
  }

  // Chunk c's rows of a message on the far side of an exchange (packed to send in, or returned):
  // peer p's rows, Sl x B x (peer(c, p).*ch) channels of `width` elements of `dtype`, start at p
  // times a region's bytes (slot(c).*ch channels), and hold its `heads` of `act` from channel
  // peer(c, p).*c0 on. kPack: act into the message (pack_heads), else back (unpack_heads). One
  // call over every peer when the heads split evenly, else one per peer.
  template <bool kPack>
  Status move_peers(int c, const TensorView& act, const std::vector<int>& head_begin,
                    int Rows::*heads, char* base, DType dtype, std::int64_t width, int Rows::*ch,
                    int Rows::*c0, Stream stream, char* own = nullptr, Part part = Part::kAll) {
    auto one_call = [&](const kernels::MessageLayout& m, std::span<const int> begin, int h,
                        int c_begin) -> Status {
      if (batching_) {
        if (kPack != batch_packs_ || stream != batch_stream_) {
          return internal_error("ulysses: a batch mixes packs and unpacks, or streams");
        }
        batch_.push_back({act, begin, h, m, c_begin});
        return Status::ok();
      }
      return kPack ? kernels::pack_heads(act, begin, h, m, c_begin, stream)
                   : kernels::unpack_heads(m, c_begin, begin, h, act, stream);
    };
    const Rows& wide = slot(c);
    const std::size_t region = peer_bytes(wide.*ch, dtype, width);
    if (!uneven_) {
      // One call over the peers, or (own rows at `own`) one over those before this rank, one for
      // its own rows and one over those after it.
      for (const auto& [first, count] : peer_runs(own != nullptr, part)) {
        char* at = region_of(first, base, region, own);
        ULYSSES_RETURN_IF_ERROR(one_call(
            {at, dtype, count, Sl_, B_, wide.*ch, width},
            {&head_begin[static_cast<std::size_t>(first)], static_cast<std::size_t>(count)},
            wide.*heads, wide.*c0));
      }
      return Status::ok();
    }
    for (int p = 0; p < P_; ++p) {
      if (!wanted(p, own != nullptr, part)) continue;
      const Rows& r = peer(c, p);
      const auto i = static_cast<std::size_t>(p);
      char* at = region_of(p, base, region, own);
      ULYSSES_RETURN_IF_ERROR(
          one_call({at, dtype, 1, Sl_, B_, r.*ch, width}, {&head_begin[i], 1}, r.*heads, r.*c0));
    }
    return Status::ok();
  }
  // Peer p's region of a message at `base` (`region` bytes each), or `own` for this rank's own
  // rows where they are given (own_in(), own_out()).
  char* region_of(int p, char* base, std::size_t region, char* own) const {
    return p == rank_ && own != nullptr ? own : base + static_cast<std::size_t>(p) * region;
  }
  // Runs of peers (first, count) that one pack or unpack call covers: every peer, or (split) the
  // peers before this rank, this rank alone and the peers after it (empty runs left out); of
  // those, the ones `part` asks for (wanted()).
  struct PeerRuns {
    std::array<std::pair<int, int>, 3> run{};
    int n = 0;
    const std::pair<int, int>* begin() const { return run.data(); }
    const std::pair<int, int>* end() const { return run.data() + n; }
  };
  PeerRuns peer_runs(bool split, Part part = Part::kAll) const {
    PeerRuns r;
    auto add = [&](int first, int count) {
      if (count > 0 && wanted(first, split, part)) r.run[r.n++] = {first, count};
    };
    if (!split) {
      add(0, P_);
      return r;
    }
    add(0, rank_);
    add(rank_, 1);
    add(rank_ + 1, P_ - rank_ - 1);
    return r;
  }
  // Whether a pack or unpack of `part` moves peer p's rows (a run's first peer: the rank's own
  // run is itself alone). `split`: this rank's own rows have a place of their own (own_in(),
  // own_out()); else every run is the peers'.
  bool wanted(int p, bool split, Part part) const {
    if (part == Part::kAll) return true;
    const bool own = split && p == rank_;
    return part == Part::kOwn ? own : !own;
  }
  // Whether chunk c's own rows are packed and (last chunk) unpacked apart from the peers' rows,
  // on the caller's stream while the peers' rows travel: where they skip the exchanges
  // (own_in_place_), the chunk's kernel runs on the caller's stream (so it follows them), and not
  // with fp8 payloads (own codes are turned back with the arrivals, in exchange_in()'s pass).
  bool own_apart(int c, bool two, Stream stream) const {
    return own_in_place_ && !fp8_ && compute_stream(c, two, stream) == stream;
  }

  // FP8: the rows that arrived at `wire` into `dst` in the plan's dtype. Native rows arrive in
  // `dst` itself: nothing to do.
  Status arrive(char* wire, char* dst, int channels, Stream stream) {
    if (!fp8_) return Status::ok();
    return kernels::dequantize_fp8(
        fp8_msg(wire, channels), {dst, dtype_, P_, Sl_, B_, channels, U_}, comm_.device(), stream);
  }

  // Chunk c's inbound all-to-all: `send` ==> `dst` rows (fp8: through `wire`). Peer p's rows leave
  // from its region of `send` (peer(c, p).*ch channels, regions slot(c).*ch wide) and this rank's
  // (mine(c).*ch channels) arrive one peer after another. Nothing when nothing travels (cp = 1:
  // the rows were packed into `dst`).
  Status exchange_in(int c, const char* send, char* wire, char* dst, int Rows::*ch, Stream stream) {
    if (self_) return Status::ok();
    const int own = mine(c).*ch;
    const std::size_t region = in_peer_bytes(slot(c).*ch), arriving = in_peer_bytes(own);
    for (int p = 0; p < P_; ++p) {
      const auto i = static_cast<std::size_t>(p);
      send_counts_[i] = travels(p) ? in_peer_bytes(peer(c, p).*ch) : 0;
      send_offsets_[i] = i * region;
      recv_counts_[i] = travels(p) ? arriving : 0;
      recv_offsets_[i] = i * arriving;
    }
    ULYSSES_RETURN_IF_ERROR(comm_.all_to_all_v(send, send_counts_, send_offsets_, fp8_ ? wire : dst,
                                               recv_counts_, recv_offsets_, stream));
    return arrive(wire, dst, own, stream);
  }

  // cp = 1: where rows bound for the peers are packed (where they would arrive, not their send
  // buffer), and where returned rows are unpacked from (where they would leave, not their receive
  // buffer).
  char* pack_to(char* send, char* recv) const { return self_ ? recv : send; }
  char* unpack_from(char* sent, char* recv) const { return self_ ? sent : recv; }

  // Chunk c's views of head-sharded rows: Q|K|V from `qkv` rows, O from or into `o` rows; for
  // backward also dO from `d_o` rows, dQ into `gq` rows and dK|dV into `gkv` rows (null: none).
  LocalForwardArgs head_rows(int c, char* qkv, char* o) const {
    LocalForwardArgs la;
    const QkvRows r = qkv_rows(c, qkv);
    const Rows& m = mine(c);
    la.q = full_view(r.q, r.q_channels, 0, m.q, Dq_, dtype_);
    la.k = full_view(r.kv, r.kv_channels, r.k_channel, m.kv, Dq_, dtype_);
    la.v = full_view(r.kv, r.kv_channels, r.v_channel, m.kv, Dv_, dtype_);
    la.o = full_view(o, m.o, 0, m.q, Dv_, dtype_);
    return la;
  }
  LocalBackwardArgs head_rows(int c, char* qkv, char* o, char* d_o, char* gq, char* gkv) const {
    const LocalForwardArgs f = head_rows(c, qkv, o);
    const Rows& m = mine(c);
    LocalBackwardArgs lb;
    lb.q = f.q;
    lb.k = f.k;
    lb.v = f.v;
    lb.o = f.o;
    if (d_o) lb.d_o = full_view(d_o, m.o, 0, m.q, Dv_, dtype_);
    if (gq) lb.dq = full_view(gq, m.dq, 0, m.q, Dq_, dtype_);
    if (gkv) {
      lb.dk = full_view(gkv, m.gkv, 0, m.kv, Dq_, kv_grad_dtype_);
      lb.dv = full_view(gkv, m.gkv, m.dv_channel, m.kv, Dv_, kv_grad_dtype_);
    }
    return lb;
  }

  // Chunk c's kernel on la.q, k, v, o (head-sharded rows, or cp = 1 the caller's views); the LSE
  // into `lse` ([S][B][qc] fp32; null when the kernel provides none).
  Status run_forward(int c, LocalForwardArgs la, char* lse, const ForwardArgs& a, Stream stream) {
    la.sinks = a.sinks;
    if (lse) la.lse = lse_head_view(c, lse);
    la.cu_seqlens = a.cu_seqlens;
    la.cu_seqlens_device = a.cu_seqlens_device;
    la.workspace = kernel_workspace(a.workspace, c);
    return kernel_.forward(chunk_problem(c), la, stream);
  }

  // Chunk c's O (and LSE) rows back to the sequence owners: one grouped exchange (none when
  // cp = 1).
  Status return_outputs(int c, const char* o, const char* lse, char* o_recv, char* lse_recv,
                        Stream stream) {
    if (self_) return Status::ok();
    ULYSSES_RETURN_IF_ERROR(comm_.group_start());
    for (int p = 0; p < P_; ++p) {
      if (!travels(p)) continue;
      ULYSSES_RETURN_IF_ERROR(send_rows(c, o, &Rows::o, dtype_, p, stream));
      if (lse) ULYSSES_RETURN_IF_ERROR(send_rows(c, lse, &Rows::q, DType::kFloat32, p, stream, 1));
      ULYSSES_RETURN_IF_ERROR(recv_rows(c, o_recv, &Rows::o, dtype_, p, stream));
      if (lse) {
        ULYSSES_RETURN_IF_ERROR(recv_rows(c, lse_recv, &Rows::q, DType::kFloat32, p, stream, 1));
      }
    }
    return comm_.group_end();
  }

  // Chunk c's returned O (and LSE, if the caller asked for it) into the caller's tensors; this
  // rank's own rows from where the kernel wrote them (o_sent, lse_sent) when own_in_place_.
  Status unpack_outputs(int c, char* o_recv, char* lse_recv, const ForwardArgs& a, Stream stream,
                        const char* o_sent, const char* lse_sent, Part part = Part::kAll) {
    const Status o_moved = batched<false>(stream, [&] {
      return move_peers<false>(
          c, as_bshd(a.o, config_.layout), q_begin_[static_cast<std::size_t>(c)], &Rows::q, o_recv,
          dtype_, U_, &Rows::o, &Rows::none, stream, own_out(c, o_sent, &Rows::o, dtype_), part);
    });
    ULYSSES_RETURN_IF_ERROR(o_moved);
    return unpack_lse(c, lse_recv, a, stream, own_out(c, lse_sent, &Rows::q, DType::kFloat32, 1),
                      part);
  }
  Status unpack_lse(int c, char* lse_recv, const ForwardArgs& a, Stream stream, char* own,
                    Part part = Part::kAll) {
    if (a.lse.empty_view() || lse_recv == nullptr) return Status::ok();
    const TensorView lse = lse_as_bhs(a.lse, config_.layout);
    const std::vector<int>& q_begin = q_begin_[static_cast<std::size_t>(c)];
    if (!uneven_ && own == nullptr) {
      if (part == Part::kOwn) return Status::ok();  // (no rows of this rank's own apart)
      return kernels::unpack_lse({lse_recv, DType::kFloat32, P_, Sl_, B_, slot(c).q, 1}, q_begin,
                                 lse, stream);
    }
    // Uneven heads, or this rank's own rows apart: the LSE as rows of one element.
    return move_peers<false>(c, lse_as_rows(lse), q_begin, &Rows::q, lse_recv, DType::kFloat32, 1,
                             &Rows::q, &Rows::none, stream, own, part);
  }

  // Chunk c's backward kernel on lb's views (head-sharded rows, or cp = 1 some of the caller's) and
  // the LSE the forward wrote; dSinks of its heads into dsinks_local.
  Status run_backward(int c, LocalBackwardArgs lb, char* lse, const BackwardArgs& a,
                      float* dsinks_local, Stream stream) {
    if (lse) lb.lse = lse_head_view(c, lse);
    lb.sinks = a.sinks;
    if (config_.attention.sinks) {
      lb.dsinks = TensorView::contiguous(dsinks_local, DType::kFloat32,
                                         {config_.attention.num_heads_q}, comm_.device());
    }
    lb.cu_seqlens = a.cu_seqlens;
    lb.cu_seqlens_device = a.cu_seqlens_device;
    lb.workspace = kernel_workspace(a.workspace, c);
    return kernel_.backward(chunk_problem(c), lb, stream);
  }

  // Chunk c's dQ and dK|dV rows back to the sequence owners: one grouped exchange (none when
  // cp = 1).
  Status return_grads(int c, const char* gq, const char* gkv, char* dq_recv, char* dkv_recv,
                      Stream stream) {
    if (self_) return Status::ok();
    ULYSSES_RETURN_IF_ERROR(comm_.group_start());
    for (int p = 0; p < P_; ++p) {
      if (!travels(p)) continue;
      ULYSSES_RETURN_IF_ERROR(send_rows(c, gq, &Rows::dq, dtype_, p, stream));
      ULYSSES_RETURN_IF_ERROR(send_rows(c, gkv, &Rows::gkv, kv_grad_dtype_, p, stream));
      ULYSSES_RETURN_IF_ERROR(recv_rows(c, dq_recv, &Rows::dq, dtype_, p, stream));
      ULYSSES_RETURN_IF_ERROR(recv_rows(c, dkv_recv, &Rows::gkv, kv_grad_dtype_, p, stream));
    }
    return comm_.group_end();
  }

  // --- cp = 1: the kernel on the caller's views ---------------------------------------------

  // Forward with the kernel reading q, k, v and writing o in place (kLseOnly and inference).
  Status forward_in_place(const ForwardArgs& a, Stream stream) {
    LocalForwardArgs la;
    caller_inputs(a, la);
    ULYSSES_RETURN_IF_ERROR(run_forward(0, la, slot_lse(a, 0), a, stream));
    return unpack_lse(0, slot_lse(a, 0), a, stream, nullptr);
  }
  // Backward with the kernel reading d_o (kLseOnly: q, k, v, o too; else Q|K|V and O from `saved`)
  // and writing dq, dk, dv in place.
  Status backward_in_place(const BackwardArgs& a, Stream stream) {
    LocalBackwardArgs lb;
    if (lse_only_) {
      caller_inputs(a, lb);
    } else {
      lb = head_rows(0, at(a.saved, qkv_full_), at(a.saved, o_head_), nullptr, nullptr, nullptr);
    }
    caller_grads(a, lb);
    float* dsinks_local = dsinks_of(a.workspace);
    ULYSSES_RETURN_IF_ERROR(
        run_backward(0, lb, has_lse_ ? at(a.saved, lse_head_) : nullptr, a, dsinks_local, stream));
    return gather_dsinks(dsinks_local, a.dsinks, stream);
  }

  // A call that copies rows through the plan's buffers: at cp = 1 those follow the in-place
  // regions in a workspace of copy_bytes_ (see layout_buffers()), which is the plan's own scratch,
  // not the caller's workspace of workspace_bytes(): views the kernel may not use in place are rare
  // (unaligned bases or strides), so the plan pays for their buffers only when it meets one.
  // Other plans: `a` as it is.
  template <typename Args>
  Result<Args> with_copy_buffers(const Args& a, Stream stream) {
    if (!self_) return a;
    Args copying = a;
    ULYSSES_ASSIGN_OR_RETURN(copying.workspace, streams_->scratch(copy_bytes_, stream));
    return copying;
  }

  // Whether the kernel may read or write the caller's view in place: aligned as the plan's own
  // buffers are (bases 256-byte aligned, strides multiples of U_ elements) to gcd(16, U_ elements)
  // bytes, which vectorised kernels such as cuDNN's assume. Otherwise the rows
  // are copied into the plan's buffers, as with cp > 1.
  bool kernel_may_use(const TensorView& t) const {
    const std::size_t e = dtype_size(t.dtype);
    const std::size_t unit = std::gcd(std::size_t{16}, static_cast<std::size_t>(U_) * e);
    if (reinterpret_cast<std::uintptr_t>(t.data) % unit != 0) return false;
    for (int d = 0; d + 1 < t.ndim; ++d) {
      if (t.stride(d) < 0 || static_cast<std::size_t>(t.stride(d)) * e % unit != 0) return false;
    }
    return true;
  }
  // Forward with the kernel on the caller's q, k, v and o (kLseOnly and inference: kHeadSharded
  // copies Q|K|V and O into `saved` anyway).
  bool direct_forward(const ForwardArgs& a) const {
    return self_ && kernel_may_use(a.q) && kernel_may_use(a.k) && kernel_may_use(a.v) &&
           kernel_may_use(a.o);
  }
  // Backward with the kernel on the caller's d_o, dq, dk, dv and, kLseOnly, q, k, v, o (else Q|K|V
  // and O from the saved rows). Packed batches: the kernel needs O, dO and dQ with one token
  // stride, as the plan's own rows have; with head_dim_v != head_dim no views have one (Q and dQ
  // rows are wider or narrower than O's, the plan's too), so the kernel brings them into one itself
  // (CudnnAttention stages them) and the caller's views serve as well as the plan's rows.
  bool direct_backward(const BackwardArgs& a) const {
    if (!self_) return false;
    for (const TensorView* t : {&a.d_o, &a.dq, &a.dk, &a.dv}) {
      if (!kernel_may_use(*t)) return false;
    }
    if (lse_only_ && !(kernel_may_use(a.q) && kernel_may_use(a.k) && kernel_may_use(a.v) &&
                       kernel_may_use(a.o))) {
      return false;
    }
    if (config_.layout != Layout::kTHD || Dv_ != Dq_) return true;
    // (The saved O rows: [S][B][hq][Dv], see full_view().)
    const std::int64_t o_token =
        lse_only_ ? as_bshd(a.o, config_.layout).stride(1) : B_ * mine(0).o * U_;
    return as_bshd(a.d_o, config_.layout).stride(1) == o_token &&
           as_bshd(a.dq, config_.layout).stride(1) == o_token;
  }
  // The caller's q, k, v, o (ForwardArgs, or BackwardArgs with kLseOnly) into `out`
  // (LocalForwardArgs or LocalBackwardArgs).
  template <typename From, typename To>
  void caller_inputs(const From& a, To& out) const {
    const Layout l = config_.layout;
    out.q = as_bshd(a.q, l);
    out.k = as_bshd(a.k, l);
    out.v = as_bshd(a.v, l);
    out.o = as_bshd(a.o, l);
  }
  // The caller's dO, dQ, dK, dV into `lb`.
  void caller_grads(const BackwardArgs& a, LocalBackwardArgs& lb) const {
    const Layout l = config_.layout;
    lb.d_o = as_bshd(a.d_o, l);
    lb.dq = as_bshd(a.dq, l);
    lb.dk = as_bshd(a.dk, l);
    lb.dv = as_bshd(a.dv, l);
  }

  // Chunk c's returned gradients into the caller's dq, dk, dv (KV replicas summed in rank order);
  // this rank's own rows from where the kernel wrote them (gq_sent, gkv_sent) when own_in_place_.
  Status unpack_grads(int c, char* dq_recv, char* dkv_recv, const BackwardArgs& a, Stream stream,
                      const char* gq_sent, const char* gkv_sent, Part part = Part::kAll) {
    const TensorView dk = as_bshd(a.dk, config_.layout), dv = as_bshd(a.dv, config_.layout);
    return batched<false>(stream, [&]() -> Status {
      ULYSSES_RETURN_IF_ERROR(move_peers<false>(c, as_bshd(a.dq, config_.layout),
                                                q_begin_[static_cast<std::size_t>(c)], &Rows::q,
                                                dq_recv, dtype_, U_, &Rows::dq, &Rows::none, stream,
                                                own_out(c, gq_sent, &Rows::dq, dtype_), part));
      char* own_kv = own_out(c, gkv_sent, &Rows::gkv, kv_grad_dtype_);
      const std::vector<int>& kv_begin = kv_begin_[static_cast<std::size_t>(c)];
      if (routing_.replicated()) {  // (one chunk, every peer's rows the slot's; none apart)
        if (part == Part::kOwn) return Status::ok();
        const Rows& wide = slot(c);
        const kernels::MessageLayout kv_msg{dkv_recv, kv_grad_dtype_, P_, Sl_, B_, wide.gkv, U_};
        ULYSSES_RETURN_IF_ERROR(kernels::unpack_sum_replicas(kv_msg, 0, kv_begin, dk, stream));
        return kernels::unpack_sum_replicas(kv_msg, wide.dv_channel, kv_begin, dv, stream);
      }
      ULYSSES_RETURN_IF_ERROR(move_peers<false>(c, dk, kv_begin, &Rows::kv, dkv_recv,
                                                kv_grad_dtype_, U_, &Rows::gkv, &Rows::none, stream,
                                                own_kv, part));
      return move_peers<false>(c, dv, kv_begin, &Rows::kv, dkv_recv, kv_grad_dtype_, U_, &Rows::gkv,
                               &Rows::dv_channel, stream, own_kv, part);
    });
  }

  std::size_t slot_of(int chunk) const { return static_cast<std::size_t>(chunk % slots_); }
  float* dsinks_of(void* workspace) const {
    return reinterpret_cast<float*>(at(workspace, dsinks_local_));
  }

  // Uneven heads: dsinks_local zero before the kernel writes its heads' entries (gather_dsinks()).
  Status zero_dsinks(float* dsinks_local, Stream stream) {
    if (!uneven_ || !config_.attention.sinks) return Status::ok();
    return kernels::zero(
        TensorView::contiguous(dsinks_local, DType::kFloat32,
                               {1, 1, 1, config_.attention.num_heads_q}, comm_.device()),
        stream);
  }

  // dSinks: each rank has the complete gradient of its own heads; gather them everywhere. Uneven
  // heads: ranks own different counts, so every rank's [Hq] buffer, zero but for its own heads
  // (zero_dsinks()), is summed instead (x + 0 is x: the same bits).
  Status gather_dsinks(float* dsinks_local, const TensorView& dsinks, Stream stream) {
    if (!config_.attention.sinks) return Status::ok();
    if (uneven_) {
      return comm_.all_reduce_sum(dsinks_local, dsinks.data,
                                  static_cast<std::size_t>(config_.attention.num_heads_q),
                                  DType::kFloat32, stream);
    }
    return comm_.all_gather(dsinks_local + routing_.q_begin[static_cast<std::size_t>(rank_)],
                            dsinks.data, static_cast<std::size_t>(hq_) * sizeof(float), stream);
  }

  // --- streams, exchanges, views and the buffer layout --------------------------------------

  // Events of the exchange pipeline (see forward()): reused every call, stream-ordered.
  static constexpr int kEvPacked = 0, kEvDone = 1, kEvChunk = 2;  // kEvChunk + c: chunk c arrived
  int ev_computed(int c) const { return kEvChunk + K_ + c; }      // chunk c's kernel finished
  int ev_packed(int c) const { return kEvChunk + 2 * K_ + c; }    // chunk c's message packed

  // Where the exchanges run: a side stream on devices when the pipeline has several chunks (so they
  // overlap the kernel) or this rank's own rows skip them (so they are packed and unpacked while
  // the peers' rows travel: own_apart()), else the caller's stream.
  Stream exchange_stream(Stream stream) const {
    return K_ > 1 || own_in_place_ ? streams_->side(0) : stream;
  }

  // Whether this call's chunk kernels alternate between the caller's stream and a second one: the
  // plan made room for two kernel workspaces, and the kernel allows it now (a kernel may decline
  // per call, e.g. while a profiler times its calls one by one).
  bool two_compute_streams() const {
    return kernel_slots_ == 2 && kernel_.concurrent_calls(chunk_problem(widest_chunk_));
  }
  // Chunk c's kernel stream: odd chunks on side stream 1 when `two`, else the caller's stream.
  // Chunk c and c + 2 share a stream and a kernel workspace, so they stay ordered.
  Stream compute_stream(int c, bool two, Stream stream) const {
    return two && c % 2 == 1 ? streams_->side(1) : stream;
  }
  // Chunk c's kernel workspace (of kernel_slots_, one per compute stream), or null if none.
  void* kernel_workspace(void* workspace, int c) const {
    const std::size_t slot = static_cast<std::size_t>(c) % kernel_slots_;
    if (kernel_ws_bytes_[slot] == 0) return nullptr;
    return at(workspace, kernel_ws_ + (slot == 0 ? 0 : align_up(kernel_ws_bytes_[0])));
  }

  // Makes `to` wait for what `from` has enqueued so far (nothing to do when they are one stream).
  Status hand_over(Stream from, Stream to, int event) {
    if (from == to) return Status::ok();
    ULYSSES_RETURN_IF_ERROR(streams_->record(event, from));
    return streams_->wait(to, event);
  }
  // Every chunk's inbound rows packed on the caller's stream by pack(c, part), ev_packed(c)
  // recorded once chunk c's are (after_packed() makes `side` wait for it right before the chunk's
  // exchange is issued), and chunk 0's exchange issued (send_chunk(0)) as soon as its rows are.
  // Where a chunk's own rows are apart (own_apart()), its peers' rows are packed first and its own
  // after them. Chunk 0's peers' rows go first, alone; then chunk 0's own rows and every later
  // chunk's rows go out together while chunk 0's travel, in as few launches as the moves allow
  // (batched()): at 8k tokens each would be a launch of a few microseconds, and chunk 0's kernel
  // on the caller's stream waits for them all.
  template <typename Pack, typename SendChunk>
  Status pack_chunks(bool two, Stream stream, Stream side, Pack&& pack, SendChunk& send_chunk) {
    const bool apart0 = own_apart(0, two, stream);
    ULYSSES_RETURN_IF_ERROR(pack(0, apart0 ? Part::kPeers : Part::kAll));
    if (stream != side) ULYSSES_RETURN_IF_ERROR(streams_->record(ev_packed(0), stream));
    ULYSSES_RETURN_IF_ERROR(send_chunk(0));
    const Status packed = batched<true>(stream, [&]() -> Status {
      if (apart0) ULYSSES_RETURN_IF_ERROR(pack(0, Part::kOwn));
      for (int c = 1; c < K_; ++c) {
        const bool apart = own_apart(c, two, stream);
        ULYSSES_RETURN_IF_ERROR(pack(c, apart ? Part::kPeers : Part::kAll));
        if (apart) ULYSSES_RETURN_IF_ERROR(pack(c, Part::kOwn));
      }
      return Status::ok();
    });
    ULYSSES_RETURN_IF_ERROR(packed);
    if (stream == side) return Status::ok();
    for (int c = 1; c < K_; ++c) ULYSSES_RETURN_IF_ERROR(streams_->record(ev_packed(c), stream));
    return Status::ok();
  }
  Status after_packed(int c, Stream stream, Stream side) {
    return stream == side ? Status::ok() : streams_->wait(side, ev_packed(c));
  }
  // Chunk c's returned rows unpacked by unpack(on, part) on the exchange stream; the last chunk's
  // own rows, where they are apart, on the caller's stream instead, while the peers' rows return.
  template <typename Unpack>
  Status unpack_chunk(int c, bool two, Stream stream, Stream side, Unpack&& unpack) {
    const bool apart = c == K_ - 1 && own_apart(c, two, stream);
    if (apart) ULYSSES_RETURN_IF_ERROR(unpack(stream, Part::kOwn));
    return unpack(side, apart ? Part::kPeers : Part::kAll);
  }
  // After chunk c's kernel is issued: with c = 0, the later chunks' inbound exchanges that go out
  // before any result returns (send_chunk(j) for j = 1 .. ahead - 1, in order: every chunk with
  // saved heads, the other slots' chunks in slots). The streams run the same work in the same
  // order as with every exchange issued right after its packs; only the host issues the first
  // kernel sooner, which at 8k waited for the host to issue every chunk's exchange (2x H200:
  // ~25 us of host time each over peer copies, more over NCCL; docs/PERF.md).
  template <typename SendChunk>
  Status first_kernel_then(int c, int ahead, SendChunk& send_chunk) {
    if (c != 0) return Status::ok();
    for (int j = 1; j < ahead; ++j) ULYSSES_RETURN_IF_ERROR(send_chunk(j));
    return Status::ok();
  }

  // Heads of chunk c of n split into K (K <= n). Only the first chunk's inbound exchange and the
  // last chunk's returning one have no kernel call to hide behind, so with K >= 3 those two end
  // chunks are the small ones: e = max(1, n / (2 (K - 1))) heads each (about half a middle
  // chunk), the middle K - 2 share the rest, the first of them one more where it does not divide.
  // (4 heads in 3 chunks: 1, 2, 1, so a quarter of the bytes is exposed at each end, not half.)
  // K <= 2: n / K each, the first n mod K one more (what is exposed is the same either way).
  static int chunk_heads(int n, int K, int c) {
    if (K <= 2) return n / K + (c < n % K ? 1 : 0);
    const int e = std::max(1, n / (2 * (K - 1)));
    if (c == 0 || c == K - 1) return e;
    const int m = n - 2 * e, mid = K - 2;
    return m / mid + (c - 1 < m % mid ? 1 : 0);
  }

  // Every chunk's rows, of this rank and of each peer, and the widest of each chunk (its regions)
  // and of all (the blocks). A rank splits its KV heads into K chunks, each with its query group
  // (K = 1 when KV heads are shared: every query head then in the one chunk).
  void build_rows() {
    rows_.assign(static_cast<std::size_t>(K_), {});
    wide_.assign(static_cast<std::size_t>(K_), Rows{});
    for (int c = 0; c < K_; ++c) {
      for (int p = 0; p < P_; ++p) {
        const int q = routing_.q_heads_of(p), kv = routing_.kv_heads_of(p);
        const int kvc = chunk_heads(kv, K_, c);
        rows_[static_cast<std::size_t>(c)].push_back(rows_of(K_ == 1 ? q : kvc * (q / kv), kvc));
      }
      const std::vector<Rows>& r = rows_[static_cast<std::size_t>(c)];
      const Rows& most = *std::max_element(
          r.begin(), r.end(), [](const Rows& a, const Rows& b) { return a.qkv < b.qkv; });
      wide_[static_cast<std::size_t>(c)] = most;
    }
    // The widest chunk sizes every chunk's block (the middle ones are the widest for K >= 3).
    widest_chunk_ = static_cast<int>(
        std::max_element(wide_.begin(), wide_.end(),
                         [](const Rows& a, const Rows& b) { return a.qkv < b.qkv; }) -
        wide_.begin());
  }
  const Rows& mine(int c) const { return peer(c, rank_); }
  const Rows& peer(int c, int p) const {
    return rows_[static_cast<std::size_t>(c)][static_cast<std::size_t>(p)];
  }
  const Rows& slot(int c) const { return wide_[static_cast<std::size_t>(c)]; }

  // Per-chunk head maps, fixed at plan time: peer p's first query / KV head of chunk c.
  void build_chunk_maps() {
    std::vector<int> q(routing_.q_begin), kv(routing_.kv_begin);
    for (int c = 0; c < K_; ++c) {
      q_begin_.push_back(q);
      kv_begin_.push_back(kv);
      for (int p = 0; p < P_; ++p) {
        q[static_cast<std::size_t>(p)] += peer(c, p).q;
        kv[static_cast<std::size_t>(p)] += peer(c, p).kv;
      }
    }
    for (auto* v : {&send_counts_, &send_offsets_, &recv_counts_, &recv_offsets_}) {
      v->assign(static_cast<std::size_t>(P_), 0);
    }
  }

  LocalProblem chunk_problem(int c) const {
    const auto r = static_cast<std::size_t>(rank_), i = static_cast<std::size_t>(c);
    LocalProblem p = problem_;
    p.head_offset_q = q_begin_[i][r];
    p.num_heads_q_local = mine(c).q;
    p.head_offset_kv = kv_begin_[i][r];
    p.num_heads_kv_local = mine(c).kv;
    return p;
  }

  // Bytes of one peer's rows of a [S][B][channels][width] buffer, rows [p * Sl, (p + 1) * Sl)
  // (width defaults to the channel width U_; 1 for LSE).
  std::size_t peer_bytes(int channels, DType dtype, std::int64_t width) const {
    return static_cast<std::size_t>(Sl_ * B_ * channels * (width < 0 ? U_ : width)) *
           dtype_size(dtype);
  }
  // A returning exchange of chunk c: this rank's rows of `buf` (mine(c).*ch channels, [S][B][..])
  // for peer p, and peer p's rows (peer(c, p).*ch channels) into its region of `buf`.
  Status send_rows(int c, const char* buf, int Rows::*ch, DType dtype, int p, Stream stream,
                   std::int64_t width = -1) {
    const std::size_t bytes = peer_bytes(mine(c).*ch, dtype, width);
    return comm_.send(buf + static_cast<std::size_t>(p) * bytes, bytes, p, stream);
  }
  Status recv_rows(int c, char* buf, int Rows::*ch, DType dtype, int p, Stream stream,
                   std::int64_t width = -1) {
    const std::size_t region = peer_bytes(slot(c).*ch, dtype, width);
    return comm_.recv(buf + static_cast<std::size_t>(p) * region,
                      peer_bytes(peer(c, p).*ch, dtype, width), p, stream);
  }

  // [B, S, heads, width] view of `heads` heads of `width` elements from channel c_begin on in a
  // [S][B][channels][U] buffer.
  TensorView full_view(void* base, int channels, int c_begin, int heads, std::int64_t width,
                       DType dtype) const {
    const std::int64_t row = static_cast<std::int64_t>(channels) * U_;
    return TensorView::strided(
        static_cast<char*>(base) + static_cast<std::size_t>(c_begin * U_) * dtype_size(dtype),
        dtype, {B_, S_, heads, width}, {row, B_ * row, width, 1}, comm_.device());
  }
  // [B, qc, S] view of chunk c's [S][B][qc] fp32 buffer.
  TensorView lse_head_view(int c, void* base) const {
    const std::int64_t qc = mine(c).q;
    return TensorView::strided(base, DType::kFloat32, {B_, qc, S_}, {qc, 1, B_ * qc},
                               comm_.device());
  }

  // Bytes of each kind of block for chunk rows `r` (a chunk's widest: slot(c)).
  Blocks blocks_of(const Rows& r) const {
    const std::size_t tokens = static_cast<std::size_t>(S_ * B_);  // all P shards
    const std::size_t e = dtype_size(dtype_), u = static_cast<std::size_t>(U_);
    auto bytes = [&](int channels) { return tokens * static_cast<std::size_t>(channels) * u * e; };
    Blocks b;
    b.qkv = bytes(r.qkv);
    b.o = bytes(r.o);
    b.q = bytes(r.dq);
    b.lse = has_lse_ ? tokens * static_cast<std::size_t>(r.q) * 4 : 0;
    b.gkv = tokens * static_cast<std::size_t>(r.gkv) * u * dtype_size(kv_grad_dtype_);
    b.qkv_in = static_cast<std::size_t>(P_) * in_peer_bytes(r.qkv);
    b.do_in = static_cast<std::size_t>(P_) * in_peer_bytes(r.o);
    b.do_stride = std::max(b.o, b.q);
    return b;
  }
  // Where chunk c's block of each kind starts in a buffer of every chunk's blocks, one after
  // another (c = K: the buffer's bytes), and its bytes.
  const Blocks& start(int c) const { return starts_[static_cast<std::size_t>(c)]; }
  const Blocks& block(int c) const { return blocks_[static_cast<std::size_t>(c)]; }

  // Every head-sharded buffer is K chunk blocks, each laid out as the K = 1 buffer for its heads
  // and sized for its chunk's widest rows (the busiest rank's: it has no bytes to spare).
  void layout_buffers() {
    starts_.assign(1, Blocks{});
    for (int c = 0; c < K_; ++c) {
      const Blocks b = blocks_of(slot(c));
      const Blocks at = starts_.back();
      blocks_.push_back(b);
      starts_.push_back({at.qkv + b.qkv, at.o + b.o, at.q + b.q, at.lse + b.lse, at.gkv + b.gkv,
                         at.qkv_in + b.qkv_in, at.do_in + b.do_in, at.do_stride + b.do_stride});
    }
    // The widest chunk's blocks (the only chunk's at cp = 1 and wherever K = 1).
    const Blocks widest = blocks_of(slot(widest_chunk_));
    qkv_block_ = widest.qkv;
    q_block_ = widest.q;
    lse_block_ = widest.lse;
    gkv_block_ = widest.gkv;
    do_in_block_ = widest.do_in;
    const Blocks& all = start(K_);
    const std::size_t qkv_bytes = all.qkv, o_bytes = all.o, q_bytes = all.q, lse_bytes = all.lse;
    // Chunks through one slot of exchange buffers run one after another anyway.
    const bool may_overlap = K_ > 1 && (!slotted_ || slots_ > 1);
    kernel_slots_ = may_overlap && kernel_.concurrent_calls(chunk_problem(widest_chunk_)) ? 2 : 1;
    // Kernel workspace s serves chunks s, s + 2, ... (or every chunk): as large as the most of
    // them.
    for (int c = 0; c < K_; ++c) {
      std::size_t& most = kernel_ws_bytes_[static_cast<std::size_t>(c) % kernel_slots_];
      most = std::max(most, kernel_.workspace_bytes(chunk_problem(c)));
    }
    // First what every call uses whichever way it runs: dSinks (training) and, at cp = 1, the
    // kernel's workspace and its LSE (inference). At cp = 1 that is the caller's whole workspace;
    // a call that copies rows runs in the plan's scratch, whose regions follow these
    // (with_copy_buffers()).
    Arena front;
    if (config_.training) {
      dsinks_local_ = front.take(static_cast<std::size_t>(config_.attention.num_heads_q) * 4);
    }
    if (self_) {
      kernel_ws_ = front.take(kernel_ws_total());
      if (!config_.training) fwd_lse_[0] = front.take(lse_block_);  // (one chunk, one slot)
    }
    if (slotted_) {
      layout_slots(lse_bytes, front.total());
      return;
    }

    // What forward produces and backward reads (training with head-sharded saved activations).
    Arena saved, fwd(front.total());
    qkv_full_ = saved.take(qkv_bytes);
    o_head_ = saved.take(o_bytes);
    lse_head_ = saved.take(lse_bytes);
    // Forward scratch. send_qkv is dead once every chunk's exchange has sent it (they all precede
    // the O exchanges on one stream), so O and LSE come back into the same region when they fit.
    // With fp8 the region holds every chunk's codes as sent, then as received (turned back into
    // qkv_full before any O exchange).
    const std::size_t send_region = fp8_ ? 2 * all.qkv_in : qkv_bytes;
    send_qkv_ = fwd.take(send_region);
    if (align_up(o_bytes) + lse_bytes <= align_up(send_region)) {
      o_recv_ = send_qkv_;
      lse_recv_ = send_qkv_ + align_up(o_bytes);
    } else {
      o_recv_ = fwd.take(o_bytes);
      lse_recv_ = fwd.take(lse_bytes);
    }
    std::size_t scratch = fwd.total();
    if (config_.training) {
      // Backward scratch: dq_recv reuses send_dO (every dO exchange precedes every gradient
      // exchange on one stream). dkv_recv reuses dO's buffer only without a pipeline: with chunks,
      // chunk c's gradients arrive while later chunks' kernels still read dO.
      const std::size_t gkv_bytes = all.gkv;
      Arena bwd(front.total());
      // fp8: chunk c's dO codes leave from send_dO's block c (they are smaller than the rows) and
      // arrive in wire_dO, which follows them in send_dO without a pipeline (dead once turned back
      // into do_head, before the kernel writes dQ there) and is a region of its own with chunks
      // (later chunks' codes are still in flight when chunk c's dQ lands in send_dO).
      const bool wire_in_send = fp8_ && K_ == 1;
      // Its blocks also take chunk c's dQ (into `saved`: sent from block c; else: received), which
      // may be wider than dO (head_dim_v < head_dim): Blocks::do_stride.
      send_do_ = bwd.take(std::max(
          all.do_stride, wire_in_send ? align_up(do_in_block_) + do_in_block_ : std::size_t{0}));
      do_head_ = bwd.take(o_bytes);
      if (fp8_) wire_do_ = wire_in_send ? send_do_ + align_up(do_in_block_) : bwd.take(all.do_in);
      // Gradients into `saved` need dQ | dK dV rows as wide as Q | K V rows (not so with fp32
      // partials of replicated KV heads). Chunk c's kernel starts after chunk c's dO exchange, so
      // its dQ may overwrite the packed dO of chunk c.
      grads_into_saved_ = !config_.backward_keeps_saved && q_block_ + gkv_block_ == qkv_block_;
      if (grads_into_saved_) {
        grad_q_ = send_do_;
      } else {
        dq_recv_ = send_do_;
        dkv_recv_ = (K_ == 1 && gkv_bytes <= o_bytes) ? do_head_ : bwd.take(gkv_bytes);
        grad_q_ = bwd.take(q_bytes);
      }
      grad_kv_ = bwd.take(gkv_bytes);
      scratch = std::max(scratch, bwd.total());
    }
    finish_layout(scratch, front.total(), saved.total());
  }

  // The totals, given the scratch regions' end and the in-place regions' (cp = 1). Otherwise the
  // kernel's workspaces sit after the scratch, at the same offset in both passes.
  void finish_layout(std::size_t scratch_end, std::size_t front_end, std::size_t saved_end) {
    saved_bytes_ = saved_end;
    if (self_) {
      workspace_bytes_ = front_end;
      copy_bytes_ = scratch_end;
      return;
    }
    kernel_ws_ = scratch_end;
    workspace_bytes_ = scratch_end + kernel_ws_total();
  }

  // kLseOnly: `saved` holds every chunk's LSE; the workspace one set of exchange buffers per slot
  // (forward: send | receive | O, + LSE for inference; backward, when training: send | receive),
  // then the kernel's workspace.
  // Scratch from offset `from` on (see layout_buffers()).
  // Slot s is sized for the widest chunk it takes (chunks s, s + slots, ...): with chunks of
  // unequal sizes the second slot is narrower than the first.
  void layout_slots(std::size_t lse_bytes, std::size_t from) {
    Arena saved, fwd(from), bwd(from);
    if (lse_only_) lse_head_ = saved.take(lse_bytes);
    for (std::size_t s = 0; s < static_cast<std::size_t>(slots_); ++s) {
      Rows widest;
      for (int c = static_cast<int>(s); c < K_; c += slots_) {
        if (slot(c).qkv > widest.qkv) widest = slot(c);
      }
      const Blocks b = slot_blocks_[s] = blocks_of(widest);
      // Forward's send slot: Q|K|V (fp8: codes as sent, then as received), later O and LSE back.
      const std::size_t fwd_send = std::max(
          {b.qkv, align_up(b.o) + b.lse, fp8_ ? align_up(b.qkv_in) + b.qkv_in : std::size_t{0}});
      // Backward: Q|K|V, O and dO rows in; then dQ and dK|dV rows out (slot_offsets()). fp8
      // sends less from the same slot, and its Q|K|V and dO codes arrive behind what it sent.
      const SlotOffsets off = slot_offsets(s);
      const std::size_t bwd_msg = std::max(off.d_o + b.o, off.dkv + b.gkv);
      const std::size_t bwd_send =
          fp8_ ? std::max(bwd_msg, off.wire + align_up(b.qkv_in) + b.do_in) : bwd_msg;
      fwd_send_[s] = fwd.take(fwd_send);
      fwd_recv_[s] = fwd.take(b.qkv);
      fwd_o_[s] = fwd.take(b.o);
      if (!lse_only_ && !self_) fwd_lse_[s] = fwd.take(b.lse);  // inference: kernel's LSE
      if (!config_.training) continue;
      bwd_send_[s] = bwd.take(bwd_send);
      bwd_recv_[s] = bwd.take(bwd_msg);
    }
    finish_layout(std::max(fwd.total(), bwd.total()), from, saved.total());
  }

  CallChecks checks() const {
    return {config_, comm_, kernel_, Sl_, workspace_bytes_, saved_bytes_};
  }

  PlanConfig config_;
  PlanConfig reported_;  // what config() says: config_, or the other strategy's config it runs
  Communicator& comm_;
  LocalAttention& kernel_;
  HeadRouting routing_;
  LocalProblem problem_;
  std::unique_ptr<kernels::StreamSet> streams_;
  int P_ = 1, rank_ = 0, hq_ = 0;  // hq_: this rank's query heads
  int K_ = 1;                      // pipeline chunks
  bool uneven_ = false;            // ranks own different head counts (head_routing.h)
  // Message channels are U_ = gcd(head_dim, head_dim_v) elements wide (head_dim when they are
  // equal): a Q or K head spans qu_ of them, a V or O head Dv_ / U_.
  int qu_ = 1;
  // Chunk c's rows of each peer (rows_[c][p], build_rows(); this rank's, mine(c), are what its
  // kernel reads and writes and what arrives for it or leaves from it; peer(c, p) is p's region of
  // a message on the far side of an exchange), the widest of chunk c (wide_[c], slot(c): every
  // region of its messages is that wide) and of every chunk (slot(widest_chunk_): sizes each
  // chunk's block).
  // All equal unless the heads or the chunks split unevenly.
  std::vector<std::vector<Rows>> rows_;
  std::vector<Rows> wide_;
  int widest_chunk_ = 0;  // the widest chunk (sizes the blocks; concurrent_calls() is asked of it)
  // Bytes of the widest chunk's blocks: Q|K|V rows, dQ rows, LSE, dK|dV rows, and its dO message
  // in the inbound payload (fp8: smaller than the rows).
  std::size_t qkv_block_ = 0, q_block_ = 0, lse_block_ = 0, gkv_block_ = 0, do_in_block_ = 0;
  // Per chunk: bytes of each kind of block (blocks_of(slot(c))), and where it starts (starts_,
  // K + 1 entries; start()).
  std::vector<Blocks> blocks_, starts_;
  bool fp8_ = false;   // Payload::kFp8: Q|K|V and dO travel as fp8 rows
  bool self_ = false;  // cp = 1 with native rows: nothing travels (see the top of this file)
  // This rank's own rows skip the exchanges: packed where they arrive, unpacked from where the
  // kernel wrote them (the communicator's copies_own_rows(); see the top of this file).
  bool own_in_place_ = false;
  std::vector<std::vector<int>> q_begin_, kv_begin_;  // [chunk][peer], see build_chunk_maps()
  std::vector<std::size_t> send_counts_, send_offsets_, recv_counts_,
      recv_offsets_;  // exchange_in()'s scratch
  // The packs or unpacks move_peers() has deferred inside batched(), and batched()'s stream.
  std::vector<kernels::HeadMove> batch_;
  bool batching_ = false, batch_packs_ = false;
  Stream batch_stream_ = nullptr;
  std::int64_t B_ = 1, S_ = 0, Sl_ = 0, Dq_ = 0, Dv_ = 0, U_ = 0;
  DType dtype_ = DType::kBFloat16, kv_grad_dtype_ = DType::kBFloat16;
  bool has_lse_ = true;
  // SavedActivations::kLseOnly (training): chunks go through `slots_` sets of exchange buffers.
  bool lse_only_ = false;
  int slots_ = 1;
  bool slotted_ = false;  // forward through slots: kLseOnly, and inference
  std::array<std::size_t, 2> fwd_send_{}, fwd_recv_{}, fwd_o_{}, fwd_lse_{}, bwd_send_{},
      bwd_recv_{};
  std::array<Blocks, 2> slot_blocks_{};  // each slot's blocks: its widest chunk's (layout_slots())
  // Backward's gradients come back into `saved` (see layout_buffers()). Unless the config keeps
  // `saved`, the buffers backward has consumed (the latest kConsumedMemory of them) so that a
  // second backward() on one is refused instead of reading gradients as Q/K/V; refused whether or
  // not this plan's shapes let gradients into `saved`, so the rule does not change with cp.
  bool grads_into_saved_ = false;
  static constexpr std::size_t kConsumedMemory = 64;
  std::vector<const void*> consumed_;
  // Offsets into `saved` (training) or the workspace, and into the workspace.
  std::size_t qkv_full_ = 0, o_head_ = 0, lse_head_ = 0, send_qkv_ = 0, o_recv_ = 0, lse_recv_ = 0;
  std::size_t send_do_ = 0, do_head_ = 0, grad_q_ = 0, grad_kv_ = 0, dq_recv_ = 0, dkv_recv_ = 0;
  std::size_t wire_do_ = 0;
  std::size_t dsinks_local_ = 0, kernel_ws_ = 0;
  std::size_t kernel_slots_ = 1;  // kernel workspaces: 2 when chunks' kernels may overlap
  std::array<std::size_t, 2> kernel_ws_bytes_{};  // each kernel workspace's bytes
  std::size_t kernel_ws_total() const {
    return align_up(kernel_ws_bytes_[0]) + align_up(kernel_ws_bytes_[1]);
  }
  std::size_t workspace_bytes_ = 0, saved_bytes_ = 0;
  // cp = 1: the size of a workspace that also holds the copying buffers (with_copy_buffers()).
  std::size_t copy_bytes_ = 0;
};

}  // namespace

LocalProblem ulysses_local_problem(const PlanConfig& c, const HeadRouting& r, int rank) {
  return UlyssesAttention::local_problem(c, r, rank);
}

Result<std::unique_ptr<DistributedAttention>> create_ulysses_plan(const PlanConfig& config,
                                                                  Communicator& comm,
                                                                  LocalAttention& kernel,
                                                                  const PlanConfig* reported) {
  ULYSSES_ASSIGN_OR_RETURN(auto routing,
                           HeadRouting::create(config.attention, config.parallel, kCreateApi));
  ULYSSES_ASSIGN_OR_RETURN(
      auto streams, kernels::StreamSet::create(comm.device(), 2 + 3 * config.overlap_chunks, 2));
  return std::unique_ptr<DistributedAttention>(std::make_unique<UlyssesAttention>(
      config, reported ? *reported : config, comm, kernel, std::move(routing), std::move(streams)));
}

std::optional<PlanConfig> one_rank_as_ulysses(const PlanConfig& config) {
  const Strategy strategy = config.parallel.strategy;
  if (config.parallel.cp != 1 || strategy == Strategy::kUlysses ||
      config.payload != Payload::kNative) {
    return std::nullopt;
  }
  if (config.layout == Layout::kTHD && config.parallel.packed_per_sequence()) return std::nullopt;
  PlanConfig as_ulysses = config;
  as_ulysses.parallel = ParallelConfig{.strategy = Strategy::kUlysses, .cp = 1};
  // Ring, hybrid and all-gather never consume `saved` in backward.
  as_ulysses.backward_keeps_saved = true;
  return as_ulysses;
}

}  // namespace ulysses::parallel
