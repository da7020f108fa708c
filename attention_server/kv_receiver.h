// The decode server's side of a K/V transfer (AttentionService.TransferKv):
// writes each chunk's blocks into the reservation's KV blocks through the
// engine, completes the transfer on the last chunk, and fails it (freeing
// the blocks, so incomplete K/V is never decoded) when the stream ends
// early, breaks or carries a chunk that does not fit.
#ifndef MOE_ATTENTION_SERVER_KV_RECEIVER_H_
#define MOE_ATTENTION_SERVER_KV_RECEIVER_H_

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/synchronization/mutex.h"
#include "attention_server/attention_engine.h"
#include "attention_server/attention_metrics.h"
#include "grpcpp/support/server_callback.h"
#include "moe/v1/attention.pb.h"

namespace moe {

// Hands one chunk of the transfer into reservation `reservation` to `engine`:
// a data chunk's blocks to ReceiveKv, or the last chunk's summary (`done`
// set) to CompleteKvTransfer; their errors as they return them. The chunk's
// own reservation_id is not looked at (the caller matches it).
absl::Status ApplyKvChunk(AttentionEngine& engine, uint64_t reservation,
                          const v1::KvTransferChunk& chunk);

class KvReceiver : public grpc::ServerReadReactor<v1::KvTransferChunk> {
 public:
  // `engine`, `ack` and `metrics` are borrowed (the ack is the call's
  // response); the transfer's bytes, time and outcome go to `metrics`.
  KvReceiver(AttentionEngine* engine, v1::KvTransferAck* ack, std::string peer,
             AttentionMetrics* metrics);

  void OnReadDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override { delete this; }

 private:
  // Fails the reservation (if one is known and not complete) and finishes
  // the call with `status`; only the first call counts.
  void End(const absl::Status& status);

  AttentionEngine* engine_;
  v1::KvTransferAck* ack_;
  const std::string peer_;
  AttentionMetrics* metrics_;
  std::chrono::steady_clock::time_point first_chunk_;  // set on the first read
  v1::KvTransferChunk chunk_;  // the read in flight
  bool have_reservation_ = false;
  uint64_t reservation_ = 0;
  absl::Mutex mu_;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool complete_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace moe

#endif  // MOE_ATTENTION_SERVER_KV_RECEIVER_H_
