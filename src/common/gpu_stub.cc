// Built instead of the CUDA backends when ulysses is built without CUDA: every factory of gpu.h
// returns kUnsupported, and no device is visible.
#include "common/check.h"
#include "ulysses/gpu.h"

namespace ulysses {
namespace {
Status no_cuda(std::string_view api) {
  return unsupported(detail::str_cat(api,
                                     ": this build of ulysses has no CUDA backends (got a "
                                     "host-only build, expected one configured with CUDA)"));
}
}  // namespace

int cuda_device_count() { return 0; }
bool built_with_cuda() { return false; }
int cudnn_runtime_version() { return 0; }

Result<NcclUniqueId> create_nccl_unique_id() { return no_cuda("ulysses::create_nccl_unique_id"); }
Result<std::unique_ptr<Communicator>> create_nccl_communicator(const NcclUniqueId&, int, int, int,
                                                               NcclOptions) {
  return no_cuda("ulysses::create_nccl_communicator");
}
Result<std::unique_ptr<Communicator>> wrap_nccl_communicator(ncclComm*, int, NcclOptions) {
  return no_cuda("ulysses::wrap_nccl_communicator");
}
Result<std::unique_ptr<Communicator>> split_nccl_communicator(Communicator&, const Mesh&,
                                                              MeshAxis) {
  return no_cuda("ulysses::split_nccl_communicator");
}
Status synchronize(Communicator& comm, Stream) {
  if (comm.device().is_host()) return Status::ok();
  return no_cuda("ulysses::synchronize");
}
Result<std::vector<std::unique_ptr<Communicator>>> create_device_loopback_group(int, int,
                                                                                LoopbackOptions) {
  return no_cuda("ulysses::create_device_loopback_group");
}
Result<std::vector<std::unique_ptr<Communicator>>> create_peer_copy_group(std::span<const int>,
                                                                          LoopbackOptions) {
  return no_cuda("ulysses::create_peer_copy_group");
}
Result<std::unique_ptr<LocalAttention>> create_cudnn_attention(int, CudnnOptions) {
  return no_cuda("ulysses::create_cudnn_attention");
}
Result<CudnnGraphStats> cudnn_graph_stats(const LocalAttention&) {
  return no_cuda("ulysses::cudnn_graph_stats");
}

}  // namespace ulysses
