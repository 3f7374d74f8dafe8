/* ulysses: the C API, for bindings (the Python package in python/ulysses loads it with ctypes).
 *
 * The same library as the C++ API (ulysses.h), through opaque handles and plain structs:
 *
 *   ulysses_comm*   a rank's communicator: host loopback, device loopback, peer copies or NCCL
 *   ulysses_kernel* a local attention kernel: the FP64-accumulating reference or cuDNN
 *   ulysses_plan*   DistributedAttention for one rank (create once, forward/backward per step)
 *
 * Every function that can fail returns a status code (ulysses_status, the values of
 * ulysses::StatusCode; 0 is success) and leaves the message in ulysses_last_error(), which is per
 * thread. Handles are owned by the caller and destroyed with their *_destroy function; a plan keeps
 * pointers to its communicator and kernel, so both must outlive it. Shapes and strides are in
 * elements. Nothing here includes CUDA: a stream is a `void*` holding a cudaStream_t (NULL: the
 * legacy default stream; ignored on the host).
 *
 * Collective calls (plan create, forward, backward; NCCL communicator creation) follow the C++
 * rules: every rank of the group calls them in the same order, each rank from its own thread when
 * one process drives several ranks.
 */
#ifndef ULYSSES_C_API_H_
#define ULYSSES_C_API_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden visibility; these are its exported entry points. */
#if defined(__GNUC__)
#define ULYSSES_C_EXPORT __attribute__((visibility("default")))
#else
#define ULYSSES_C_EXPORT
#endif

/* Bumped when a struct below changes layout; ulysses_c_api_version() returns the library's. */
#define ULYSSES_C_API_VERSION 7

/* ulysses::StatusCode */
typedef enum {
  ULYSSES_OK = 0,
  ULYSSES_INVALID_ARGUMENT = 1,
  ULYSSES_CONFIG_MISMATCH = 2,
  ULYSSES_UNSUPPORTED = 3,
  ULYSSES_COMM_ERROR = 4,
  ULYSSES_TIMEOUT = 5,
  ULYSSES_OUT_OF_MEMORY = 6,
  ULYSSES_INTERNAL = 7,
} ulysses_status;

typedef struct ulysses_comm ulysses_comm;
typedef struct ulysses_kernel ulysses_kernel;
typedef struct ulysses_plan ulysses_plan;
typedef struct ulysses_decode ulysses_decode;

/* A non-owning strided view (ulysses::TensorView). ndim == 0 with data == NULL: absent (an
 * optional argument left out). dtype: ulysses::DType (0 fp64, 1 fp32, 2 fp16, 3 bf16, 4 fp8e4m3,
 * 5 fp8e5m2). device: -1 for host memory, else the CUDA ordinal. */
typedef struct {
  void* data;
  int32_t dtype;
  int32_t device;
  int32_t ndim;
  int64_t shape[4];
  int64_t strides[4];
} ulysses_tensor;

/* ulysses::PlanConfig, flattened (the same fields and meanings; enums as their integer values).
 * ulysses_plan_config_init() fills the C++ defaults. softmax_scale 0: 1/sqrt(head_dim). */
typedef struct {
  /* AttentionConfig */
  int32_t num_heads_q;
  int32_t num_heads_kv;
  int32_t head_dim;
  float softmax_scale;
  int32_t causal;
  int32_t window_left;
  int32_t window_right;
  int32_t sinks;
  /* ParallelConfig: strategy 0 ulysses, 1 ring, 2 hybrid, 3 allgather */
  int32_t strategy;
  int32_t cp;
  int32_t ulysses_degree;
  /* layout 0 bshd, 1 thd; dtype as in ulysses_tensor */
  int32_t layout;
  int32_t dtype;
  int64_t batch;
  int64_t seqlen;
  int32_t training;
  int32_t overlap_chunks;
  int32_t backward_keeps_saved;
  int32_t saved_activations; /* 0 heads, 1 lse */
  int32_t chunks_in_flight;
  int32_t payload; /* 0 native, 1 fp8 */
  /* ParallelConfig::packed_sharding: 0 default, 1 per_sequence, 2 stream */
  int32_t packed_sharding;
  /* AttentionConfig::head_dim_v: of V and O, 0 = head_dim (version 3) */
  int32_t head_dim_v;
} ulysses_plan_config;

/* ulysses::ForwardArgs. cu_seqlens: host int32 array of num_cu_seqlens entries (layout thd), or
 * none with num_cu_seqlens = 0; here and in every function below, a negative count or a count
 * without an array is kInvalidArgument, never read as none. */
typedef struct {
  ulysses_tensor q, k, v, sinks, o, lse;
  const int32_t* cu_seqlens;
  int64_t num_cu_seqlens;
  const int32_t* cu_seqlens_device;
  void* workspace;
  void* saved;
} ulysses_forward_args;

