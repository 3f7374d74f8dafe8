// The C API (include/ulysses/c_api.h) over the C++ one: handles wrap the C++ objects, structs are
// translated field by field, and every Status becomes a code plus this thread's last error. No C++
// exception crosses the boundary (allocation failures become ULYSSES_OUT_OF_MEMORY).
#include "ulysses/c_api.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "common/check.h"
#include "ulysses/gpu.h"
#include "ulysses/ulysses.h"

struct ulysses_comm {
  std::unique_ptr<ulysses::Communicator> comm;
};
struct ulysses_kernel {
  std::unique_ptr<ulysses::LocalAttention> kernel;
};
struct ulysses_plan {
  std::unique_ptr<ulysses::DistributedAttention> plan;
};

namespace ulysses {
namespace {

using detail::arg_error;
using detail::str_cat;

thread_local std::string g_last_error;

int report(const Status& s) {
  g_last_error = s.is_ok() ? std::string() : s.to_string();
  return static_cast<int>(s.code());
}

// Runs `body` (returning Status) with C++ exceptions turned into codes.
template <typename F>
int guarded(F&& body) {
  try {
    return report(body());
  } catch (const std::bad_alloc&) {
    return report(Status(StatusCode::kOutOfMemory, "ulysses C API: out of host memory"));
  } catch (const std::exception& e) {
    return report(internal_error(str_cat("ulysses C API: unexpected exception: ", e.what())));
  }
}

Status null_arg(std::string_view api, std::string_view name) {
  return arg_error(api, name, "is NULL", "NULL", "a valid pointer");
}

Result<TensorView> to_view(const ulysses_tensor& t, std::string_view api, std::string_view name) {
  TensorView v;
  if (t.ndim == 0 && t.data == nullptr) return v;  // absent
  if (t.ndim < 1 || t.ndim > kMaxDims) {
    return arg_error(api, name, "has an unsupported number of dimensions", t.ndim,
                     str_cat("1..", kMaxDims));
  }
  if (t.dtype < 0 || t.dtype > static_cast<int>(DType::kFloat8E5M2)) {
    return arg_error(api, name, "has an unknown dtype", t.dtype, "0..5 (ulysses::DType)");
  }
  v.data = t.data;
  v.dtype = static_cast<DType>(t.dtype);
  v.device = t.device < 0 ? Device::host() : Device::cuda(t.device);
  v.ndim = t.ndim;
  for (int d = 0; d < t.ndim; ++d) {
    v.shape[static_cast<std::size_t>(d)] = t.shape[d];
    v.strides[static_cast<std::size_t>(d)] = t.strides[d];
  }
  return v;
}

PlanConfig to_config(const ulysses_plan_config& c) {
  PlanConfig p;
  p.attention.num_heads_q = c.num_heads_q;
  p.attention.num_heads_kv = c.num_heads_kv;
  p.attention.head_dim = c.head_dim;
  // 0: the default; anything else is the caller's (validate() refuses non-positive or non-finite).
  if (c.softmax_scale != 0.0f) p.attention.softmax_scale = c.softmax_scale;
  p.attention.causal = c.causal != 0;
  p.attention.window_left = c.window_left;
  p.attention.window_right = c.window_right;
  p.attention.sinks = c.sinks != 0;
  // Out-of-range enum values are kept as they are: validate() names them.
  p.parallel.strategy = static_cast<Strategy>(c.strategy);
  p.parallel.cp = c.cp;
  p.parallel.ulysses_degree = c.ulysses_degree;
  p.layout = static_cast<Layout>(c.layout);
  p.dtype = static_cast<DType>(c.dtype);
  p.batch = c.batch;
  p.seqlen = c.seqlen;
  p.training = c.training != 0;
  p.overlap_chunks = c.overlap_chunks;
  p.backward_keeps_saved = c.backward_keeps_saved != 0;
  p.saved_activations = static_cast<SavedActivations>(c.saved_activations);
  p.chunks_in_flight = c.chunks_in_flight;
  p.payload = static_cast<Payload>(c.payload);
  return p;
}

std::span<const std::int32_t> cu_span(const std::int32_t* cu, std::int64_t n) {
  if (cu == nullptr || n <= 0) return {};
  return {cu, static_cast<std::size_t>(n)};
}

// Hands a group's communicators to the caller's array, one handle each.
Status give_group(Result<std::vector<std::unique_ptr<Communicator>>> group, ulysses_comm** out) {
  if (!group.is_ok()) return group.status();
  auto& comms = group.value();
  std::vector<ulysses_comm*> handles;
  handles.reserve(comms.size());
  for (auto& c : comms) handles.push_back(new ulysses_comm{std::move(c)});
  std::copy(handles.begin(), handles.end(), out);
  return Status::ok();
}

constexpr std::string_view kGroupApi = "ulysses_*_group";
constexpr std::string_view kPlanApi = "ulysses_plan";

}  // namespace
}  // namespace ulysses

