// The prefill server's side of a K/V transfer: a KvTransferSink that streams
// the blocks to the decode server's AttentionService.TransferKv as the
// engine hands them over, then the summary, and reports the decode server's
// acknowledgement.
#ifndef MOE_ATTENTION_SERVER_KV_SENDER_H_
#define MOE_ATTENTION_SERVER_KV_SENDER_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "attention_server/kv_transfer.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/client_callback.h"
#include "moe/v1/attention.grpc.pb.h"

namespace moe {

struct KvSendStats {
  int64_t bytes = 0;             // block bytes sent
  double seconds = 0;            // first chunk sent -> acknowledged
  double tail_seconds = 0;       // Finish -> acknowledged
  // Time with bytes on their way: writes in progress, and the final wait
  // for the acknowledgement. bytes / busy_seconds is the rate the transfer
  // moves K/V at when it has K/V to move (between layers it waits for the
  // prefill to compute more).
  double busy_seconds = 0;
};

class KvSender : public KvTransferSink,
                 public grpc::ClientWriteReactor<v1::KvTransferChunk> {
 public:
  // Runs once the transfer is over: OK when the decode server acknowledged
  // the whole K/V, else why it failed. On a gRPC thread.
  using Done = std::function<void(const absl::Status&, const KvSendStats&)>;

  // Opens the stream to the decode server behind `stub` (borrowed; it must
  // outlive the transfer) for `reservation`.
  static std::shared_ptr<KvSender> Start(v1::AttentionService::Stub* stub,
                                         std::string address,
                                         const KvReservation& reservation,
                                         Done done);

  // KvTransferSink (the engine's executor thread).
  void SendBlocks(int layer, int first_block,
                  absl::Span<const float* const> blocks,
                  int64_t block_bytes) override;
  void Finish(const KvTransferSummary& summary) override;
  void Abort(const absl::Status& status) override;

  // grpc::ClientWriteReactor.
  void OnWriteDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  using Clock = std::chrono::steady_clock;
  KvSender() = default;
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::string address_;
  KvReservation reservation_;
  Done done_;
  grpc::ClientContext context_;
  v1::KvTransferAck ack_;

  absl::Mutex mu_;
  std::deque<v1::KvTransferChunk> queue_ ABSL_GUARDED_BY(mu_);
  v1::KvTransferChunk in_flight_;  // owned by gRPC while writing_
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;  // the done chunk is queued
  bool writes_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Status> aborted_ ABSL_GUARDED_BY(mu_);
  KvSendStats stats_ ABSL_GUARDED_BY(mu_);
  Clock::time_point first_send_ ABSL_GUARDED_BY(mu_);
  Clock::time_point finish_time_ ABSL_GUARDED_BY(mu_);
  Clock::time_point write_started_ ABSL_GUARDED_BY(mu_);
  Clock::time_point writes_done_at_ ABSL_GUARDED_BY(mu_);
  bool sent_any_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<KvSender> self_;  // until OnDone
};

}  // namespace moe

#endif  // MOE_ATTENTION_SERVER_KV_SENDER_H_
