// ulysses: NCCL communicators for processes launched by mpirun (one process per GPU).
//
// Header-only on purpose: it compiles against the MPI of the application that includes it, so the
// ulysses library itself needs no MPI. Include it only where <mpi.h> is available. MPI is used for
// the start-up only (who is rank 0, broadcasting NCCL's unique id); every exchange runs on NCCL.
//
//   MPI_Init(&argc, &argv);
//   int local = ulysses::mpi_local_rank(MPI_COMM_WORLD).value();
//   auto comm = ulysses::create_nccl_communicator_mpi(MPI_COMM_WORLD,
//                                                      local % ulysses::cuda_device_count());
#pragma once

#include <mpi.h>

#include <cstring>
#include <memory>
#include <string>

#include "ulysses/gpu.h"

namespace ulysses {

namespace mpi_detail {

inline Status mpi_error(int code, const char* call) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) len = 0;
  return Status(StatusCode::kCommError, std::string(call) + " returned " + std::to_string(code) +
                                            (len > 0 ? " (" + std::string(text, len) + ")" : ""));
}

// What rank 0 broadcasts: the id, or the error that kept it from making one, so that every rank
// returns the same Status instead of waiting for an id that never comes.
struct IdMessage {
  int code = 0;  // StatusCode of rank 0's create_nccl_unique_id()
  char id[sizeof(NcclUniqueId::bytes)] = {};
  char message[512] = {};
};

}  // namespace mpi_detail

/// This process's index among the processes of `comm` that share its node (MPI_COMM_TYPE_SHARED):
/// the usual choice of CUDA device is `mpi_local_rank(comm) % cuda_device_count()`. Collective over
/// `comm`.
inline Result<int> mpi_local_rank(MPI_Comm comm) {
  MPI_Comm node = MPI_COMM_NULL;
  int rc = MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  if (rc != MPI_SUCCESS) return mpi_detail::mpi_error(rc, "MPI_Comm_split_type");
  int local = 0;
  rc = MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  if (rc != MPI_SUCCESS) return mpi_detail::mpi_error(rc, "MPI_Comm_rank");
  return local;
}

/// An NCCL communicator over the processes of `comm` (NCCL rank = MPI rank), on CUDA device
/// `device` of this process, owned by the returned object. Rank 0 of `comm` makes NCCL's unique id
/// and MPI broadcasts it; then every rank calls create_nccl_communicator() (non-blocking, NVLS off,
/// bounded by `options.timeout`). Collective over `comm`: if rank 0 cannot make the id, every rank
/// returns that error.
inline Result<std::unique_ptr<Communicator>> create_nccl_communicator_mpi(
    MPI_Comm comm, int device, NcclOptions options = {}) {
  int rank = 0, size = 0;
  int rc = MPI_Comm_rank(comm, &rank);
  if (rc != MPI_SUCCESS) return mpi_detail::mpi_error(rc, "MPI_Comm_rank");
  rc = MPI_Comm_size(comm, &size);
  if (rc != MPI_SUCCESS) return mpi_detail::mpi_error(rc, "MPI_Comm_size");

  mpi_detail::IdMessage msg;
  if (rank == 0) {
    Result<NcclUniqueId> id = create_nccl_unique_id();
    if (id.is_ok()) {
      std::memcpy(msg.id, id->bytes.data(), sizeof(msg.id));
    } else {
      msg.code = static_cast<int>(id.status().code());
      std::strncpy(msg.message, id.status().message().c_str(), sizeof(msg.message) - 1);
    }
  }
  rc = MPI_Bcast(&msg, static_cast<int>(sizeof(msg)), MPI_BYTE, 0, comm);
  if (rc != MPI_SUCCESS) return mpi_detail::mpi_error(rc, "MPI_Bcast");
  if (msg.code != 0) {
    return Status(static_cast<StatusCode>(msg.code),
                  std::string("rank 0 could not make the NCCL unique id: ") + msg.message);
  }
  NcclUniqueId id;
  std::memcpy(id.bytes.data(), msg.id, sizeof(msg.id));
  return create_nccl_communicator(id, size, rank, device, options);
}

}  // namespace ulysses