/* ulysses::BackwardArgs (q, k, v, o: read with saved_activations = lse only). */
typedef struct {
  ulysses_tensor d_o, sinks, dq, dk, dv, dsinks;
  const int32_t* cu_seqlens;
  int64_t num_cu_seqlens;
  const int32_t* cu_seqlens_device;
  void* workspace;
  void* saved;
  ulysses_tensor q, k, v, o;
} ulysses_backward_args;

/* ulysses::DecodeKernel */
typedef enum {
  ULYSSES_DECODE_KERNEL_AUTO = 0,
  ULYSSES_DECODE_KERNEL_LOCAL = 1,
  ULYSSES_DECODE_KERNEL_BUILT_IN = 2
} ulysses_decode_kernel;

/* ulysses::DecodeConfig, flattened (attention fields as in ulysses_plan_config).
 * ulysses_decode_config_init() fills the C++ defaults. */
typedef struct {
  int32_t num_heads_q;
  int32_t num_heads_kv;
  int32_t head_dim;
  float softmax_scale;
  int32_t causal;
  int32_t window_left;
  int32_t window_right;
  int32_t sinks;
  int32_t cp;
  int32_t dtype;
  int64_t batch;
  int64_t query_tokens;
  int64_t cache_rows;
  int32_t max_segments;
  int32_t max_splits;
  int64_t min_split_rows;
  /* AttentionConfig::head_dim_v: of V and O, 0 = head_dim (version 4) */
  int32_t head_dim_v;
  /* DecodeConfig::split_kernel: what runs the pieces, ULYSSES_DECODE_KERNEL_* (version 5) */
  int32_t split_kernel;
  /* DecodeConfig::page_size: rows per page of a paged KV cache, 0 = unpaged (version 6) */
  int64_t page_size;
  /* DecodeConfig::device_layout: nonzero = the layout is read on the device when the step runs,
   * so that a CUDA graph of a step can be replayed while the caches grow (version 7) */
  int32_t device_layout;
} ulysses_decode_config;

/* ulysses::CacheSegment: cache rows [row, row + rows) hold positions [position, position + rows).
 */
typedef struct {
  int64_t row;
  int64_t rows;
  int64_t position;
} ulysses_cache_segment;

/* ulysses::DecodeArgs. segments: host array of num_segments entries. Sequences of different
 * lengths: segment_offsets (batch + 1 host entries; sequence b's segments are
 * [segment_offsets[b], segment_offsets[b + 1])) and query_positions (batch host entries); NULL:
 * every sequence uses all segments / query_position. */
typedef struct {
  ulysses_tensor q, k_cache, v_cache, sinks, o, lse;
  const ulysses_cache_segment* segments;
  int64_t num_segments;
  int64_t query_position;
  void* workspace;
  const int64_t* segment_offsets;
  const int64_t* query_positions;
  /* Paged caches (page_size > 0; k_cache and v_cache are pools [pages, page_size, Hkv, D]): the
   * page table, batch * cache_rows / page_size host entries, and optionally the same on the device
   * (NULL: the library copies it each step) (version 6) */
  const int32_t* page_table;
  const int32_t* page_table_device;
  /* device_layout: the layout in device memory, segments [batch, max_segments, 3] of (row, rows,
   * position) (rows = 0: unused) and query_positions [batch], read when the step runs; segments,
   * segment_offsets, query_positions and page_table stay NULL (version 7) */
  const int64_t* segments_device;
  const int64_t* query_positions_device;
} ulysses_decode_args;

/* --- library ---------------------------------------------------------------------------------- */

ULYSSES_C_EXPORT int ulysses_c_api_version(void);
/* The message of this thread's last failed call ("" if none): "<CODE>: <message>". */
ULYSSES_C_EXPORT const char* ulysses_last_error(void);
/* Visible CUDA devices (0 without CUDA); whether the library was built with its CUDA backends. */
ULYSSES_C_EXPORT int ulysses_cuda_device_count(void);
ULYSSES_C_EXPORT int ulysses_built_with_cuda(void);
/* The cuDNN library version at run time (e.g. 91900), 0 without CUDA. */
ULYSSES_C_EXPORT int ulysses_cudnn_version(void);

/* --- communicators ------------------------------------------------------------------------------
 */

