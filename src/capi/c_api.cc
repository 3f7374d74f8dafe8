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
struct ulysses_decode {
  std::unique_ptr<ulysses::DistributedDecode> decode;
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

// The attention fields both config structs share.
template <typename C>
AttentionConfig to_attention(const C& c) {
  AttentionConfig a;
  a.num_heads_q = c.num_heads_q;
  a.num_heads_kv = c.num_heads_kv;
  a.head_dim = c.head_dim;
  // 0: the default; anything else is the caller's (validate() refuses non-positive or non-finite).
  if (c.softmax_scale != 0.0f) a.softmax_scale = c.softmax_scale;
  a.causal = c.causal != 0;
  a.window_left = c.window_left;
  a.window_right = c.window_right;
  a.sinks = c.sinks != 0;
  return a;
}

template <typename C>
void from_attention(const AttentionConfig& a, C* c) {
  c->num_heads_q = a.num_heads_q;
  c->num_heads_kv = a.num_heads_kv;
  c->head_dim = a.head_dim;
  c->softmax_scale = 0.0f;
  c->causal = a.causal ? 1 : 0;
  c->window_left = a.window_left;
  c->window_right = a.window_right;
  c->sinks = a.sinks ? 1 : 0;
}

DecodeConfig to_decode_config(const ulysses_decode_config& c) {
  DecodeConfig d;
  d.attention = to_attention(c);
  d.cp = c.cp;
  d.dtype = static_cast<DType>(c.dtype);
  d.batch = c.batch;
  d.query_tokens = c.query_tokens;
  d.cache_rows = c.cache_rows;
  d.max_segments = c.max_segments;
  d.max_splits = c.max_splits;
  d.min_split_rows = c.min_split_rows;
  d.attention.head_dim_v = c.head_dim_v;
  // Out-of-range values are kept: validate() names them.
  d.split_kernel = static_cast<DecodeKernel>(c.split_kernel);
  d.page_size = c.page_size;
  d.device_layout = c.device_layout != 0;
  return d;
}

PlanConfig to_config(const ulysses_plan_config& c) {
  PlanConfig p;
  p.attention = to_attention(c);
  // Out-of-range enum values are kept as they are: validate() names them.
  p.parallel.strategy = static_cast<Strategy>(c.strategy);
  p.parallel.cp = c.cp;
  p.parallel.ulysses_degree = c.ulysses_degree;
  p.parallel.packed_sharding = static_cast<PackedSharding>(c.packed_sharding);
  p.attention.head_dim_v = c.head_dim_v;
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

// cu_seqlens and its count as a span: none (a count of 0), or that many entries. A negative count,
// or entries without an array, is refused by name rather than read as none.
Result<std::span<const std::int32_t>> cu_span(const std::int32_t* cu, std::int64_t n,
                                              std::string_view api) {
  if (n < 0) return arg_error(api, "num_cu_seqlens", "is negative", n, ">= 0");
  if (n == 0) return std::span<const std::int32_t>{};
  if (cu == nullptr) {
    return arg_error(api, "cu_seqlens", "is NULL", "NULL",
                     str_cat("an array of num_cu_seqlens = ", n, " entries"));
  }
  return std::span<const std::int32_t>{cu, static_cast<std::size_t>(n)};
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

// The C API's timeout argument: <= 0 keeps NcclOptions' default.
NcclOptions nccl_options(int64_t timeout_ms) {
  NcclOptions options;
  if (timeout_ms > 0) options.timeout = std::chrono::milliseconds(timeout_ms);
  return options;
}

}  // namespace
}  // namespace ulysses

using namespace ulysses;  // NOLINT: the C entry points below are the only definitions here

namespace {

// The C++ view of a decode step's C arguments; `segments` holds the copied host segments.
Status to_decode_args(const DistributedDecode& decode, const ulysses_decode_args& args,
                      std::string_view api, DecodeArgs& a, std::vector<CacheSegment>& segments) {
  if (args.num_segments < 0 || (args.num_segments > 0 && args.segments == nullptr)) {
    return arg_error(
        api, "segments", "does not hold num_segments entries",
        str_cat(args.num_segments, " entries at ", args.segments ? "a pointer" : "NULL"),
        "a host array of num_segments >= 0 entries");
  }
  ULYSSES_ASSIGN_OR_RETURN(a.q, to_view(args.q, api, "q"));
  ULYSSES_ASSIGN_OR_RETURN(a.k_cache, to_view(args.k_cache, api, "k_cache"));
  ULYSSES_ASSIGN_OR_RETURN(a.v_cache, to_view(args.v_cache, api, "v_cache"));
  ULYSSES_ASSIGN_OR_RETURN(a.sinks, to_view(args.sinks, api, "sinks"));
  ULYSSES_ASSIGN_OR_RETURN(a.o, to_view(args.o, api, "o"));
  ULYSSES_ASSIGN_OR_RETURN(a.lse, to_view(args.lse, api, "lse"));
  // The C struct has the C++ one's layout in spirit only: copy the fields.
  segments.resize(static_cast<std::size_t>(args.num_segments));
  for (std::size_t i = 0; i < segments.size(); ++i) {
    segments[i] = {args.segments[i].row, args.segments[i].rows, args.segments[i].position};
  }
  a.segments = segments;
  a.query_position = args.query_position;
  a.workspace = args.workspace;
  const DecodeConfig& c = decode.config();
  const auto batch = static_cast<std::size_t>(c.batch);
  if (args.segment_offsets != nullptr) {
    a.segment_offsets = std::span<const std::int64_t>(args.segment_offsets, batch + 1);
  }
  if (args.query_positions != nullptr) {
    a.query_positions = std::span<const std::int64_t>(args.query_positions, batch);
  }
  // A plan's config is valid: page_size > 0 divides cache_rows. (Unpaged, a table given is
  // passed on as one entry, which forward() refuses.)
  if (args.page_table != nullptr) {
    a.page_table = std::span<const std::int32_t>(
        args.page_table,
        c.page_size > 0 ? batch * static_cast<std::size_t>(c.cache_rows / c.page_size) : 1);
  }
  a.page_table_device = args.page_table_device;
  a.segments_device = args.segments_device;
  a.query_positions_device = args.query_positions_device;
  return Status::ok();
}

// A decode step's arguments checked and converted, then `call(plan, args)`.
template <typename Call>
int decode_call(ulysses_decode* decode, const ulysses_decode_args* args, std::string_view api,
                Call call) {
  return guarded([&]() -> Status {
    if (decode == nullptr) return null_arg(api, "decode");
    if (args == nullptr) return null_arg(api, "args");
    DecodeArgs a;
    std::vector<CacheSegment> segments;
    ULYSSES_RETURN_IF_ERROR(to_decode_args(*decode->decode, *args, api, a, segments));
    return call(*decode->decode, a);
  });
}

}  // namespace

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
    ULYSSES_ASSIGN_OR_RETURN(
        auto c, create_nccl_communicator(uid, size, rank, device, nccl_options(timeout_ms)));
    *comm = new ulysses_comm{std::move(c)};
    return Status::ok();
  });
}

