#include "attention_server/kv_receiver.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/rpc/grpc_status.h"

namespace moe {

absl::Status ApplyKvChunk(AttentionEngine& engine, uint64_t reservation,
                          const v1::KvTransferChunk& chunk) {
  if (!chunk.has_done()) {
    return engine.ReceiveKv(reservation, chunk.layer(), chunk.first_block(),
                            chunk.num_blocks(), chunk.data());
  }
  const v1::KvTransferDone& done = chunk.done();
  KvTransferSummary summary;
  summary.num_tokens = done.num_tokens();
  summary.tokens.assign(done.tokens().begin(), done.tokens().end());
  if (done.has_first_logprobs()) {
    TokenLogprobs lp;
    lp.token = done.first_logprobs().token_id();
    lp.logprob = done.first_logprobs().logprob();
    for (const v1::TopLogprob& top : done.first_logprobs().top()) {
      lp.top.emplace_back(top.token_id(), top.logprob());
    }
    summary.logprobs = std::move(lp);
  }
  summary.cached_tokens = done.cached_tokens();
  summary.queue_seconds = done.queue_seconds();
  summary.prefill_seconds = done.prefill_seconds();
  return engine.CompleteKvTransfer(reservation, summary);
}

KvReceiver::KvReceiver(AttentionEngine* engine, v1::KvTransferAck* ack,
                       std::string peer, AttentionMetrics* metrics)
    : engine_(engine), ack_(ack), peer_(std::move(peer)), metrics_(metrics) {
  StartRead(&chunk_);
}

void KvReceiver::End(const absl::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (ended_) return;
    ended_ = true;
    if (!complete_ && have_reservation_ && !status.ok()) {
      engine_->FailKvTransfer(reservation_, status);
    }
  }
  if (have_reservation_) {  // a transfer began; a refused empty call is none
    metrics_->RecordKvTransfer(
        KvTransferDirection::kReceived, ack_->bytes_received(),
        std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                      first_chunk_)
            .count(),
        status.ok());
  }
  Finish(ToGrpcStatus(status));
}

void KvReceiver::OnReadDone(bool ok) {
  if (!ok) {
    // The sender closed its side without the last chunk, or the call broke.
    End(absl::UnavailableError(absl::StrCat(
        "the K/V transfer from ", peer_,
        " ended before its last chunk; the request was not decoded")));
    return;
  }
  if (!have_reservation_) {
    have_reservation_ = true;
    first_chunk_ = std::chrono::steady_clock::now();
    reservation_ = chunk_.reservation_id();
  } else if (chunk_.reservation_id() != reservation_) {
    End(absl::InvalidArgumentError(absl::StrCat(
        "reservation_id: ", chunk_.reservation_id(),
        " differs from this transfer's ", reservation_)));
    return;
  }
  const absl::Status status = ApplyKvChunk(*engine_, reservation_, chunk_);
  if (chunk_.has_done()) {
    {
      absl::MutexLock lock(&mu_);
      complete_ = true;  // succeeded, or failed inside the engine already
    }
    End(status);
    return;
  }
  if (!status.ok()) {
    End(status);
    return;
  }
  ack_->set_bytes_received(ack_->bytes_received() +
                           static_cast<int64_t>(chunk_.data().size()));
  StartRead(&chunk_);
}

void KvReceiver::OnCancel() {
  End(absl::UnavailableError(absl::StrCat(
      "the K/V transfer from ", peer_,
      " was cancelled; the request was not decoded")));
}

}  // namespace moe