/* `size` host ranks that talk through shared memory (one thread per rank); comms[size] out. */
ULYSSES_C_EXPORT int ulysses_loopback_group(int size, ulysses_comm** comms);
/* `size` virtual ranks on CUDA device `device` (testing P ranks on one GPU); comms[size] out. */
ULYSSES_C_EXPORT int ulysses_device_loopback_group(int size, int device, ulysses_comm** comms);
/* Rank r on devices[r]; transfers are copy-engine copies (one process, several GPUs). */
ULYSSES_C_EXPORT int ulysses_peer_copy_group(const int* devices, int size, ulysses_comm** comms);
/* NCCL: the 128-byte unique id, created on one rank and given to every rank. */
ULYSSES_C_EXPORT int ulysses_nccl_unique_id(uint8_t id[128]);
/* An NCCL communicator that ulysses owns (non-blocking, NVLS off); collective over `size` ranks.
 * timeout_ms <= 0: the default (5 minutes). */
ULYSSES_C_EXPORT int ulysses_nccl_communicator(const uint8_t id[128], int size, int rank,
                                               int device, int64_t timeout_ms, ulysses_comm** comm);
/* Wraps an NCCL communicator the caller already has: `nccl_comm` is its ncclComm_t (e.g. PyTorch's
 * ProcessGroupNCCL's, `comm_ptr()` of the group's CUDA backend), initialised, on CUDA device
 * `device`. Not owned: destroying the handle leaves it to the caller, who keeps it alive as long as
 * the handle (and any plan made with it). A blocking communicator (PyTorch's default) issues each
 * exchange in ~13 us of host time instead of ulysses' own non-blocking ones' ~150-190 us; on a
 * timeout ulysses aborts it together with its own. timeout_ms <= 0: the default (5 minutes). */
ULYSSES_C_EXPORT int ulysses_nccl_wrap(void* nccl_comm, int device, int64_t timeout_ms,
                                       ulysses_comm** comm);
ULYSSES_C_EXPORT int ulysses_comm_rank(const ulysses_comm* comm);
ULYSSES_C_EXPORT int ulysses_comm_size(const ulysses_comm* comm);
/* -1 for a host communicator, else its CUDA device. */
ULYSSES_C_EXPORT int ulysses_comm_device(const ulysses_comm* comm);
/* Waits for the work enqueued on `stream` (bounded by the communicator's timeout; see
 * ulysses::synchronize). */
ULYSSES_C_EXPORT int ulysses_comm_synchronize(ulysses_comm* comm, void* stream);
ULYSSES_C_EXPORT void ulysses_comm_destroy(ulysses_comm* comm);

/* --- local kernels ------------------------------------------------------------------------------
 */

/* The host reference (any float dtype; for tests and the CPU path). */
ULYSSES_C_EXPORT int ulysses_reference_kernel(ulysses_kernel** kernel);
/* cuDNN SDPA on `device`; deterministic != 0: cuDNN's deterministic backward. */
ULYSSES_C_EXPORT int ulysses_cudnn_kernel(int device, int deterministic, ulysses_kernel** kernel);
/* LocalAttention::held_bytes(): memory the kernel keeps outside its callers' workspaces now;
 * ulysses_kernel_release_held() frees it in stream order on `stream`. */
ULYSSES_C_EXPORT size_t ulysses_kernel_held_bytes(const ulysses_kernel* kernel);
ULYSSES_C_EXPORT int ulysses_kernel_release_held(ulysses_kernel* kernel, void* stream);
/* cudnn_graph_stats(): the graphs a cuDNN kernel has built (first use of each shape), the builds
 * cuDNN refused, and the host seconds spent building. ULYSSES_INVALID_ARGUMENT for a kernel of
 * another kind or a NULL argument. */
ULYSSES_C_EXPORT int ulysses_kernel_cudnn_graph_stats(const ulysses_kernel* kernel, int64_t* graphs,
                                                      int64_t* failed, double* build_seconds);
ULYSSES_C_EXPORT void ulysses_kernel_destroy(ulysses_kernel* kernel);

/* --- plans --------------------------------------------------------------------------------------
 */

ULYSSES_C_EXPORT void ulysses_plan_config_init(ulysses_plan_config* config);
/* Collective: every rank of `comm` calls it with the same config. */
ULYSSES_C_EXPORT int ulysses_plan_create(const ulysses_plan_config* config, ulysses_comm* comm,
                                         ulysses_kernel* kernel, ulysses_plan** plan);
ULYSSES_C_EXPORT size_t ulysses_plan_workspace_bytes(const ulysses_plan* plan);
ULYSSES_C_EXPORT size_t ulysses_plan_saved_bytes(const ulysses_plan* plan);
/* DistributedAttention::held_bytes() (the plan's own, not its kernel's) and release_held(). */
ULYSSES_C_EXPORT size_t ulysses_plan_held_bytes(const ulysses_plan* plan);
ULYSSES_C_EXPORT int ulysses_plan_release_held(ulysses_plan* plan, void* stream);
ULYSSES_C_EXPORT int ulysses_plan_forward(ulysses_plan* plan, const ulysses_forward_args* args,
                                          void* stream);