int ulysses_nccl_wrap(void* nccl_comm, int device, int64_t timeout_ms, ulysses_comm** comm) {
  return guarded([&]() -> Status {
    constexpr std::string_view api = "ulysses_nccl_wrap";
    if (nccl_comm == nullptr) return null_arg(api, "nccl_comm");
    if (comm == nullptr) return null_arg(api, "comm");
    ULYSSES_ASSIGN_OR_RETURN(auto c, wrap_nccl_communicator(static_cast<ncclComm*>(nccl_comm),
                                                            device, nccl_options(timeout_ms)));
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

size_t ulysses_kernel_held_bytes(const ulysses_kernel* kernel) {
  return kernel ? kernel->kernel->held_bytes() : 0;
}
int ulysses_kernel_release_held(ulysses_kernel* kernel, void* stream) {
  return guarded([&]() -> Status {
    if (kernel == nullptr) return null_arg("ulysses_kernel_release_held", "kernel");
    return kernel->kernel->release_held(static_cast<Stream>(stream));
  });
}

int ulysses_kernel_cudnn_graph_stats(const ulysses_kernel* kernel, int64_t* graphs, int64_t* failed,
                                     double* build_seconds) {
  return guarded([&]() -> Status {
    constexpr std::string_view api = "ulysses_kernel_cudnn_graph_stats";
    if (kernel == nullptr) return null_arg(api, "kernel");
    if (graphs == nullptr) return null_arg(api, "graphs");
    if (failed == nullptr) return null_arg(api, "failed");
    if (build_seconds == nullptr) return null_arg(api, "build_seconds");
    ULYSSES_ASSIGN_OR_RETURN(const CudnnGraphStats stats, cudnn_graph_stats(*kernel->kernel));
    *graphs = stats.graphs;
    *failed = stats.failed;
    *build_seconds = stats.build_seconds;
    return Status::ok();
  });
}

void ulysses_kernel_destroy(ulysses_kernel* kernel) { delete kernel; }

void ulysses_plan_config_init(ulysses_plan_config* config) {
  if (config == nullptr) return;
  const PlanConfig p;
  *config = ulysses_plan_config{};
  from_attention(p.attention, config);
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
  config->packed_sharding = static_cast<int32_t>(p.parallel.packed_sharding);
  config->head_dim_v = p.attention.head_dim_v;
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
size_t ulysses_plan_held_bytes(const ulysses_plan* plan) {
  return plan ? plan->plan->held_bytes() : 0;
}
int ulysses_plan_release_held(ulysses_plan* plan, void* stream) {
  return guarded([&]() -> Status {
    if (plan == nullptr) return null_arg("ulysses_plan_release_held", "plan");
    return plan->plan->release_held(static_cast<Stream>(stream));
  });
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
    ULYSSES_ASSIGN_OR_RETURN(f.cu_seqlens, cu_span(args->cu_seqlens, args->num_cu_seqlens, api));
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
    ULYSSES_ASSIGN_OR_RETURN(b.cu_seqlens, cu_span(args->cu_seqlens, args->num_cu_seqlens, api));
    b.cu_seqlens_device = args->cu_seqlens_device;
    b.workspace = args->workspace;
    b.saved = args->saved;
    return plan->plan->backward(b, static_cast<Stream>(stream));
  });
}

void ulysses_plan_destroy(ulysses_plan* plan) { delete plan; }

void ulysses_decode_config_init(ulysses_decode_config* config) {
  if (config == nullptr) return;
  const DecodeConfig d;
  *config = ulysses_decode_config{};
  from_attention(d.attention, config);
  config->cp = d.cp;
  config->dtype = static_cast<int32_t>(d.dtype);
  config->batch = d.batch;
  config->query_tokens = d.query_tokens;
  config->cache_rows = d.cache_rows;
  config->max_segments = d.max_segments;
  config->max_splits = d.max_splits;
  config->min_split_rows = d.min_split_rows;
  config->head_dim_v = d.attention.head_dim_v;
  config->split_kernel = static_cast<int32_t>(d.split_kernel);
  config->page_size = d.page_size;
  config->device_layout = d.device_layout ? 1 : 0;
}

int ulysses_decode_create(const ulysses_decode_config* config, ulysses_comm* comm,
                          ulysses_kernel* kernel, ulysses_decode** decode) {
  return guarded([&]() -> Status {
    constexpr std::string_view api = "ulysses_decode_create";
    if (config == nullptr) return null_arg(api, "config");
    if (comm == nullptr) return null_arg(api, "comm");
    if (kernel == nullptr) return null_arg(api, "kernel");
    if (decode == nullptr) return null_arg(api, "decode");
    ULYSSES_ASSIGN_OR_RETURN(
        auto d, DistributedDecode::create(to_decode_config(*config), *comm->comm, *kernel->kernel));
    *decode = new ulysses_decode{std::move(d)};
    return Status::ok();
  });
}

size_t ulysses_decode_workspace_bytes(const ulysses_decode* decode) {
  return decode ? decode->decode->workspace_bytes() : 0;
}

int ulysses_decode_forward(ulysses_decode* decode, const ulysses_decode_args* args, void* stream) {
  return decode_call(decode, args, "ulysses_decode_forward",
                     [&](DistributedDecode& d, const DecodeArgs& a) {
                       return d.forward(a, static_cast<Stream>(stream));
                     });
}

int ulysses_decode_check_device_layout(ulysses_decode* decode, const ulysses_decode_args* args,
                                       void* stream) {
  return decode_call(decode, args, "ulysses_decode_check_device_layout",
                     [&](DistributedDecode& d, const DecodeArgs& a) {
                       return d.check_device_layout(a, static_cast<Stream>(stream));
                     });
}

void ulysses_decode_destroy(ulysses_decode* decode) { delete decode; }

int ulysses_shard_token_ranges(const ulysses_plan_config* config, int rank,
                               const int32_t* cu_seqlens, int64_t num_cu_seqlens, int64_t* ranges,
                               int64_t max_ranges, int64_t* num_ranges) {
  return guarded([&]() -> Status {
    constexpr std::string_view api = "ulysses_shard_token_ranges";
    if (config == nullptr) return null_arg(api, "config");
    if (num_ranges == nullptr) return null_arg(api, "num_ranges");
    ULYSSES_ASSIGN_OR_RETURN(const auto cu, cu_span(cu_seqlens, num_cu_seqlens, api));
    const PlanConfig c = to_config(*config);
    ULYSSES_ASSIGN_OR_RETURN(auto got, shard_token_ranges(c.parallel, c.seqlen, rank, cu));
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
    ULYSSES_ASSIGN_OR_RETURN(const auto cu, cu_span(cu_seqlens, num_cu_seqlens, api));
    const PlanConfig c = to_config(*config);
    ULYSSES_ASSIGN_OR_RETURN(auto got, shard_position_ids(c.parallel, c.seqlen, rank, cu));
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
    ULYSSES_ASSIGN_OR_RETURN(const auto cu, cu_span(cu_seqlens, num_cu_seqlens, api));
    ULYSSES_ASSIGN_OR_RETURN(auto got, packed_sequence_offsets(to_config(*config).parallel, cu));
    std::copy(got.begin(), got.end(), offsets);
    return Status::ok();
  });
}

int ulysses_attention_pairs_by_rank(const ulysses_plan_config* config, const int32_t* cu_seqlens,
                                    int64_t num_cu_seqlens, double* pairs) {
  return guarded([&]() -> Status {
    constexpr std::string_view api = "ulysses_attention_pairs_by_rank";
    if (config == nullptr) return null_arg(api, "config");
    if (pairs == nullptr) return null_arg(api, "pairs");
    ULYSSES_ASSIGN_OR_RETURN(const auto cu, cu_span(cu_seqlens, num_cu_seqlens, api));
    const PlanConfig c = to_config(*config);
    ULYSSES_ASSIGN_OR_RETURN(auto got,
                             attention_pairs_by_rank(c.parallel, c.attention, c.seqlen, cu));
    std::copy(got.begin(), got.end(), pairs);
    return Status::ok();
  });
}

int ulysses_balance_packed_sequences(const ulysses_plan_config* config, const int32_t* cu_seqlens,
                                     int64_t num_cu_seqlens, int32_t* order,
                                     int32_t* reordered_cu_seqlens) {
  return guarded([&]() -> Status {
    constexpr std::string_view api = "ulysses_balance_packed_sequences";
    if (config == nullptr) return null_arg(api, "config");
    if (cu_seqlens == nullptr) return null_arg(api, "cu_seqlens");
    if (order == nullptr) return null_arg(api, "order");
    if (reordered_cu_seqlens == nullptr) return null_arg(api, "reordered_cu_seqlens");
    ULYSSES_ASSIGN_OR_RETURN(const auto cu, cu_span(cu_seqlens, num_cu_seqlens, api));
    const PlanConfig c = to_config(*config);
    ULYSSES_ASSIGN_OR_RETURN(auto got,
                             balance_packed_sequences(c.parallel, c.attention, c.seqlen, cu));
    std::copy(got.order.begin(), got.order.end(), order);
    std::copy(got.cu_seqlens.begin(), got.cu_seqlens.end(), reordered_cu_seqlens);
    return Status::ok();
  });
}

}  // extern "C"
