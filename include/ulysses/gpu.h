// ulysses: CUDA backends — NCCL communicator, device loopback, cuDNN attention.
//
// Declared in every build; in a build without CUDA each factory returns kUnsupported (and
// cuda_device_count() returns 0), so callers need no #ifdef.
//
// Host-only header: no CUDA, NCCL or cuDNN include (NCCL's communicator handle is
// forward-declared).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "ulysses/attention.h"
#include "ulysses/communicator.h"
#include "ulysses/mesh.h"

struct ncclComm;  // ncclComm_t is `ncclComm*`

namespace ulysses {

/// Number of visible CUDA devices (0 without CUDA, without a driver, or without a GPU).
int cuda_device_count();

/// Whether this build has the CUDA backends.
bool built_with_cuda();

// --- NCCL
// ------------------------------------------------------------------------------------------

/// NCCL's 128-byte unique id, created on one rank and shared with the others (MPI broadcast, a
/// file, or plain memory for one process driving several GPUs).
struct NcclUniqueId {
  std::array<char, 128> bytes{};
};
Result<NcclUniqueId> create_nccl_unique_id();

struct NcclOptions {
  /// Longest any wait may take: communicator set-up, a non-blocking call that is still in progress,
  /// and synchronize(). When it expires, every communicator ulysses created or wraps is aborted and
  /// each returns kTimeout (the caller's rank) or kCommError (afterwards).
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  /// Exchanges in which every peer gets the same bytes at offsets peer · count on both sides
  /// (Ulysses' inbound Q|K|V and dO exchanges) go through NCCL's own ncclAlltoAll when the NCCL
  /// library has it (2.28 and later); false, or an older library, keeps them a group of
  /// ncclSend/ncclRecv like any other all_to_all_v. The results are the same bytes either way.
  bool native_all_to_all = true;
};

/// Creates an NCCL communicator of `size` ranks on CUDA device `device` and owns it. Every rank
/// calls this with the same id at the same time (one process per GPU under mpirun, or one thread
/// per GPU). The communicator is non-blocking (config.blocking = 0); NVLink multicast (NVLS) is
/// off.
Result<std::unique_ptr<Communicator>> create_nccl_communicator(const NcclUniqueId& id, int size,
                                                               int rank, int device,
                                                               NcclOptions options = {});

/// Wraps an NCCL communicator the caller already has (e.g. a framework's), created on CUDA device
/// `device` (kInvalidArgument names both when ncclCommCuDevice says otherwise). Not owned: never
/// destroyed by ulysses (but aborted together with the others on a timeout). Blocking or not:
/// a blocking one (PyTorch's default) issues an exchange in ~13 us of host time, where ulysses'
/// own non-blocking communicators take ~150-190 us (NCCL hands each launch to a new thread).
Result<std::unique_ptr<Communicator>> wrap_nccl_communicator(ncclComm* comm, int device,
                                                             NcclOptions options = {});

/// The sub-communicator of `parent` (an NCCL communicator over the whole mesh, or a
/// ForwardingCommunicator around one) along `axis`: the group mesh.group(axis, rank), ranked by
/// the index on that axis. Each group's first rank makes an NCCL unique id, `parent` all-gathers
/// the ids, and each member initialises from its group's (not ncclCommSplit, which handed back no
/// child on NCCL 2.28 with non-blocking communicators: docs/DESIGN.md). Collective over `parent`.
Result<std::unique_ptr<Communicator>> split_nccl_communicator(Communicator& parent,
                                                              const Mesh& mesh, MeshAxis axis);

/// Waits until the work enqueued on `stream` has finished, for at most the communicator's timeout,
/// watching for NCCL asynchronous errors (also through ForwardingCommunicator wrappers). On a
/// timeout or an error every communicator of the library is aborted (a hung peer cannot stall the
/// others forever). Host communicators return at once.
Status synchronize(Communicator& comm, Stream stream);

// --- device loopback
// -------------------------------------------------------------------------------

/// `size` virtual ranks on one GPU: buffers in device memory, data moved with device copies ordered
/// by events (no host synchronisation). Give each communicator to its own host thread, each with
/// its own stream. For testing P ranks on one GPU; not for speed.
Result<std::vector<std::unique_ptr<Communicator>>> create_device_loopback_group(
    int size, int device, LoopbackOptions options = {});

/// One process driving several GPUs without NCCL: rank r works on `devices[r]`, and every transfer
/// is a copy-engine copy from the sender's memory into the receiver's (cudaMemcpyAsync over NVLink
/// or PCIe peer access) on the receiver's stream, ordered by CUDA events both ways. The copies use
/// no SMs, so they can overlap a kernel without slowing it. Give each communicator to its own host
/// thread (ranks meet on the host to match sends and receives; waits bounded by options.timeout).
/// Every two distinct devices must have peer access (kUnsupported naming the pair otherwise); a
/// device listed twice holds two ranks.
Result<std::vector<std::unique_ptr<Communicator>>> create_peer_copy_group(
    std::span<const int> devices, LoopbackOptions options = {});

// --- cuDNN attention
// -------------------------------------------------------------------------------

struct CudnnOptions {
  /// Use cuDNN's deterministic backward (bitwise-reproducible dQ; somewhat slower).
  bool deterministic = false;
};

/// A LocalAttention running cuDNN's fused SDPA (through cudnn-frontend) on `device`: fp16/bf16,
/// head_dim a multiple of 8 up to 256, causal and sliding-window masks, GQA/MQA, sinks, packed
/// varlen (int64 ragged offsets, cuDNN >= 9.5), LSE output. Graphs are built on first use of each
/// shape and cached. Sinks never reach cuDNN: its graphs run without them, the sinks are folded
/// into O and the LSE after the forward and dSinks computed here, so sinks work on every cuDNN, at
/// close to the sink-free speed (cuDNN's own sink token was slower). A backward whose views reach
/// past element 2^31 runs in parts (cuDNN 9.19 computed wrong dQ and dK there): packed by runs of
/// whole sequences, dense by batch entries and KV heads; one sequence, or one KV head of one entry,
/// past 2^31 by itself is kUnsupported, naming it. What the running cuDNN and GPU lack
/// (e.g. packed backward past head_dim 128 before cuDNN 9.19) is kUnsupported from
/// check_support(), so a plan is refused when made.
/// One instance per rank (it owns a cuDNN handle); not thread-safe.
Result<std::unique_ptr<LocalAttention>> create_cudnn_attention(int device,
                                                               CudnnOptions options = {});

/// What a cuDNN attention kernel has built so far. Its graphs are built on first use of each shape
/// (including the probes a plan makes for its workspace size when it is created) and cached, so
/// these say why a first step, or the first packed batch of a new geometry, is slower than the
/// rest: a step that builds nothing leaves them unchanged.
struct CudnnGraphStats {
  std::int64_t graphs = 0;   ///< graphs built and cached (failed builds not counted)
  std::int64_t failed = 0;   ///< builds cuDNN refused (the call got kUnsupported)
  double build_seconds = 0;  ///< host time spent building, failed builds included
};

/// `kernel`'s graph statistics. kInvalidArgument if create_cudnn_attention() did not make it.
Result<CudnnGraphStats> cudnn_graph_stats(const LocalAttention& kernel);

/// The cuDNN library version at run time (e.g. 91900), 0 without CUDA.
int cudnn_runtime_version();

}  // namespace ulysses