using namespace ulysses;  // NOLINT: the C entry points below are the only definitions here

extern "C" {

int ulysses_c_api_version(void) { return ULYSSES_C_API_VERSION; }
const char* ulysses_last_error(void) { return g_last_error.c_str(); }
int ulysses_cuda_device_count(void) { return cuda_device_count(); }
int ulysses_built_with_cuda(void) { return built_with_cuda() ? 1 : 0; }
int ulysses_cudnn_version(void) { return cudnn_runtime_version(); }

int ulysses_loopback_group(int size, ulysses_comm** comms) {
  return guarded([&]() -> Status {
    if (comms == nullptr) return null_arg(kGroupApi, "comms");
    return give_group(create_loopback_group(size), comms);
  });
}

int ulysses_device_loopback_group(int size, int device, ulysses_comm** comms) {
  return guarded([&]() -> Status {
    if (comms == nullptr) return null_arg(kGroupApi, "comms");
    return give_group(create_device_loopback_group(size, device), comms);
  });
}

int ulysses_peer_copy_group(const int* devices, int size, ulysses_comm** comms) {
  return guarded([&]() -> Status {
    if (comms == nullptr) return null_arg(kGroupApi, "comms");
    if (devices == nullptr) return null_arg(kGroupApi, "devices");
    if (size < 1) return arg_error(kGroupApi, "size", "is out of range", size, ">= 1");
    return give_group(
        create_peer_copy_group(std::span<const int>(devices, static_cast<std::size_t>(size))),
        comms);
  });
}

int ulysses_nccl_unique_id(uint8_t id[128]) {
  return guarded([&]() -> Status {
    if (id == nullptr) return null_arg("ulysses_nccl_unique_id", "id");
    ULYSSES_ASSIGN_OR_RETURN(NcclUniqueId uid, create_nccl_unique_id());
    std::memcpy(id, uid.bytes.data(), uid.bytes.size());
    return Status::ok();
  });
}

int ulysses_nccl_communicator(const uint8_t id[128], int size, int rank, int device,
                              int64_t timeout_ms, ulysses_comm** comm) {
  return guarded([&]() -> Status {
    constexpr std::string_view api = "ulysses_nccl_communicator";
    if (id == nullptr) return null_arg(api, "id");
    if (comm == nullptr) return null_arg(api, "comm");
    NcclUniqueId uid;
    std::memcpy(uid.bytes.data(), id, uid.bytes.size());
    NcclOptions options;
    if (timeout_ms > 0) options.timeout = std::chrono::milliseconds(timeout_ms);
    ULYSSES_ASSIGN_OR_RETURN(auto c, create_nccl_communicator(uid, size, rank, device, options));
    *comm = new ulysses_comm{std::move(c)};
    return Status::ok();
  });
}

int ulysses_comm_rank(const ulysses_comm* comm) { return comm ? comm->comm->rank() : -1; }
int ulysses_comm_size(const ulysses_comm* comm) { return comm ? comm->comm->size() : -1; }
int ulysses_comm_device(const ulysses_comm* comm) {
  if (comm == nullptr) return -1;
  const Device d = comm->comm->device();
  return d.is_host() ? -1 : d.index;
}

int ulysses_comm_synchronize(ulysses_comm* comm, void* stream) {
  return guarded([&]() -> Status {
    if (comm == nullptr) return null_arg("ulysses_comm_synchronize", "comm");
    return synchronize(*comm->comm, static_cast<Stream>(stream));
  });
}

void ulysses_comm_destroy(ulysses_comm* comm) { delete comm; }

int ulysses_reference_kernel(ulysses_kernel** kernel) {
  return guarded([&]() -> Status {
    if (kernel == nullptr) return null_arg("ulysses_reference_kernel", "kernel");
    *kernel = new ulysses_kernel{make_reference_attention()};
    return Status::ok();
  });
}

int ulysses_cudnn_kernel(int device, int deterministic, ulysses_kernel** kernel) {
  return guarded([&]() -> Status {
    if (kernel == nullptr) return null_arg("ulysses_cudnn_kernel", "kernel");
    ULYSSES_ASSIGN_OR_RETURN(auto k,
                             create_cudnn_attention(device, {.deterministic = deterministic != 0}));
    *kernel = new ulysses_kernel{std::move(k)};
    return Status::ok();
  });
}

void ulysses_kernel_destroy(ulysses_kernel* kernel) { delete kernel; }

void ulysses_plan_config_init(ulysses_plan_config* config) {
  if (config == nullptr) return;
  const PlanConfig p;
  *config = ulysses_plan_config{};
  config->num_heads_q = p.attention.num_heads_q;
  config->num_heads_kv = p.attention.num_heads_kv;
  config->head_dim = p.attention.head_dim;
  config->softmax_scale = 0.0f;
  config->causal = p.attention.causal ? 1 : 0;
  config->window_left = p.attention.window_left;
  config->window_right = p.attention.window_right;
  config->sinks = p.attention.sinks ? 1 : 0;
  config->strategy = static_cast<int32_t>(p.parallel.strategy);
  config->cp = p.parallel.cp;
  config->ulysses_degree = p.parallel.ulysses_degree;
  config->layout = static_cast<int32_t>(p.layout);
  config->dtype = static_cast<int32_t>(p.dtype);
  config->batch = p.batch;
  config->seqlen = p.seqlen;
  config->training = p.training ? 1 : 0;
  config->overlap_chunks = p.overlap_chunks;
  config->backward_keeps_saved = p.backward_keeps_saved ? 1 : 0;
  config->saved_activations = static_cast<int32_t>(p.saved_activations);
  config->chunks_in_flight = p.chunks_in_flight;
  config->payload = static_cast<int32_t>(p.payload);
}

int ulysses_plan_create(const ulysses_plan_config* config, ulysses_comm* comm,
                        ulysses_kernel* kernel, ulysses_plan** plan) {
  return guarded([&]() -> Status {
    constexpr std::string_view api = "ulysses_plan_create";
    if (config == nullptr) return null_arg(api, "config");
    if (comm == nullptr) return null_arg(api, "comm");
    if (kernel == nullptr) return null_arg(api, "kernel");
    if (plan == nullptr) return null_arg(api, "plan");
    ULYSSES_ASSIGN_OR_RETURN(
        auto p, DistributedAttention::create(to_config(*config), *comm->comm, *kernel->kernel));
    *plan = new ulysses_plan{std::move(p)};
    return Status::ok();
  });
}

size_t ulysses_plan_workspace_bytes(const ulysses_plan* plan) {
  return plan ? plan->plan->workspace_bytes() : 0;
}
size_t ulysses_plan_saved_bytes(const ulysses_plan* plan) {
  return plan ? plan->plan->saved_bytes() : 0;
}

int ulysses_plan_forward(ulysses_plan* plan, const ulysses_forward_args* args, void* stream) {
  return guarded([&]() -> Status {
    constexpr std::string_view api = "ulysses_plan_forward";
    if (plan == nullptr) return null_arg(api, "plan");
    if (args == nullptr) return null_arg(api, "args");
    ForwardArgs f;
    ULYSSES_ASSIGN_OR_RETURN(f.q, to_view(args->q, api, "q"));
    ULYSSES_ASSIGN_OR_RETURN(f.k, to_view(args->k, api, "k"));
    ULYSSES_ASSIGN_OR_RETURN(f.v, to_view(args->v, api, "v"));
    ULYSSES_ASSIGN_OR_RETURN(f.sinks, to_view(args->sinks, api, "sinks"));
    ULYSSES_ASSIGN_OR_RETURN(f.o, to_view(args->o, api, "o"));
    ULYSSES_ASSIGN_OR_RETURN(f.lse, to_view(args->lse, api, "lse"));
    f.cu_seqlens = cu_span(args->cu_seqlens, args->num_cu_seqlens);
    f.cu_seqlens_device = args->cu_seqlens_device;
    f.workspace = args->workspace;
    f.saved = args->saved;
    return plan->plan->forward(f, static_cast<Stream>(stream));
  });
}

int ulysses_plan_backward(ulysses_plan* plan, const ulysses_backward_args* args, void* stream) {
  return guarded([&]() -> Status {
    constexpr std::string_view api = "ulysses_plan_backward";
    if (plan == nullptr) return null_arg(api, "plan");
    if (args == nullptr) return null_arg(api, "args");
    BackwardArgs b;
    ULYSSES_ASSIGN_OR_RETURN(b.d_o, to_view(args->d_o, api, "d_o"));
    ULYSSES_ASSIGN_OR_RETURN(b.sinks, to_view(args->sinks, api, "sinks"));
    ULYSSES_ASSIGN_OR_RETURN(b.dq, to_view(args->dq, api, "dq"));
    ULYSSES_ASSIGN_OR_RETURN(b.dk, to_view(args->dk, api, "dk"));
    ULYSSES_ASSIGN_OR_RETURN(b.dv, to_view(args->dv, api, "dv"));
    ULYSSES_ASSIGN_OR_RETURN(b.dsinks, to_view(args->dsinks, api, "dsinks"));
    ULYSSES_ASSIGN_OR_RETURN(b.q, to_view(args->q, api, "q"));
    ULYSSES_ASSIGN_OR_RETURN(b.k, to_view(args->k, api, "k"));
    ULYSSES_ASSIGN_OR_RETURN(b.v, to_view(args->v, api, "v"));
    ULYSSES_ASSIGN_OR_RETURN(b.o, to_view(args->o, api, "o"));
    b.cu_seqlens = cu_span(args->cu_seqlens, args->num_cu_seqlens);
    b.cu_seqlens_device = args->cu_seqlens_device;
    b.workspace = args->workspace;
    b.saved = args->saved;
    return plan->plan->backward(b, static_cast<Stream>(stream));
  });
}

void ulysses_plan_destroy(ulysses_plan* plan) { delete plan; }

int ulysses_shard_token_ranges(const ulysses_plan_config* config, int rank,
                               const int32_t* cu_seqlens, int64_t num_cu_seqlens, int64_t* ranges,
                               int64_t max_ranges, int64_t* num_ranges) {
  return guarded([&]() -> Status {
    constexpr std::string_view api = "ulysses_shard_token_ranges";
    if (config == nullptr) return null_arg(api, "config");
    if (num_ranges == nullptr) return null_arg(api, "num_ranges");
    const PlanConfig c = to_config(*config);
    ULYSSES_ASSIGN_OR_RETURN(auto got, shard_token_ranges(c.parallel, c.seqlen, rank,
                                                          cu_span(cu_seqlens, num_cu_seqlens)));
    *num_ranges = static_cast<int64_t>(got.size());
    if (*num_ranges > max_ranges || (ranges == nullptr && !got.empty())) {
      return arg_error(api, "max_ranges", "is too small for this rank's ranges", max_ranges,
                       str_cat(">= ", got.size()));
    }
    for (std::size_t i = 0; i < got.size(); ++i) {
      ranges[2 * i] = got[i].begin;
      ranges[2 * i + 1] = got[i].end;
    }
    return Status::ok();
  });
}

int ulysses_shard_position_ids(const ulysses_plan_config* config, int rank,
                               const int32_t* cu_seqlens, int64_t num_cu_seqlens, int32_t* ids,
                               int64_t max_ids, int64_t* num_ids) {
  return guarded([&]() -> Status {
    constexpr std::string_view api = "ulysses_shard_position_ids";
    if (config == nullptr) return null_arg(api, "config");
    if (num_ids == nullptr) return null_arg(api, "num_ids");
    const PlanConfig c = to_config(*config);
    ULYSSES_ASSIGN_OR_RETURN(auto got, shard_position_ids(c.parallel, c.seqlen, rank,
                                                          cu_span(cu_seqlens, num_cu_seqlens)));
    *num_ids = static_cast<int64_t>(got.size());
    if (*num_ids > max_ids || (ids == nullptr && !got.empty())) {
      return arg_error(api, "max_ids", "is too small for this rank's tokens", max_ids,
                       str_cat(">= ", got.size()));
    }
    std::copy(got.begin(), got.end(), ids);
    return Status::ok();
  });
}

int ulysses_packed_sequence_offsets(const ulysses_plan_config* config, const int32_t* cu_seqlens,
                                    int64_t num_cu_seqlens, int32_t* offsets) {
  return guarded([&]() -> Status {
    constexpr std::string_view api = "ulysses_packed_sequence_offsets";
    if (config == nullptr) return null_arg(api, "config");
    if (cu_seqlens == nullptr) return null_arg(api, "cu_seqlens");
    if (offsets == nullptr) return null_arg(api, "offsets");
    ULYSSES_ASSIGN_OR_RETURN(
        auto got,
        packed_sequence_offsets(to_config(*config).parallel, cu_span(cu_seqlens, num_cu_seqlens)));
    std::copy(got.begin(), got.end(), offsets);
    return Status::ok();
  });
}

}  // extern "C"
