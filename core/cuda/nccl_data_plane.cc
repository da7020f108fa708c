// core/nccl_data_plane.h with NCCL: nonblocking communicators (so that
// joining and every operation can give up at a deadline: NCCL's own calls
// would wait forever for a peer that died), polled with
// ncclCommGetAsyncError and cudaStreamQuery, and aborted with
// ncclCommAbort on a deadline, an NCCL error or a cancellation.
//
// No call here may block on the device while an NCCL operation is pending:
// a receive whose peer never sends would hold it forever. Host staging is
// therefore pinned (cudaMemcpyAsync to or from pageable memory waits for
// the stream), and scratch is reserved before anything is posted (cudaFree
// waits for the whole device).
#include "core/nccl_data_plane.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "core/cuda/cuda_expert_ffn.h"
#include "core/cuda/cuda_status.h"
#include "core/cuda/device_buffer.h"
#include "core/cuda/kernels.h"
#include "core/status_macros.h"

namespace moe {
namespace {

static_assert(kNcclUniqueIdBytes == NCCL_UNIQUE_ID_BYTES);

std::string NcclText(ncclResult_t result, ncclComm_t comm) {
  std::string text = ncclGetErrorString(result);
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && last[0] != '\0') absl::StrAppend(&text, ": ", last);
  return text;
}

// Scratch grows to the next power of two, so that it is rarely freed: a
// cudaFree waits for the whole device, NCCL operations of other links
// included.
int64_t Rounded(int64_t count) {
  int64_t rounded = 1024;
  while (rounded < count) rounded *= 2;
  return rounded;
}

class Communicator final : public NcclCommunicator {
 public:
  Communicator(const NcclJoinOptions& options, cudaStream_t stream)
      : rank_(options.rank),
        nranks_(options.nranks),
        device_(options.device),
        peer_(options.peer.empty() ? "the peer" : options.peer),
        stream_(stream) {}

  ~Communicator() override {
    cudaSetDevice(device_.ordinal);
    // No operation is in flight between calls, and ncclCommAbort frees the
    // communicator without waiting for the peer (which may be gone).
    if (comm_ != nullptr) ncclCommAbort(comm_);
    if (stream_ != nullptr) {
      cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
    }
  }

  // Starts the nonblocking join and waits for every rank.
  absl::Status Join(const NcclJoinOptions& options) {
    ncclUniqueId id;
    std::memcpy(id.internal, options.unique_id.data(), NCCL_UNIQUE_ID_BYTES);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    const ncclResult_t result = ncclCommInitRankConfig(
        &comm_, options.nranks, id, options.rank, &config);
    if (result != ncclSuccess && result != ncclInProgress) {
      return Abort(absl::StatusCode::kInternal,
                   absl::StrCat("ncclCommInitRankConfig failed: ",
                                NcclText(result, comm_)),
                   nullptr);
    }
    WaitCodes codes;
    codes.timeout = absl::StatusCode::kDeadlineExceeded;
    codes.cancelled = absl::StatusCode::kCancelled;
    codes.error = absl::StatusCode::kInternal;
    return WaitFor(
        absl::StrCat("joining the communicator (rank ", rank_, " of ", nranks_,
                     ")"),
        [this]() -> absl::StatusOr<bool> { return AsyncState(); },
        absl::Now() + options.timeout, options.cancelled, nullptr, codes);
  }

  int rank() const override { return rank_; }
  int nranks() const override { return nranks_; }
  const DeviceSpec& device() const override { return device_; }
  bool aborted() const override { return aborted_.load(); }

