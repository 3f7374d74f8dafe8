// ulysses: split-KV attention for a few query rows against long key runs (flash-decoding).
//
// One launch runs every piece ("slot") of a decode step: slot i attends the query tokens of its
// sequence to kv_len consecutive cache rows, for every KV head, and writes a normalised partial O
// and its LSE (natural log) for each query row (token t, query head h g + jj of KV head h), which
// the caller merges by log-sum-exp. GQA is folded: the g query heads of a KV head read its keys
// once. A CTA takes 16 query rows of one (slot, KV head) on tensor cores (mma.sync; rows past the
// last are padding; 8 rows, transposed, when a KV head has at most 8) and streams the slot's keys
// through shared memory; rows that see no key get O = 0 and LSE = -inf.
//
// On CUDA devices: bf16 / fp16 only; head_dim and head_dim_v multiples of 16 up to 256; K and V
// rows 16-byte aligned (split_kv_aligned). On the host (loopback ranks, tests): every dtype and
// width, in FP64 arithmetic. The cache may be paged (vLLM-style page tables): each slot's rows are
// then looked up page by page (a tile of 16 rows at once where pages are multiples of 16 rows). Raw
// pointers and strides in elements; no NCCL or cuDNN inside.
#pragma once

#include <cstdint>
#include <limits>
#include <string>

#include "kernels/decode_pieces.h"
#include "ulysses/status.h"
#include "ulysses/types.h"

