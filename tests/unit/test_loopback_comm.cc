// Loopback communicator: every operation moves rank- and position-stamped data bit-exactly, batches
// do not deadlock, and failures (missing peer, size mismatch) end in a Status on every rank. Also
// the exchange-shape check that picks NCCL's ncclAlltoAll path.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <thread>

#include "comm/exchange_shape.h"
#include "comm/loopback_transport.h"
#include "common/test_util.h"
#include "ulysses/gpu.h"

namespace ulysses {
namespace {

using testing::run_ranks;

// A stamp that names its source, destination and position: a misrouted word says where it came
// from.
std::uint32_t stamp(int src, int dst, std::size_t i) {
  return (static_cast<std::uint32_t>(src) << 24) | (static_cast<std::uint32_t>(dst) << 16) |
         static_cast<std::uint32_t>(i & 0xFFFF);
}

// Uneven per-pair sizes, so offsets matter: src sends (src + 2 * dst + 1) words to dst.
std::size_t words(int src, int dst) { return static_cast<std::size_t>(src + 2 * dst + 1); }

// Rank r's all_to_all_v arguments for words(): byte counts and offsets per peer, and the totals.
struct Exchange {
  std::vector<std::size_t> sc, so, rc, ro;
  std::size_t s_total = 0, r_total = 0;
};
Exchange exchange_of(int r, int P) {
  Exchange e;
  for (int p = 0; p < P; ++p) {
    e.sc.push_back(words(r, p) * 4);
    e.so.push_back(e.s_total);
    e.s_total += e.sc.back();
    e.rc.push_back(words(p, r) * 4);
    e.ro.push_back(e.r_total);
    e.r_total += e.rc.back();
  }
  return e;
}

class LoopbackRanks : public ::testing::TestWithParam<int> {};

TEST_P(LoopbackRanks, AllToAllVIsBitExact) {
  const int P = GetParam();
  std::atomic<std::int64_t> wrong{0};
  auto st = run_ranks(P, [&](int r, Communicator& comm) -> Status {
    const Exchange e = exchange_of(r, P);
    std::vector<std::uint32_t> send(e.s_total / 4), recv(e.r_total / 4, 0xDEADBEEF);
    for (int p = 0; p < P; ++p) {
      for (std::size_t i = 0; i < words(r, p); ++i) send[e.so[p] / 4 + i] = stamp(r, p, i);
    }
    Status s = comm.all_to_all_v(send.data(), e.sc, e.so, recv.data(), e.rc, e.ro, nullptr);
    if (!s.is_ok()) return s;
    for (int p = 0; p < P; ++p) {
      for (std::size_t i = 0; i < words(p, r); ++i) {
        if (recv[e.ro[p] / 4 + i] != stamp(p, r, i)) ++wrong;
      }
    }
    return Status::ok();
  });
  EXPECT_ALL_OK(st);
  EXPECT_EQ(wrong.load(), 0) << "misrouted words";
}

// A host transport that records, per receiving rank, whose send each copy read (the sender is
// found by its buffer), in the order the copies were issued.
class RecordingTransport final : public comm::LoopbackTransport {
 public:
  RecordingTransport(const std::vector<std::vector<std::uint32_t>>* sends,
                     std::vector<int>* sources)
      : sends_(sends), sources_(sources) {}
  Device device() const override { return Device::host(); }
  std::string_view name() const override { return "recording"; }
  Result<std::shared_ptr<void>> ready_token(Stream) override { return std::shared_ptr<void>(); }
  Status copy(void* dst, comm::PostedSend& send, Stream stream) override {
    return local_copy(dst, send.data, send.bytes, stream);
  }
  // (A rank's copy to itself comes here directly, the others through copy().)
  Status local_copy(void* dst, const void* data, std::size_t bytes, Stream) override {
    for (std::size_t src = 0; src < sends_->size(); ++src) {
      const auto* begin = (*sends_)[src].data();
      const auto* at = static_cast<const std::uint32_t*>(data);
      if (at >= begin && at < begin + (*sends_)[src].size()) {
        sources_->push_back(static_cast<int>(src));
      }
    }
    std::memcpy(dst, data, bytes);
    return Status::ok();
  }
  Status after_consumed(const comm::PostedSend&, Stream) override { return Status::ok(); }
  Status to_host(void* dst, const void* src, std::size_t bytes, Stream) override {
    std::memcpy(dst, src, bytes);
    return Status::ok();
  }
  Status from_host(void* dst, const void* src, std::size_t bytes, Stream) override {
    std::memcpy(dst, src, bytes);
    return Status::ok();
  }