  absl::Status Exchange(int peer,
                        absl::Span<const absl::Span<const float>> inputs,
                        absl::Span<const absl::Span<float>> outputs,
                        absl::Time deadline,
                        const std::function<bool()>& cancelled) override {
    RETURN_IF_ERROR(CheckCall(peer));
    if (inputs.size() != outputs.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("NCCL exchange with ", peer_, ": ", inputs.size(),
                       " inputs but ", outputs.size(), " outputs"));
    }
    int64_t total = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (outputs[i].size() != inputs[i].size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "NCCL exchange with ", peer_, ": output ", i, " holds ",
            outputs[i].size(), " values for an input of ", inputs[i].size()));
      }
      total += static_cast<int64_t>(inputs[i].size());
    }
    if (total == 0) return absl::OkStatus();
    // The peer expects this exchange from now on: every failure aborts.
    auto fail = [&](const absl::Status& status) {
      return Abort(absl::StatusCode::kUnavailable, status.message(), stream_);
    };
    if (cudaError_t e = cudaSetDevice(device_.ordinal); e != cudaSuccess) {
      return fail(cuda::CudaStatus(e, "cudaSetDevice"));
    }
    for (absl::Status s :
         {host_.Reserve(Rounded(total)), f32_.Reserve(Rounded(total)),
          bf16_in_.Reserve(Rounded(total)),
          bf16_out_.Reserve(Rounded(total))}) {
      if (!s.ok()) return fail(s);
    }
    int64_t at = 0;
    for (absl::Span<const float> in : inputs) {
      std::copy(in.begin(), in.end(), host_.data() + at);
      at += static_cast<int64_t>(in.size());
    }
    const size_t bytes = static_cast<size_t>(total) * sizeof(float);
    if (absl::Status s =
            cuda::CudaStatus(cudaMemcpyAsync(f32_.data(), host_.data(), bytes,
                                             cudaMemcpyHostToDevice, stream_),
                             "cudaMemcpyAsync (rows to the device)");
        !s.ok()) {
      return fail(s);
    }
    if (absl::Status s =
            cuda::ToBf16(f32_.data(), total, bf16_in_.data(), stream_);
        !s.ok()) {
      return fail(s);
    }
    RETURN_IF_ERROR(Issued("ncclSend",
                           ncclSend(bf16_in_.data(), static_cast<size_t>(total),
                                    ncclBfloat16, peer, comm_, stream_),
                           deadline, cancelled, stream_));
    RETURN_IF_ERROR(
        Issued("ncclRecv",
               ncclRecv(bf16_out_.data(), static_cast<size_t>(total),
                        ncclBfloat16, peer, comm_, stream_),
               deadline, cancelled, stream_));
    if (absl::Status s =
            cuda::FromBf16(bf16_out_.data(), total, f32_.data(), stream_);
        !s.ok()) {
      return fail(s);
    }
    if (absl::Status s =
            cuda::CudaStatus(cudaMemcpyAsync(host_.data(), f32_.data(), bytes,
                                             cudaMemcpyDeviceToHost, stream_),
                             "cudaMemcpyAsync (outputs to the host)");
        !s.ok()) {
      return fail(s);
    }
    RETURN_IF_ERROR(
        AwaitStream("exchanging rows", stream_, deadline, cancelled));
    at = 0;
    for (absl::Span<float> out : outputs) {
      std::copy(host_.data() + at, host_.data() + at + out.size(), out.begin());
      at += static_cast<int64_t>(out.size());
    }
    return absl::OkStatus();
  }

  absl::Status ServeExperts(int peer, ExpertFfnBackend& backend,
                            absl::Span<const FfnGroup> groups,
                            absl::Time deadline,
                            const std::function<bool()>& cancelled) override {
    RETURN_IF_ERROR(CheckCall(peer));
    auto* ffn = dynamic_cast<cuda::CudaExpertFfn*>(&backend);
    if (ffn == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the NCCL data plane needs the CUDA expert backend, but this "
          "server computes on ",
          backend.name()));
    }
    if (ffn->ordinal() != device_.ordinal) {
      return absl::FailedPreconditionError(
          absl::StrCat("the expert backend runs on cuda:", ffn->ordinal(),
                       " but the NCCL communicator on ", device_.ToString()));
    }
    const int64_t hidden = ffn->hidden();
    int64_t rows = 0;
    for (const FfnGroup& g : groups) rows += g.tokens;
    const int64_t total = rows * hidden;
    if (total == 0) return absl::OkStatus();
    const cudaStream_t stream = ffn->stream();
    auto fail = [&](const absl::Status& status) {
      return Abort(absl::StatusCode::kUnavailable, status.message(), stream);
    };
    if (cudaError_t e = cudaSetDevice(device_.ordinal); e != cudaSuccess) {
      return fail(cuda::CudaStatus(e, "cudaSetDevice"));
    }
    for (absl::Status s : {bf16_in_.Reserve(Rounded(total)),
                           bf16_out_.Reserve(Rounded(total))}) {
      if (!s.ok()) return fail(s);
    }
    RETURN_IF_ERROR(Issued("ncclRecv",
                           ncclRecv(bf16_in_.data(), static_cast<size_t>(total),
                                    ncclBfloat16, peer, comm_, stream),
                           deadline, cancelled, stream));
    // The rows must be in before the FFN runs: it may allocate scratch, and
    // cudaFree would wait for a receive whose sender may never come.
    RETURN_IF_ERROR(AwaitStream("receiving rows", stream, deadline, cancelled));
    std::vector<cuda::DeviceFfnGroup> device_groups;
    device_groups.reserve(groups.size());
    int64_t at = 0;
    for (const FfnGroup& g : groups) {
      if (g.tokens == 0) continue;  // no rows on the wire, no GEMM
      device_groups.push_back({g.weights, bf16_in_.data() + at * hidden,
                               g.tokens, bf16_out_.data() + at * hidden});
      at += g.tokens;
    }
    if (absl::Status s = ffn->RunOnDevice(device_groups); !s.ok()) {
      return fail(s);
    }
    RETURN_IF_ERROR(
        Issued("ncclSend",
               ncclSend(bf16_out_.data(), static_cast<size_t>(total),
                        ncclBfloat16, peer, comm_, stream),
               deadline, cancelled, stream));
    return AwaitStream("sending outputs", stream, deadline, cancelled);
  }

 private:
  // Status codes of the ways a wait can end badly.
  struct WaitCodes {
    absl::StatusCode timeout = absl::StatusCode::kUnavailable;
    absl::StatusCode cancelled = absl::StatusCode::kUnavailable;
    absl::StatusCode error = absl::StatusCode::kUnavailable;
  };

  absl::Status CheckCall(int peer) const {
    if (aborted_.load()) {
      return absl::UnavailableError(absl::StrCat(
          "the NCCL link to ", peer_, " was aborted earlier: ", abort_reason_));
    }
    if (peer < 0 || peer >= nranks_ || peer == rank_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "NCCL peer rank ", peer, " is not another rank of a ", nranks_,
          "-rank communicator (this is rank ", rank_, ")"));
    }
    return absl::OkStatus();
  }

  // true once the communicator's pending call has completed, false while it
  // is in progress; its error otherwise.
  absl::StatusOr<bool> AsyncState() {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t result = ncclCommGetAsyncError(comm_, &state);
    if (result != ncclSuccess) {
      return absl::InternalError(absl::StrCat("ncclCommGetAsyncError failed: ",
                                              NcclText(result, comm_)));
    }
    if (state == ncclInProgress) return false;
    if (state != ncclSuccess) {
      return absl::InternalError(
          absl::StrCat("NCCL reports ", NcclText(state, comm_)));
    }
    return true;
  }

  // Polls `finished` until it answers true, aborting when it fails, NCCL
  // reports an error, `cancelled` turns true or `deadline` passes. `stream`
  // (may be null) holds the operations an abort ends.
  template <typename Finished>
  absl::Status WaitFor(absl::string_view what, Finished finished,
                       absl::Time deadline,
                       const std::function<bool()>& cancelled,
                       cudaStream_t stream, const WaitCodes& codes) {
    for (int polls = 0;; ++polls) {
      absl::StatusOr<bool> done = finished();
      if (!done.ok()) {
        return Abort(codes.error,
                     absl::StrCat(what, ": ", done.status().message()), stream);
      }
      if (*done) return absl::OkStatus();
      absl::StatusOr<bool> state = AsyncState();
      if (!state.ok()) {
        return Abort(codes.error,
                     absl::StrCat(what, ": ", state.status().message()),
                     stream);
      }
      if (cancelled && cancelled()) {
        return Abort(codes.cancelled, absl::StrCat(what, ": cancelled"),
                     stream);
      }
      if (absl::Now() >= deadline) {
        return Abort(codes.timeout,
                     absl::StrCat(what, ": ", peer_,
                                  " did not take part before the deadline"),
                     stream);
      }
      // Spin briefly (exchanges take microseconds to milliseconds), then
      // sleep in short steps.
      if (polls < 2000) {
        std::this_thread::yield();
      } else {
        absl::SleepFor(absl::Microseconds(50));
      }
    }
  }

  // Waits until an operation NCCL answered `result` for is on its stream
  // (a nonblocking communicator may answer ncclInProgress first).
  absl::Status Issued(const char* call, ncclResult_t result,
                      absl::Time deadline,
                      const std::function<bool()>& cancelled,
                      cudaStream_t stream) {
    if (result == ncclSuccess) return absl::OkStatus();
    if (result != ncclInProgress) {
      return Abort(absl::StatusCode::kUnavailable,
                   absl::StrCat(call, " failed: ", NcclText(result, comm_)),
                   stream);
    }
    return WaitFor(
        call, [this]() -> absl::StatusOr<bool> { return AsyncState(); },
        deadline, cancelled, stream, WaitCodes());
  }

  // Waits until everything enqueued on `stream` has run.
  absl::Status AwaitStream(absl::string_view what, cudaStream_t stream,
                           absl::Time deadline,
                           const std::function<bool()>& cancelled) {
    return WaitFor(
        what,
        [stream]() -> absl::StatusOr<bool> {
          const cudaError_t e = cudaStreamQuery(stream);
          if (e == cudaSuccess) return true;
          if (e == cudaErrorNotReady) return false;
          return cuda::CudaStatus(e, "cudaStreamQuery");
        },
        deadline, cancelled, stream, WaitCodes());
  }

  // Aborts the communicator (which ends its operations on the device), lets
  // `stream` drain, and returns `code` naming the peer and `why`.
  absl::Status Abort(absl::StatusCode code, absl::string_view why,
                     cudaStream_t stream) {
    cudaSetDevice(device_.ordinal);
    if (comm_ != nullptr) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
    }
    if (stream != nullptr) {
      // Bounded: an aborted NCCL kernel ends promptly, but a wedged device
      // must not hang the caller.
      const absl::Time give_up = absl::Now() + absl::Seconds(10);
      while (cudaStreamQuery(stream) == cudaErrorNotReady &&
             absl::Now() < give_up) {
        absl::SleepFor(absl::Microseconds(100));
      }
    }
    cudaGetLastError();
    abort_reason_ = std::string(why);
    aborted_.store(true);
    return absl::Status(
        code, absl::StrCat("NCCL link to ", peer_, " (rank ", rank_, " on ",
                           device_.ToString(), ") aborted: ", why));
  }

  const int rank_;
  const int nranks_;
  const DeviceSpec device_;
  const std::string peer_;
  ncclComm_t comm_ = nullptr;  // null after an abort
  cudaStream_t stream_;        // the router's copies, kernels and NCCL ops
  std::atomic<bool> aborted_{false};
  std::string abort_reason_;
  // Scratch of Exchange (host_, f32_, both ways) and of both sides (the BF16
  // wire buffers).
  cuda::PinnedBuffer<float> host_;
  cuda::DeviceBuffer<float> f32_;
  cuda::DeviceBuffer<cuda::bf16> bf16_in_;
  cuda::DeviceBuffer<cuda::bf16> bf16_out_;
};

}  // namespace

