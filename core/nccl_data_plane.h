// The NCCL data plane between the router and the expert servers: token rows
// and expert outputs move GPU to GPU with ncclSend/ncclRecv while gRPC
// (ExpertService.ExpertStream) still carries the control messages.
//
// Topology: one communicator per (router, expert server) pair, two ranks,
// the router rank 0 and the expert server rank 1. Exchanges with different
// servers therefore run concurrently on their own communicators, and one
// communicator is only ever used by one thread at a time (NCCL does not
// allow more). Bootstrap: the router calls NewNcclUniqueId, hands the id to
// the server over gRPC (ExpertService.JoinDataPlane) and both sides call
// JoinNcclCommunicator, which returns once every rank joined.
//
// Wire format: BF16. The router rounds its float32 rows to BF16 on its GPU
// and sends the rows of every group of a call back to back as one buffer;
// the expert server receives them straight into the CUDA expert backend's
// input (which computes in BF16 anyway: CudaExpertFfn::RunOnDevice) and
// sends the BF16 outputs back in the same layout, which the router widens
// to float32. The results are therefore those of the CUDA expert backend
// over gRPC (CudaExpertFfn::Run also rounds its inputs to BF16), bit for
// bit, at half the bytes of float32.
//
// Ordering contract: NCCL matches the sends and receives of a pair in the
// order they are posted, so both sides must post the ops of exchange N
// before those of exchange N + 1. The router runs the exchanges of one
// link one at a time, sending the control message of exchange N on the
// ExpertStream before posting its ops and starting N + 1 only after N has
// completed; the server posts its ops on its single executor thread in the
// order the control messages arrived, and checks their sequence numbers
// (NcclTransfer.sequence).
//
// Failures: every blocking call ends by its deadline. A deadline that
// passes, an error NCCL reports (ncclCommGetAsyncError: the peer died, a
// socket closed) or a caller's cancellation aborts the communicator
// (ncclCommAbort) and fails the call with UNAVAILABLE naming the peer;
// the communicator is then unusable (aborted() is true) and every later
// call fails at once. The router then sends that server's calls as gRPC
// bytes again.
//
// This header includes no CUDA or NCCL header: the implementation is
// core/cuda/nccl_data_plane.cc where CMake found NCCL, and
// core/nccl_unavailable.cc (every call FAILED_PRECONDITION) elsewhere, so
// callers need no #ifdef.
#ifndef MOE_CORE_NCCL_DATA_PLANE_H_
#define MOE_CORE_NCCL_DATA_PLANE_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/backends.h"
#include "core/expert_backend.h"

namespace moe {

// How the expert groups' rows travel between the router and the expert
// servers: in the gRPC requests as float32 bytes (the default), or over NCCL
// as below.
enum class DataPlane { kGrpc, kNccl };

// "grpc" or "nccl"; INVALID_ARGUMENT naming the text otherwise.
inline absl::StatusOr<DataPlane> ParseDataPlane(absl::string_view text) {
  if (text == "grpc") return DataPlane::kGrpc;
  if (text == "nccl") return DataPlane::kNccl;
  return absl::InvalidArgumentError(
      absl::StrCat("data plane \"", text, "\" is not one of grpc, nccl"));
}

inline const char* DataPlaneName(DataPlane plane) {
  return plane == DataPlane::kNccl ? "nccl" : "grpc";
}

// Bytes of an NCCL unique id (NCCL_UNIQUE_ID_BYTES).
inline constexpr size_t kNcclUniqueIdBytes = 128;

// True when this build has the NCCL data plane (CUDA and NCCL were found
// when it was configured).
bool NcclBuilt();

// OK when this process can join a communicator on `device`; otherwise
// FAILED_PRECONDITION saying why: no NCCL in this build, `device` is not a
// CUDA device, or the device is not usable (CheckDeviceUsable).
absl::Status CheckNcclUsable(const DeviceSpec& device);

// A fresh unique id (kNcclUniqueIdBytes bytes) for the ranks of one new
// communicator. Needs no GPU: it only opens NCCL's bootstrap socket in this
// process, which the other ranks connect to. FAILED_PRECONDITION without
// NCCL in this build; INTERNAL naming the NCCL error otherwise.
absl::StatusOr<std::string> NewNcclUniqueId();

struct NcclJoinOptions {
  std::string unique_id;  // from NewNcclUniqueId on rank 0
  int nranks = 2;
  int rank = 0;
  DeviceSpec device;  // a CUDA device
  // Names the other side in errors: "expert server 1 (127.0.0.1:5001)".
  std::string peer;
  absl::Duration timeout = absl::Seconds(60);
  // Polled while waiting for the other ranks; true gives up (CANCELLED).
  std::function<bool()> cancelled;
};

// One rank of a communicator, with its own CUDA stream and device scratch.
//
// Thread-compatible: one call at a time (callers serialise), from any
// thread. Exchange and ServeExperts block until their NCCL operations have
// completed, failed or passed `deadline`; they poll `cancelled` (may be
// empty) meanwhile and abort when it turns true.
class NcclCommunicator {
 public:
  virtual ~NcclCommunicator() = default;

  virtual int rank() const = 0;
  virtual int nranks() const = 0;
  virtual const DeviceSpec& device() const = 0;
  // True after an abort; every call then fails with UNAVAILABLE.
  virtual bool aborted() const = 0;

  // The router's side of one exchange with `peer`: the float32 host rows of
  // `inputs` (the groups of one call, each [tokens, hidden] row-major) are
  // copied to the device, rounded to BF16 and sent as one buffer; the
  // peer's BF16 answer of the same size is received, widened and copied
  // into `outputs` (outputs[i] as large as inputs[i]). Nothing is sent when
  // every input is empty. INVALID_ARGUMENT for mismatched sizes (nothing
  // posted); UNAVAILABLE naming the peer after an abort.
  virtual absl::Status Exchange(
      int peer, absl::Span<const absl::Span<const float>> inputs,
      absl::Span<const absl::Span<float>> outputs, absl::Time deadline,
      const std::function<bool()>& cancelled) = 0;

  // The expert server's side: receives the rows of `groups` (their weights
  // and token counts; x and out are not used) from `peer` into device
  // memory as one BF16 buffer, computes them with `backend`, which must be
  // the CUDA expert backend on this communicator's device
  // (FAILED_PRECONDITION otherwise, before anything is posted), and sends
  // the BF16 outputs back. Nothing is exchanged when no group has tokens.
  // UNAVAILABLE naming the peer after an abort; a backend failure after the
  // rows were received also aborts (the peer waits for outputs that will
  // not come).
  virtual absl::Status ServeExperts(int peer, ExpertFfnBackend& backend,
                                    absl::Span<const FfnGroup> groups,
                                    absl::Time deadline,
                                    const std::function<bool()>& cancelled) = 0;
};

// Joins the communicator of `options.unique_id` as `options.rank` and
// returns once all `options.nranks` ranks joined. FAILED_PRECONDITION when
// CheckNcclUsable fails, INVALID_ARGUMENT for a malformed id or ranks,
// DEADLINE_EXCEEDED naming the peer when the others did not join within
// the timeout, CANCELLED when `options.cancelled` turned true, INTERNAL
// naming the NCCL or CUDA call otherwise.
absl::StatusOr<std::unique_ptr<NcclCommunicator>> JoinNcclCommunicator(
    const NcclJoinOptions& options);

}  // namespace moe

#endif  // MOE_CORE_NCCL_DATA_PLANE_H_