 private:
  const std::vector<std::vector<std::uint32_t>>* sends_;
  std::vector<int>* sources_;
};

// Balanced pairwise schedule: rank r reads from r, r + 1, ... (mod P), so at the k-th copy every
// rank reads from a different peer (no P - 1 readers on one sender's link). Data stays exact.
TEST_P(LoopbackRanks, AllToAllVReadsPeersInAPairwiseRotation) {
  const int P = GetParam();
  const auto n = static_cast<std::size_t>(P);
  std::vector<std::vector<std::uint32_t>> sends(n), recvs(n);
  std::vector<std::vector<int>> sources(n);
  std::vector<std::shared_ptr<comm::LoopbackTransport>> transports;
  for (std::size_t r = 0; r < n; ++r) {
    for (int p = 0; p < P; ++p) {
      for (std::size_t i = 0; i < words(static_cast<int>(r), p); ++i)
        sends[r].push_back(stamp(static_cast<int>(r), p, i));
    }
    transports.push_back(std::make_shared<RecordingTransport>(&sends, &sources[r]));
  }
  auto comms = comm::make_loopback_comms(LoopbackOptions{}, transports);
  std::vector<Status> st(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < P; ++r) {
    threads.emplace_back([&, r] {
      const auto ru = static_cast<std::size_t>(r);
      const Exchange e = exchange_of(r, P);
      recvs[ru].assign(e.r_total / 4, 0);
      st[ru] = comms[ru]->all_to_all_v(sends[ru].data(), e.sc, e.so, recvs[ru].data(), e.rc, e.ro,
                                       nullptr);
      for (int p = 0; p < P; ++p) {
        for (std::size_t i = 0; i < words(p, r); ++i) {
          EXPECT_EQ(recvs[ru][e.ro[static_cast<std::size_t>(p)] / 4 + i], stamp(p, r, i));
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_ALL_OK(st);
  for (int r = 0; r < P; ++r) {
    std::vector<int> want;
    for (int k = 0; k < P; ++k) want.push_back((r + k) % P);
    EXPECT_EQ(sources[static_cast<std::size_t>(r)], want) << "rank " << r;
  }
}

TEST_P(LoopbackRanks, AllGatherAllReduceBarrier) {
  const int P = GetParam();
  std::atomic<std::int64_t> wrong{0};
  auto st = run_ranks(P, [&](int r, Communicator& comm) -> Status {
    std::vector<std::uint32_t> mine(5), all(5 * static_cast<std::size_t>(P), 0);
    for (std::size_t i = 0; i < 5; ++i) mine[i] = stamp(r, 0, i);
    if (Status s = comm.all_gather(mine.data(), all.data(), 5 * 4, nullptr); !s.is_ok()) return s;
    for (int p = 0; p < P; ++p) {
      for (std::size_t i = 0; i < 5; ++i) wrong += all[p * 5 + i] != stamp(p, 0, i);
    }
    // Integers in fp32 sum exactly: the result must be exact and identical on every rank.
    std::vector<float> x = {static_cast<float>(r + 1), static_cast<float>(100 * r)};
    if (Status s = comm.all_reduce_sum(x.data(), x.data(), 2, DType::kFloat32, nullptr);
        !s.is_ok()) {
      return s;
    }
    wrong += x[0] != static_cast<float>(P * (P + 1) / 2);
    wrong += x[1] != static_cast<float>(100 * P * (P - 1) / 2);
    std::vector<double> y = {0.5 * r};
    if (Status s = comm.all_reduce_sum(y.data(), y.data(), 1, DType::kFloat64, nullptr);
        !s.is_ok()) {
      return s;
    }
    wrong += y[0] != 0.25 * P * (P - 1);
    return comm.barrier(nullptr);
  });
  EXPECT_ALL_OK(st);
  EXPECT_EQ(wrong.load(), 0);
}

TEST_P(LoopbackRanks, GroupedRingExchangeDoesNotDeadlock) {
  // Every rank sends to its right neighbour and receives from its left, all in one group: with
  // blocking sends this would deadlock; batched it must complete.
  const int P = GetParam();
  std::atomic<std::int64_t> wrong{0};
  auto st = run_ranks(P, [&](int r, Communicator& comm) -> Status {
    const int right = (r + 1) % P, left = (r + P - 1) % P;
    std::vector<std::uint32_t> out(17), in(17, 0);
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = stamp(r, right, i);
    if (Status s = comm.group_start(); !s.is_ok()) return s;
    if (Status s = comm.send(out.data(), 17 * 4, right, nullptr); !s.is_ok()) return s;
    if (Status s = comm.recv(in.data(), 17 * 4, left, nullptr); !s.is_ok()) return s;
    if (Status s = comm.group_end(); !s.is_ok()) return s;
    for (std::size_t i = 0; i < in.size(); ++i) wrong += in[i] != stamp(left, r, i);
    return Status::ok();
  });
  EXPECT_ALL_OK(st);
  EXPECT_EQ(wrong.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Ranks, LoopbackRanks, ::testing::Values(1, 2, 3, 4, 8));

// Counts every call that reaches it (then passes it on): what a ForwardingCommunicator in front of
// it must forward.
class CallCounter final : public ForwardingCommunicator {
 public:
  using ForwardingCommunicator::ForwardingCommunicator;
  std::map<std::string, int> calls;
  Status all_to_all_v(const void* s, std::span<const std::size_t> sc,
                      std::span<const std::size_t> so, void* r, std::span<const std::size_t> rc,
                      std::span<const std::size_t> ro, Stream st) override {
    ++calls["all_to_all_v"];
    return ForwardingCommunicator::all_to_all_v(s, sc, so, r, rc, ro, st);
  }
  Status send(const void* d, std::size_t b, int p, Stream st) override {
    ++calls["send"];
    return ForwardingCommunicator::send(d, b, p, st);
  }
  Status recv(void* d, std::size_t b, int p, Stream st) override {
    ++calls["recv"];
    return ForwardingCommunicator::recv(d, b, p, st);
  }
  Status all_gather(const void* s, void* r, std::size_t b, Stream st) override {
    ++calls["all_gather"];
    return ForwardingCommunicator::all_gather(s, r, b, st);
  }
  Status all_reduce_sum(const void* s, void* r, std::size_t n, DType t, Stream st) override {
    ++calls["all_reduce_sum"];
    return ForwardingCommunicator::all_reduce_sum(s, r, n, t, st);
  }
  Status barrier(Stream st) override {
    ++calls["barrier"];
    return ForwardingCommunicator::barrier(st);
  }
  Status warm_up() override {
    ++calls["warm_up"];
    return ForwardingCommunicator::warm_up();
  }
  Status host_all_gather(const void* s, void* r, std::size_t b) override {
    ++calls["host_all_gather"];
    return ForwardingCommunicator::host_all_gather(s, r, b);
  }
  Status group_start() override {
    ++calls["group_start"];
    return ForwardingCommunicator::group_start();
  }
  Status group_end() override {
    ++calls["group_end"];
    return ForwardingCommunicator::group_end();
  }
};

TEST(Forwarding, EveryCallReachesTheInnerCommunicatorAndMovesTheSameBits) {
  constexpr int P = 3;
  std::atomic<std::int64_t> wrong{0};
  std::vector<std::map<std::string, int>> seen(P);
  auto st = run_ranks(P, [&](int r, Communicator& comm) -> Status {
    CallCounter counter(comm);
    ForwardingCommunicator front(counter);  // what a user's wrapper would be
    wrong += front.rank() != comm.rank() || front.size() != comm.size() ||
             front.device() != comm.device() || front.backend_name() != comm.backend_name() ||
             front.copies_own_rows() != comm.copies_own_rows();
    wrong += &front.inner() != &counter;
    if (Status s = front.warm_up(); !s.is_ok()) return s;
    const Exchange e = exchange_of(r, P);
    std::vector<std::uint32_t> send(e.s_total / 4), recv(e.r_total / 4, 0xDEADBEEF);
    for (int p = 0; p < P; ++p) {
      for (std::size_t i = 0; i < words(r, p); ++i) send[e.so[p] / 4 + i] = stamp(r, p, i);
    }
    if (Status s = front.all_to_all_v(send.data(), e.sc, e.so, recv.data(), e.rc, e.ro, nullptr);
        !s.is_ok()) {
      return s;
    }
    for (int p = 0; p < P; ++p) {
      for (std::size_t i = 0; i < words(p, r); ++i)
        wrong += recv[e.ro[p] / 4 + i] != stamp(p, r, i);
    }
    const int right = (r + 1) % P, left = (r + P - 1) % P;
    std::vector<std::uint32_t> out(9), in(9, 0);
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = stamp(r, right, i);
    if (Status s = front.group_start(); !s.is_ok()) return s;
    if (Status s = front.send(out.data(), 9 * 4, right, nullptr); !s.is_ok()) return s;
    if (Status s = front.recv(in.data(), 9 * 4, left, nullptr); !s.is_ok()) return s;
    if (Status s = front.group_end(); !s.is_ok()) return s;
    for (std::size_t i = 0; i < in.size(); ++i) wrong += in[i] != stamp(left, r, i);
    std::vector<std::uint32_t> mine(4), all(4 * P, 0), host_all(4 * P, 0);
    for (std::size_t i = 0; i < 4; ++i) mine[i] = stamp(r, 7, i);
    if (Status s = front.all_gather(mine.data(), all.data(), 16, nullptr); !s.is_ok()) return s;
    if (Status s = front.host_all_gather(mine.data(), host_all.data(), 16); !s.is_ok()) return s;
    for (int p = 0; p < P; ++p) {
      for (std::size_t i = 0; i < 4; ++i) {
        wrong += all[p * 4 + i] != stamp(p, 7, i);
        wrong += host_all[p * 4 + i] != stamp(p, 7, i);
      }
    }
    double x = r + 1.0;
    if (Status s = front.all_reduce_sum(&x, &x, 1, DType::kFloat64, nullptr); !s.is_ok()) return s;
    wrong += x != P * (P + 1) / 2.0;
    if (Status s = front.barrier(nullptr); !s.is_ok()) return s;
    seen[static_cast<std::size_t>(r)] = counter.calls;
    return Status::ok();
  });
  EXPECT_ALL_OK(st);
  EXPECT_EQ(wrong.load(), 0);
  const std::map<std::string, int> once = {
      {"all_gather", 1}, {"all_reduce_sum", 1}, {"all_to_all_v", 1},    {"barrier", 1},
      {"group_end", 1},  {"group_start", 1},    {"host_all_gather", 1}, {"recv", 1},
      {"send", 1},       {"warm_up", 1}};
  for (int r = 0; r < P; ++r) EXPECT_EQ(seen[static_cast<std::size_t>(r)], once) << "rank " << r;
}

TEST(Loopback, ReportsWhetherItsCopyToItselfIsASeparateCopy) {
  // (What Ulysses' plans ask before leaving a rank's own rows out of the exchanges.) A plain
  // Communicator says no; a wrapper says what its inner communicator says.
  for (const bool copies : {true, false}) {
    auto comms = create_loopback_group(2, LoopbackOptions{.copies_own_rows = copies});
    ASSERT_TRUE(comms.is_ok()) << comms.status().to_string();
    for (const auto& c : *comms) {
      EXPECT_EQ(c->copies_own_rows(), copies);
      ForwardingCommunicator front(*c);
      EXPECT_EQ(front.copies_own_rows(), copies);
    }
  }
}

// The shape NCCL's ncclAlltoAll takes (NcclComm sends exactly these exchanges through it): one
// count for every peer at offsets peer · count on both sides, distinct buffers, nonzero.
TEST(ExchangeShape, UniformOnlyForEqualCountsAtPeerTimesCountOffsets) {
  using comm::uniform_exchange_bytes;
  using V = std::vector<std::size_t>;
  char a[1], b[1];
  const V c3 = {64, 64, 64}, o3 = {0, 64, 128};
  EXPECT_EQ(uniform_exchange_bytes(a, c3, o3, b, c3, o3), 64u);
  EXPECT_EQ(uniform_exchange_bytes(a, V{8}, V{0}, b, V{8}, V{0}), 8u);  // one rank
  EXPECT_EQ(uniform_exchange_bytes(a, c3, o3, a, c3, o3), 0u);          // in place
  EXPECT_EQ(uniform_exchange_bytes(a, V{0, 0}, V{0, 0}, b, V{0, 0}, V{0, 0}), 0u);
  EXPECT_EQ(uniform_exchange_bytes(a, V{64, 64, 32}, o3, b, c3, o3), 0u);  // uneven send
  EXPECT_EQ(uniform_exchange_bytes(a, c3, o3, b, V{64, 32, 64}, o3), 0u);  // uneven receive
  EXPECT_EQ(uniform_exchange_bytes(a, c3, V{0, 64, 192}, b, c3, o3), 0u);  // gap on the send side
  EXPECT_EQ(uniform_exchange_bytes(a, c3, o3, b, c3, V{128, 64, 0}), 0u);  // permuted receive
  EXPECT_EQ(uniform_exchange_bytes(a, V{}, V{}, b, V{}, V{}), 0u);
}

TEST(Loopback, MissingPeerTimesOutOnEveryRank) {
  // Rank 2 never calls the barrier: the others must come back with kTimeout/kCommError, not hang.
  const auto t0 = std::chrono::steady_clock::now();
  auto st = run_ranks(
      3,
      [&](int r, Communicator& comm) -> Status {
        if (r == 2) return Status::ok();
        return comm.barrier(nullptr);
      },
      LoopbackOptions{std::chrono::milliseconds(200)});
  EXPECT_TRUE(st[2].is_ok());
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(st[static_cast<std::size_t>(r)].code(), StatusCode::kTimeout)
        << st[static_cast<std::size_t>(r)].to_string();
    EXPECT_NE(st[static_cast<std::size_t>(r)].message().find("timed out"), std::string::npos);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
}

TEST(Loopback, AfterATimeoutEveryOperationFails) {
  auto st = run_ranks(
      2,
      [&](int r, Communicator& comm) -> Status {
        if (r == 0) {
          float x = 1;
          Status first = comm.recv(&x, 4, 1, nullptr);  // rank 1 never sends
          if (first.code() != StatusCode::kTimeout) return internal_error("expected a timeout");
          return comm.barrier(nullptr);  // the group is aborted: must fail at once
        }
        return Status::ok();
      },
      LoopbackOptions{std::chrono::milliseconds(100)});
  EXPECT_EQ(st[0].code(), StatusCode::kTimeout) << st[0].to_string();
}

TEST(Loopback, SizeMismatchIsAnErrorOnBothSides) {
  auto st = run_ranks(2, [&](int r, Communicator& comm) -> Status {
    std::vector<char> buf(64);
    if (r == 0) return comm.send(buf.data(), 32, 1, nullptr);
    return comm.recv(buf.data(), 64, 0, nullptr);
  });
  for (const Status& s : st) {
    EXPECT_EQ(s.code(), StatusCode::kCommError) << s.to_string();
    EXPECT_NE(s.message().find("expects 64 bytes from rank 0, which sends 32"), std::string::npos)
        << s.message();
  }
}

// A rank's sends to itself meet its receives from itself in order: pairs on one stream are copied
// directly, pairs on two streams go through the hub; either way the k-th send lands in the k-th
// receive, bit-exact, and a size mismatch is the same error as between two ranks.
TEST(Loopback, CopiesToItselfKeepTheirOrderOnOneStreamOrTwo) {
  auto st = run_ranks(2, [&](int r, Communicator& comm) -> Status {
    // Host loopback ignores streams; distinct handles still pick the hub's path.
    Stream one = nullptr, two = reinterpret_cast<Stream>(std::uintptr_t{0x10});
    std::vector<std::uint32_t> a(9), b(5), c(7), got_a(9, 0), got_b(5, 0), got_c(7, 0), peer(3),
        from_peer(3, 0);
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = stamp(r, 0, i);
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = stamp(r, 1, i);
    for (std::size_t i = 0; i < c.size(); ++i) c[i] = stamp(r, 2, i);
    for (std::size_t i = 0; i < peer.size(); ++i) peer[i] = stamp(r, 3, i);
    if (Status s = comm.group_start(); !s.is_ok()) return s;
    (void)comm.send(a.data(), 9 * 4, r, one);
    (void)comm.send(peer.data(), 3 * 4, 1 - r, one);
    (void)comm.send(b.data(), 5 * 4, r, one);
    (void)comm.send(c.data(), 7 * 4, r, one);
    (void)comm.recv(got_a.data(), 9 * 4, r, one);  // with a: one stream, direct
    (void)comm.recv(got_b.data(), 5 * 4, r, two);  // with b: two streams, through the hub
    (void)comm.recv(from_peer.data(), 3 * 4, 1 - r, one);
    (void)comm.recv(got_c.data(), 7 * 4, r, one);  // with c: direct again
    if (Status s = comm.group_end(); !s.is_ok()) return s;
    if (got_a != a || got_b != b || got_c != c) return internal_error("self copies out of order");
    for (std::size_t i = 0; i < 3; ++i) {
      if (from_peer[i] != stamp(1 - r, 3, i)) return internal_error("peer data wrong");
    }
    // A mismatch on the direct path: the receive's rank names itself as both ends.
    if (Status s = comm.group_start(); !s.is_ok()) return s;
    (void)comm.send(a.data(), 8, r, one);
    (void)comm.recv(got_a.data(), 12, r, one);
    return comm.group_end();
  });
  for (int r = 0; r < 2; ++r) {
    const Status& s = st[static_cast<std::size_t>(r)];
    EXPECT_EQ(s.code(), StatusCode::kCommError) << s.to_string();
    EXPECT_NE(s.message().find(detail::str_cat("rank ", r, " expects 12 bytes from rank ", r,
                                               ", which sends 8")),
              std::string::npos)
        << s.message();
  }
}

TEST(Loopback, MismatchedCollectiveSizesAreConfigMismatchEverywhere) {
  auto st = run_ranks(3, [&](int r, Communicator& comm) -> Status {
    std::vector<char> send(16), recv(64);
    return comm.all_gather(send.data(), recv.data(), r == 1 ? 8 : 16, nullptr);
  });
  for (const Status& s : st) EXPECT_EQ(s.code(), StatusCode::kConfigMismatch) << s.to_string();
}

TEST(Loopback, ArgumentErrors) {
  auto comms = create_loopback_group(2);
  ASSERT_TRUE(comms.is_ok());
  Communicator& c = *(*comms)[0];
  char b = 0;
  Status s = c.send(&b, 1, 5, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("peer"), std::string::npos);
  std::vector<std::size_t> one(1, 0);
  s = c.all_to_all_v(&b, one, one, &b, one, one, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("counts/offsets"), std::string::npos);
  EXPECT_EQ(c.group_end().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(create_loopback_group(0).status().code(), StatusCode::kInvalidArgument);
  float f = 0;
  s = c.all_reduce_sum(&f, &f, 1, DType::kBFloat16, nullptr);
  EXPECT_NE(s.message().find("dtype"), std::string::npos);
}

TEST(PeerCopy, BadDevicesAreRejectedBeforeAnythingIsSetUp) {
  // Holds with or without GPUs: no device list is valid if empty, none past the visible count.
  EXPECT_EQ(create_peer_copy_group(std::vector<int>{}).status().code(),
            built_with_cuda() ? StatusCode::kInvalidArgument : StatusCode::kUnsupported);
  const int n = cuda_device_count();
  const std::vector<int> devices = {0, n};  // device n does not exist
  const Status s = create_peer_copy_group(devices).status();
  if (!built_with_cuda()) {
    EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.to_string();
    return;
  }
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_NE(s.message().find(n == 0 ? "devices[0]" : "devices[1]"), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("not a visible CUDA device"), std::string::npos) << s.message();
  // A wait bound of zero is refused before the devices are looked at.
  const Status t =
      create_peer_copy_group(devices, LoopbackOptions{std::chrono::milliseconds(0)}).status();
  EXPECT_EQ(t.code(), StatusCode::kInvalidArgument) << t.to_string();
  EXPECT_NE(t.message().find("options.timeout"), std::string::npos) << t.message();
}

}  // namespace
}  // namespace ulysses
