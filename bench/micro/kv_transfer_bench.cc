// K/V block transfer from a prefill server to a decode server (see
// kv_fixture.h for the two ends). Args: prompt tokens; 16 KiB of K/V per
// token (the cluster bench model's layout), so 1024 tokens move 16 MiB and
// 4096 tokens 64 MiB.
//   BM_KvReceive         the decode side's ingestion alone:
//                        AttentionEngine::ReceiveKv of every chunk.
//   BM_KvChunkWire       the chunks' protobuf encoding on both sides:
//                        SerializeToString then ParseFromString.
//   BM_KvTransferStream  a whole TransferKv stream: KvSender builds the
//                        chunks from the prefill cache's blocks layer by
//                        layer, streams them over loopback gRPC to the
//                        decode service (KvReceiver -> ReceiveKv), and the
//                        acknowledgement comes back.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "attention_server/kv_sender.h"
#include "bench/micro/kv_fixture.h"
#include "bench/micro/micro_util.h"
#include "benchmark/benchmark.h"
#include "moe/v1/attention.pb.h"

namespace moe::microbench {
namespace {

// The largest K/V payload KvSender puts in one message (kv_sender.cc).
constexpr int64_t kChunkBytes = 1 << 20;
constexpr double kWaitSeconds = 60;
constexpr uint32_t kPromptSeed = 81;

absl::StatusOr<KvTransferFixture*> Fixture() {
  return SharedFixture<KvTransferFixture>(KvTransferFixture::Create);
}

// A reservation for a `tokens`-token prompt on the decode engine, failed
// (its blocks freed) when this goes out of scope.
class ScopedReservation {
 public:
  ScopedReservation(KvTransferFixture* fixture, int tokens)
      : fixture_(fixture) {
    observer_ = std::make_shared<ReservationObserver>();
    absl::StatusOr<AttentionEngine::SequenceId> id =
        fixture->Submit(tokens, kPromptSeed, observer_);
    if (!id.ok()) {
      status_ = id.status();
      return;
    }
    id_ = *id;
    absl::StatusOr<KvReservation> reservation =
        observer_->WaitReserved(kWaitSeconds);
    if (!reservation.ok()) {
      status_ = reservation.status();
      return;
    }
    reservation_ = *reservation;
  }
  ~ScopedReservation() {
    if (id_ == 0) return;
    fixture_->engine().FailKvTransfer(
        id_, absl::CancelledError("moe-microbench: reservation released"));
    observer_->WaitFinished(kWaitSeconds).IgnoreError();
  }

  const absl::Status& status() const { return status_; }
  const KvReservation& reservation() const { return reservation_; }
  ReservationObserver& observer() { return *observer_; }