bool NcclBuilt() { return true; }

absl::Status CheckNcclUsable(const DeviceSpec& device) {
  if (!device.is_cuda()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the NCCL data plane needs a CUDA device (cuda:N), got ",
                     device.ToString()));
  }
  return CheckDeviceUsable(device);
}

absl::StatusOr<std::string> NewNcclUniqueId() {
  ncclUniqueId id;
  const ncclResult_t result = ncclGetUniqueId(&id);
  if (result != ncclSuccess) {
    return absl::InternalError(
        absl::StrCat("ncclGetUniqueId failed: ", NcclText(result, nullptr)));
  }
  return std::string(id.internal, NCCL_UNIQUE_ID_BYTES);
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> JoinNcclCommunicator(
    const NcclJoinOptions& options) {
  RETURN_IF_ERROR(CheckNcclUsable(options.device));
  if (options.unique_id.size() != NCCL_UNIQUE_ID_BYTES) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL unique id must be ", NCCL_UNIQUE_ID_BYTES,
                     " bytes, got ", options.unique_id.size()));
  }
  if (options.nranks < 2 || options.rank < 0 ||
      options.rank >= options.nranks) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL rank ", options.rank, " of ", options.nranks,
                     ": need 2 or more ranks and 0 <= rank < nranks"));
  }
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device.ordinal));
  cudaStream_t stream = nullptr;
  MOE_CUDA_RETURN_IF_ERROR(
      cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto communicator = std::make_unique<Communicator>(options, stream);
  RETURN_IF_ERROR(communicator->Join(options));
  return std::unique_ptr<NcclCommunicator>(std::move(communicator));
}

}  // namespace moe
