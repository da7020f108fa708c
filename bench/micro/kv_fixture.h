// Both ends of a K/V transfer in one process, for kv_transfer_bench.cc.
//
// The decode end is a real AttentionEngine served by the real
// AttentionServiceImpl (role decode) on 127.0.0.1:0, so TransferKv runs
// KvReceiver -> AttentionEngine::ReceiveKv as on a decode server. Its MoE
// executor is never called: every sequence asks only for the token the
// prefill sampled, so no decode step runs, and no router is needed.
//
// The prefill end is a KvCache of the same shape holding a prompt of
// kMaxPromptTokens tokens of random K/V (written with cpu::WriteKv): the
// blocks a prefill server would hand to its KvSender.
//
// Not thread-safe except where noted; benchmarks drive it from one thread.
#ifndef MOE_BENCH_MICRO_KV_FIXTURE_H_
#define MOE_BENCH_MICRO_KV_FIXTURE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "attention_server/attention_engine.h"
#include "attention_server/attention_metrics.h"
#include "attention_server/attention_service.h"
#include "core/kv_cache.h"
#include "core/moe_executor.h"
#include "grpcpp/server.h"
#include "moe/v1/attention.grpc.pb.h"
#include "prometheus/registry.h"

namespace moe::microbench {

// The longest prompt a benchmark may transfer.
inline constexpr int kMaxPromptTokens = 4096;

// Follows one kRemotePrefill sequence. Thread-safe: the engine calls it
// from its executor thread (and OnReserved possibly from Submit's caller).
class ReservationObserver : public SequenceObserver {
 public:
  void OnReserved(const KvReservation& reservation) override;
  void OnFinish(const absl::Status& status, FinishReason reason,
                const SequenceUsage& usage) override;

  // The reservation once the blocks are reserved; the sequence's error if
  // it ended first; DEADLINE_EXCEEDED after `timeout_seconds`.
  absl::StatusOr<KvReservation> WaitReserved(double timeout_seconds);
  // How the sequence ended; DEADLINE_EXCEEDED after `timeout_seconds`.
  absl::Status WaitFinished(double timeout_seconds);

 private:
  absl::Mutex mu_;
  bool reserved_ ABSL_GUARDED_BY(mu_) = false;
  KvReservation reservation_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

class KvTransferFixture {
 public:
  // Generates the model into ScratchDir(), loads the decode engine, starts
  // its service and fills the prefill cache. The decode engine's KV cache
  // holds two kMaxPromptTokens reservations.
  static absl::StatusOr<std::unique_ptr<KvTransferFixture>> Create();
  ~KvTransferFixture();

  AttentionEngine& engine() { return *engine_; }
  // The decode server's address and a stub to it (owned here).
  const std::string& address() const { return address_; }
  v1::AttentionService::Stub& stub() { return *stub_; }

  int num_layers() const { return source_->shape().num_layers; }
  // Bytes of one block of one layer (the same on both ends).
  int64_t block_bytes() const { return source_->BlockBytesPerLayer(); }
  // Blocks a `tokens`-token prompt fills.
  int BlocksFor(int tokens) const { return source_->BlocksFor(tokens); }
  // Bytes of the K/V of a `tokens`-token prompt: whole blocks, all layers.
  int64_t PromptBytes(int tokens) const;
  // The prefill end's blocks [0, num_blocks) of `layer`, each block_bytes()
  // contiguous bytes (KvCache::BlockData), valid while the fixture lives.
  std::vector<const float*> SourceBlocks(int layer, int num_blocks) const;

  // Submits a kRemotePrefill sequence with a `tokens`-token prompt (random
  // tokens, seeded by `seed`) and max_tokens 1, followed by `observer`.
  absl::StatusOr<AttentionEngine::SequenceId> Submit(
      int tokens, uint32_t seed, std::shared_ptr<ReservationObserver> observer);

 private:
  KvTransferFixture() = default;

  // Never called (see the file comment); fails if it is.
  class NoMoe : public MoeExecutor {
   public:
    absl::Status RunMoe(int layer, const float* x, int64_t tokens,
                        float* out) override;
  };

  // Destroyed bottom-up: the stub, the server (shut down in the
  // destructor), the service, then the engine it serves.
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<AttentionMetrics> metrics_;
  NoMoe moe_;
  std::unique_ptr<AttentionEngine> engine_;
  std::unique_ptr<AttentionServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::unique_ptr<v1::AttentionService::Stub> stub_;
  int vocab_ = 0;

  std::unique_ptr<KvCache> source_;
  std::vector<int32_t> source_table_;
};

}  // namespace moe::microbench

#endif  // MOE_BENCH_MICRO_KV_FIXTURE_H_