 private:
  KvTransferFixture* fixture_;
  std::shared_ptr<ReservationObserver> observer_;
  AttentionEngine::SequenceId id_ = 0;
  KvReservation reservation_;
  absl::Status status_;
};

// The messages a KvSender ships for `reservation`: per layer, runs of
// whole blocks of at most kChunkBytes, in block order.
std::vector<v1::KvTransferChunk> Chunks(const KvTransferFixture& fixture,
                                        const KvReservation& reservation) {
  const int64_t block_bytes = fixture.block_bytes();
  const int per_chunk =
      static_cast<int>(std::max<int64_t>(1, kChunkBytes / block_bytes));
  std::vector<v1::KvTransferChunk> chunks;
  for (int layer = 0; layer < reservation.num_layers; ++layer) {
    const std::vector<const float*> blocks =
        fixture.SourceBlocks(layer, reservation.num_blocks);
    for (int begin = 0; begin < reservation.num_blocks; begin += per_chunk) {
      const int end = std::min(reservation.num_blocks, begin + per_chunk);
      v1::KvTransferChunk& chunk = chunks.emplace_back();
      chunk.set_reservation_id(reservation.id);
      chunk.set_layer(layer);
      chunk.set_first_block(begin);
      chunk.set_num_blocks(end - begin);
      for (int i = begin; i < end; ++i) {
        chunk.mutable_data()->append(reinterpret_cast<const char*>(blocks[i]),
                                     block_bytes);
      }
    }
  }
  return chunks;
}

void BM_KvReceive(benchmark::State& state) {
  absl::StatusOr<KvTransferFixture*> fixture = Fixture();
  if (!fixture.ok()) {
    state.SkipWithError(fixture.status().ToString().c_str());
    return;
  }
  const int tokens = static_cast<int>(state.range(0));
  ScopedReservation reserved(*fixture, tokens);
  if (!reserved.status().ok()) {
    state.SkipWithError(reserved.status().ToString().c_str());
    return;
  }
  const std::vector<v1::KvTransferChunk> chunks =
      Chunks(**fixture, reserved.reservation());
  AttentionEngine& engine = (*fixture)->engine();
  for (auto _ : state) {
    for (const v1::KvTransferChunk& chunk : chunks) {
      absl::Status status = engine.ReceiveKv(chunk.reservation_id(),
                                             chunk.layer(), chunk.first_block(),
                                             chunk.num_blocks(), chunk.data());
      if (!status.ok()) {
        state.SkipWithError(status.ToString().c_str());
        return;
      }
    }
  }
  state.SetBytesProcessed(state.iterations() * (*fixture)->PromptBytes(tokens));
  state.counters["chunks"] = static_cast<double>(chunks.size());
}
BENCHMARK(BM_KvReceive)
    ->ArgName("prompt_tokens")
    ->Arg(1024)
    ->Arg(4096)
    ->Unit(benchmark::kMillisecond);

void BM_KvChunkWire(benchmark::State& state) {
  absl::StatusOr<KvTransferFixture*> fixture = Fixture();
  if (!fixture.ok()) {
    state.SkipWithError(fixture.status().ToString().c_str());
    return;
  }
  const int tokens = static_cast<int>(state.range(0));
  // The chunks need a reservation id and block count only, not a live
  // reservation.
  KvReservation reservation;
  reservation.id = 1;
  reservation.num_layers = (*fixture)->num_layers();
  reservation.num_blocks = (*fixture)->BlocksFor(tokens);
  const std::vector<v1::KvTransferChunk> chunks =
      Chunks(**fixture, reservation);
  std::string wire;
  v1::KvTransferChunk parsed;
  for (auto _ : state) {
    for (const v1::KvTransferChunk& chunk : chunks) {
      if (!chunk.SerializeToString(&wire) || !parsed.ParseFromString(wire)) {
        state.SkipWithError("KvTransferChunk did not round-trip");
        return;
      }
      benchmark::DoNotOptimize(parsed.data().data());
    }
  }
  state.SetBytesProcessed(state.iterations() * (*fixture)->PromptBytes(tokens));
}
BENCHMARK(BM_KvChunkWire)
    ->ArgName("prompt_tokens")
    ->Arg(1024)
    ->Arg(4096)
    ->Unit(benchmark::kMillisecond);

// Timed: from opening the stream to the decode server's acknowledgement.
// Not timed: reserving the blocks before, and the decode engine ending the
// sequence after (it only emits the token the transfer carried).
void BM_KvTransferStream(benchmark::State& state) {
  absl::StatusOr<KvTransferFixture*> fixture = Fixture();
  if (!fixture.ok()) {
    state.SkipWithError(fixture.status().ToString().c_str());
    return;
  }
  KvTransferFixture& f = **fixture;
  const int tokens = static_cast<int>(state.range(0));
  int64_t bytes = 0;
  double busy_seconds = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto observer = std::make_shared<ReservationObserver>();
    absl::StatusOr<AttentionEngine::SequenceId> id =
        f.Submit(tokens, kPromptSeed, observer);
    absl::StatusOr<KvReservation> reservation =
        id.ok() ? observer->WaitReserved(kWaitSeconds)
                : absl::StatusOr<KvReservation>(id.status());
    if (!reservation.ok()) {
      state.SkipWithError(reservation.status().ToString().c_str());
      return;
    }
    std::vector<std::vector<const float*>> blocks;
    for (int layer = 0; layer < reservation->num_layers; ++layer) {
      blocks.push_back(f.SourceBlocks(layer, reservation->num_blocks));
    }
    KvTransferSummary summary;
    summary.num_tokens = tokens;
    summary.tokens = {5};
    absl::Notification done;
    absl::Status send_status;
    KvSendStats stats;
    state.ResumeTiming();

    std::shared_ptr<KvSender> sender =
        KvSender::Start(&f.stub(), f.address(), *reservation,
                        [&](const absl::Status& status, const KvSendStats& s) {
                          send_status = status;
                          stats = s;
                          done.Notify();
                        });
    for (int layer = 0; layer < reservation->num_layers; ++layer) {
      sender->SendBlocks(layer, 0, blocks[layer], reservation->block_bytes);
    }
    sender->Finish(summary);
    done.WaitForNotification();

    state.PauseTiming();
    const absl::Status finished = observer->WaitFinished(kWaitSeconds);
    if (!send_status.ok() || !finished.ok()) {
      state.SkipWithError(
          (!send_status.ok() ? send_status : finished).ToString().c_str());
      return;
    }
    bytes += stats.bytes;
    busy_seconds += stats.busy_seconds;
    state.ResumeTiming();
  }
  state.SetBytesProcessed(bytes);
  // KvSender's own figure: bytes over the time they were on their way
  // (what kv_transfer_gbps reports in the cluster bench), in bytes/s,
  // printed in binary units like bytes_per_second.
  state.counters["busy_bytes_per_second"] = benchmark::Counter(
      busy_seconds > 0 ? bytes / busy_seconds : 0,
      benchmark::Counter::kDefaults, benchmark::Counter::kIs1024);
}
BENCHMARK(BM_KvTransferStream)
    ->ArgName("prompt_tokens")
    ->Arg(1024)
    ->Arg(4096)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace moe::microbench
