// ulysses: what shape an all_to_all_v has, for communicators that have a faster call for some
// shapes (NCCL's ncclAlltoAll takes one count for every peer at offsets peer · count). Host-only.
#pragma once

#include <cstddef>
#include <span>

namespace ulysses::comm {

/// The common per-peer byte count when every peer's message has the same nonzero size and sits at
/// peer · size on both sides, in distinct buffers; 0 otherwise (the spans have one entry per peer).
inline std::size_t uniform_exchange_bytes(const void* send,
                                          std::span<const std::size_t> send_counts,
                                          std::span<const std::size_t> send_offsets,
                                          const void* recv,
                                          std::span<const std::size_t> recv_counts,
                                          std::span<const std::size_t> recv_offsets) {
  if (send_counts.empty() || send == recv) return 0;
  const std::size_t c = send_counts[0];
  for (std::size_t p = 0; p < send_counts.size(); ++p) {
    if (send_counts[p] != c || recv_counts[p] != c || send_offsets[p] != p * c ||
        recv_offsets[p] != p * c) {
      return 0;
    }
  }
  return c;
}

}  // namespace ulysses::comm
