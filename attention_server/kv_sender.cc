#include "attention_server/kv_sender.h"

#include <algorithm>
#include <cstring>
#include <vector>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/rpc/generate_codec.h"
#include "core/rpc/grpc_status.h"

namespace moe {
namespace {

// Largest K/V payload of one message.
constexpr int64_t kChunkBytes = 1 << 20;

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

std::shared_ptr<KvSender> KvSender::Start(v1::AttentionService::Stub* stub,
                                          std::string address,
                                          const KvReservation& reservation,
                                          Done done) {
  std::shared_ptr<KvSender> sender(new KvSender());
  sender->self_ = sender;
  sender->address_ = std::move(address);
  sender->reservation_ = reservation;
  sender->done_ = std::move(done);
  stub->async()->TransferKv(&sender->context_, &sender->ack_, sender.get());
  // Writes start from the engine's thread, outside reactions: hold the call
  // open until WritesDone or Abort.
  sender->AddHold();
  sender->StartCall();
  return sender;
}

void KvSender::SendBlocks(int layer, int first_block,
                          absl::Span<const float* const> blocks,
                          int64_t block_bytes) {
  // Chunks of at most kChunkBytes, so that the decode server can take the
  // first blocks while later ones are still on their way.
  const size_t per_chunk = static_cast<size_t>(
      std::max<int64_t>(1, kChunkBytes / std::max<int64_t>(block_bytes, 1)));
  std::vector<v1::KvTransferChunk> chunks;
  for (size_t begin = 0; begin < blocks.size(); begin += per_chunk) {
    const size_t end = std::min(blocks.size(), begin + per_chunk);
    v1::KvTransferChunk& chunk = chunks.emplace_back();
    chunk.set_reservation_id(reservation_.id);
    chunk.set_layer(layer);
    chunk.set_first_block(first_block + static_cast<int32_t>(begin));
    chunk.set_num_blocks(static_cast<int32_t>(end - begin));
    std::string* data = chunk.mutable_data();
    data->reserve((end - begin) * static_cast<size_t>(block_bytes));
    for (size_t i = begin; i < end; ++i) {
      data->append(reinterpret_cast<const char*>(blocks[i]), block_bytes);
    }
  }
  absl::MutexLock lock(&mu_);
  if (broken_ || aborted_.has_value() || finishing_) return;
  if (!sent_any_) {
    sent_any_ = true;
    first_send_ = Clock::now();
  }
  for (v1::KvTransferChunk& chunk : chunks) {
    stats_.bytes += static_cast<int64_t>(chunk.data().size());
    queue_.push_back(std::move(chunk));
  }
  PumpLocked();
}

void KvSender::Finish(const KvTransferSummary& summary) {
  v1::KvTransferChunk chunk;
  chunk.set_reservation_id(reservation_.id);
  v1::KvTransferDone* done = chunk.mutable_done();
  done->set_num_tokens(summary.num_tokens);
  for (int32_t token : summary.tokens) done->add_tokens(token);
  if (summary.logprobs.has_value()) {
    v1::GenerateResponse holder;
    AppendLogprobs(*summary.logprobs, &holder);
    *done->mutable_first_logprobs() = holder.logprobs(0);
  }
  done->set_cached_tokens(summary.cached_tokens);
  done->set_queue_seconds(summary.queue_seconds);
  done->set_prefill_seconds(summary.prefill_seconds);
  absl::MutexLock lock(&mu_);
  if (broken_ || aborted_.has_value() || finishing_) return;
  finishing_ = true;
  finish_time_ = Clock::now();
  if (!sent_any_) {
    sent_any_ = true;
    first_send_ = finish_time_;
  }
  queue_.push_back(std::move(chunk));
  PumpLocked();
}

void KvSender::Abort(const absl::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (aborted_.has_value()) return;
    aborted_ = status;
    queue_.clear();
    // With a write in flight, its failure releases the hold (OnWriteDone).
    if (!writing_ && !writes_done_) {
      writes_done_ = true;
      RemoveHold();
    }
  }
  context_.TryCancel();
}

void KvSender::PumpLocked() {
  if (writing_ || writes_done_) return;
  if (!queue_.empty()) {
    in_flight_ = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    write_started_ = Clock::now();
    StartWrite(&in_flight_);
    return;
  }
  if (finishing_) {
    // Everything, the done chunk included, is written: close our side.
    writes_done_ = true;
    writes_done_at_ = Clock::now();
    StartWritesDone();
    RemoveHold();
  }
}

void KvSender::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  writing_ = false;
  stats_.busy_seconds += Seconds(Clock::now() - write_started_);
  if (!ok) {
    // The stream broke; OnDone reports why once the hold is released.
    broken_ = true;
    queue_.clear();
    if (!writes_done_) {
      writes_done_ = true;
      RemoveHold();
    }
    return;
  }
  PumpLocked();
}

void KvSender::OnDone(const grpc::Status& status) {
  absl::Status result;
  KvSendStats stats;
  {
    absl::MutexLock lock(&mu_);
    // An abort before the end releases the hold here (OnDone can only come
    // after it: TryCancel fails the pending and later writes).
    const Clock::time_point now = Clock::now();
    stats = stats_;
    if (sent_any_) stats.seconds = Seconds(now - first_send_);
    if (finishing_) stats.tail_seconds = Seconds(now - finish_time_);
    if (writes_done_ && finishing_ && status.ok()) {
      stats.busy_seconds += Seconds(now - writes_done_at_);  // the ack
    }
    if (aborted_.has_value()) {
      result = *aborted_;
    } else if (!status.ok()) {
      result = absl::UnavailableError(absl::StrCat(
          "K/V transfer to decode server ", address_, " failed: ",
          status.error_message()));
      if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
          status.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
          status.error_code() == grpc::StatusCode::NOT_FOUND) {
        result = absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                              result.message());
      }
    } else if (!finishing_) {
      result = absl::InternalError(absl::StrCat(
          "K/V transfer to ", address_, " ended before its last chunk"));
    }
  }
  if (done_) done_(result, stats);
  std::shared_ptr<KvSender> self = std::move(self_);  // may delete this
}

}  // namespace moe