ULYSSES_C_EXPORT int ulysses_plan_backward(ulysses_plan* plan, const ulysses_backward_args* args,
                                           void* stream);
ULYSSES_C_EXPORT void ulysses_plan_destroy(ulysses_plan* plan);

/* --- decoding against a KV cache sharded by sequence (ulysses/decode.h) ------------------------
 */

ULYSSES_C_EXPORT void ulysses_decode_config_init(ulysses_decode_config* config);
/* Collective: every rank of `comm` calls it with the same config. */
ULYSSES_C_EXPORT int ulysses_decode_create(const ulysses_decode_config* config, ulysses_comm* comm,
                                           ulysses_kernel* kernel, ulysses_decode** decode);
ULYSSES_C_EXPORT size_t ulysses_decode_workspace_bytes(const ulysses_decode* decode);
ULYSSES_C_EXPORT int ulysses_decode_forward(ulysses_decode* decode, const ulysses_decode_args* args,
                                            void* stream);
/* device_layout: waits for `stream`, reads the layout back and checks it as forward() checks a
 * host layout (DistributedDecode::check_device_layout; not inside a captured step). */
ULYSSES_C_EXPORT int ulysses_decode_check_device_layout(ulysses_decode* decode,
                                                        const ulysses_decode_args* args,
                                                        void* stream);
ULYSSES_C_EXPORT void ulysses_decode_destroy(ulysses_decode* decode);

/* --- sharding -----------------------------------------------------------------------------------
 */

/* The global token ranges [begin, end) rank `rank` holds under config's strategy, cp and
 * ulysses_degree for a sequence of config->seqlen tokens (ulysses::shard_token_ranges; cu_seqlens
 * for packed ring/hybrid batches, whose sequences are padded and cut one by one, else NULL;
 * ulysses and allgather shard a packed stream as one sequence). Writes at most max_ranges pairs
 * into ranges (begin0, end0, begin1, ...) and their count into *num_ranges; a count above
 * max_ranges is ULYSSES_INVALID_ARGUMENT naming it. */
ULYSSES_C_EXPORT int ulysses_shard_token_ranges(const ulysses_plan_config* config, int rank,
                                                const int32_t* cu_seqlens, int64_t num_cu_seqlens,
                                                int64_t* ranges, int64_t max_ranges,
                                                int64_t* num_ranges);

/* Position ids of rank `rank`'s tokens, in shard order (ulysses::shard_position_ids): global
 * positions, or with cu_seqlens the position inside each token's packed sequence (0 for padding),
 * e.g. for rotary embeddings. Writes config->seqlen / config->cp ids into ids (capacity max_ids)
 * and their count into *num_ids. */
ULYSSES_C_EXPORT int ulysses_shard_position_ids(const ulysses_plan_config* config, int rank,
                                                const int32_t* cu_seqlens, int64_t num_cu_seqlens,
                                                int32_t* ids, int64_t max_ids, int64_t* num_ids);

/* Where each packed sequence lies under config's strategy (ulysses::packed_sequence_offsets): ring
 * and hybrid cut per sequence (packed_sharding 0 or 1) pad every sequence to a multiple of 2 x ring
 * size. Writes num_cu_seqlens offsets. */
ULYSSES_C_EXPORT int ulysses_packed_sequence_offsets(const ulysses_plan_config* config,
                                                     const int32_t* cu_seqlens,
                                                     int64_t num_cu_seqlens, int32_t* offsets);

/* The attention work of each rank (ulysses::attention_pairs_by_rank): the (query, key) pairs its
 * calls leave visible under config's masks, for config->seqlen tokens laid out by config's strategy
 * (cu_seqlens: a packed batch, else NULL and one sequence). Writes config->cp entries. */
ULYSSES_C_EXPORT int ulysses_attention_pairs_by_rank(const ulysses_plan_config* config,
                                                     const int32_t* cu_seqlens,
                                                     int64_t num_cu_seqlens, double* pairs);

/* An order of a packed batch's sequences that evens out the ranks' work on the packed stream
 * layouts (ulysses::balance_packed_sequences): writes num_cu_seqlens - 1 sequence indices into
 * order (order[k]: the sequence placed k-th) and the reordered batch's num_cu_seqlens offsets. */
ULYSSES_C_EXPORT int ulysses_balance_packed_sequences(const ulysses_plan_config* config,
                                                      const int32_t* cu_seqlens,
                                                      int64_t num_cu_seqlens, int32_t* order,
                                                      int32_t* reordered_cu_seqlens);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* ULYSSES_C_API_H_ */