namespace ulysses::kernels {

/// Where one kind of slot writes: row (slot s of the kind, KV head h, token t, query head h g + jj)
/// goes to o[s o_slot + h o_head + t o_token + jj o_row .. + head_dim_v) and lse[s l_slot + h
/// l_head
/// + t l_token + jj l_row].
struct SlotOutput {
  void* o = nullptr;  // the kernel's dtype
  float* lse = nullptr;
  std::int64_t o_slot = 0, o_head = 0, o_token = 0, o_row = 0;
  std::int64_t l_slot = 0, l_head = 0, l_token = 0, l_row = 0;
};

struct SplitKvArgs {
  DType dtype = DType::kBFloat16;  // of q, k, v and o
  int heads_q = 0, heads_kv = 0, head_dim = 0, head_dim_v = 0;
  int tokens = 1;           // query tokens per sequence
  float scale = 1.0f;       // softmax scale
  const void* q = nullptr;  // [batch, tokens, heads_q, head_dim], head_dim contiguous
  std::int64_t q_batch = 0, q_token = 0, q_head = 0;
  const void* k = nullptr;  // row r, head h at k + r k_row + h k_head (head_dim contiguous)
  std::int64_t k_row = 0, k_head = 0;
  const void* v = nullptr;  // the same, head_dim_v wide
  std::int64_t v_row = 0, v_head = 0;
  /// Rows of k and v (every row that may be read: [0, rows)), or 0 if unknown. With it, from
  /// Hopper on, tiles of 16 rows arrive as tensor copies (TMA), which may read rows next to a
  /// slot's (never outside [0, rows)) and then ignore them; without it, or with more than 2^31 - 1
  /// rows, every row of a slot is copied on its own.
  std::int64_t rows = 0;
  /// Device table of slots, 5 rows of `slots` int32: first cache row, rows, sequence, and the low
  /// and high 32 bits of delta = position of query token 0 minus position of the first row.
  const std::int32_t* table = nullptr;
  /// Unpaged: a slot's first cache row is b seq_pitch + r, r counted in its sequence b's own rows.
  /// Tiles of 16 rows start at multiples of 16 of r (paged: of the row in the sequence's pages),
  /// so that a step's bits depend neither on where sequences lie nor on paging.
  std::int64_t seq_pitch = 0;
  /// Paged cache (page_size > 0): a slot's first cache row counts in its sequence b's own rows, and
  /// row r of sequence b is row pages[b page_stride + r / page_size] page_pitch + r % page_size of
  /// k and v. page_size = 0: rows of k and v as the table gives them.
  const std::int32_t* pages = nullptr;
  int page_size = 0;
  std::int64_t page_stride = 0, page_pitch = 0;
  int slots = 0;
  /// Slots [0, masked_from) see every key (no mask, output `open`); slots from masked_from on keep
  /// key j for token t only where d = delta + t - j satisfies (window_right < 0 or d >=
  /// -window_right) and (window_left < 0 or d <= window_left) (output `edge`, slot index s -
  /// masked_from).
  int masked_from = 0;
  std::int64_t window_left = -1, window_right = -1;
  SlotOutput open, edge;
};

/// Empty when split_kv_attention() can run this dtype and these head widths on a CUDA device; else
/// why not. (The host runs every dtype and width.)
std::string split_kv_unsupported(DType dtype, int head_dim, int head_dim_v);

/// Empty when CUDA device `device` has the shared memory per block that the kernel needs for these
/// head widths (its rings are deeper from Hopper on: split_kv_layout.h); else why not.
std::string split_kv_device_unsupported(int head_dim, int head_dim_v, int device);

/// The same for a GPU of compute capability `cc_major` that allows `optin_bytes` of shared memory
/// per block (what split_kv_device_unsupported() asks the device); `device` names it.
std::string split_kv_shared_memory_unsupported(int head_dim, int head_dim_v, int cc_major,
                                               int optin_bytes, int device);

/// DecodeConfig::split_kernel = auto with the cuDNN backend: the most keys a rank may read in one
/// step for the built-in kernel rather than cuDNN to run it, on a device of `bytes_per_s` peak
/// memory bandwidth (0: unknown). Every step where that is at most 4 TB/s: on an H100 (3.35 TB/s)
/// the built-in kernel took 2-18% less GPU time than cuDNN in every shape measured, 128k to 1M
/// keys. 262144 above, or where unknown: on an H200 (4.8 TB/s) cuDNN was 4-5% faster at 512k and
/// 1M keys for one sequence (docs/PERF.md, "auto's threshold"). No other GPU was measured: the
/// 4 TB/s line lies between the two.
inline constexpr double kSplitKvAutoAllBytesPerS = 4e12;
inline constexpr std::int64_t kSplitKvAutoKeys = 262144;
constexpr std::int64_t split_kv_auto_keys_for(double bytes_per_s) {
  return bytes_per_s > 0 && bytes_per_s <= kSplitKvAutoAllBytesPerS
             ? std::numeric_limits<std::int64_t>::max()
             : kSplitKvAutoKeys;
}
/// The same for CUDA device `device`, asked for its memory clock and bus width.
std::int64_t split_kv_auto_keys(int device);

/// Whether a base pointer and row / head strides (elements) allow the kernel's 16-byte loads.
bool split_kv_aligned(const void* base, DType dtype, std::int64_t row_stride,
                      std::int64_t head_stride);

/// Runs the slots: enqueued on `stream` where `device` is a CUDA device (builds without CUDA
/// return kUnsupported), at once on the host.
Status split_kv_attention(const SplitKvArgs& args, Device device, Stream stream);

/// Writes a decode step's slot table from the layout in device memory (DecodeSlotTableArgs, read
/// when the work runs: a CUDA graph replay reads the layout of that moment). Enqueued on `stream`
/// where `device` is a CUDA device, at once on the host.
Status decode_slot_table(const DecodeSlotTableArgs& args, Device device, Stream stream);

namespace host {
Status split_kv_attention(const SplitKvArgs& args);
Status decode_slot_table(const DecodeSlotTableArgs& args);
}  // namespace host
namespace cuda {
Status split_kv_attention(const SplitKvArgs& args, Stream stream);
Status decode_slot_table(const DecodeSlotTableArgs& args, Stream stream);
}  // namespace cuda

}  // namespace ulysses::kernels
