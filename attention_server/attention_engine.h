// The compute side of an attention server (role `both`): the non-expert
// weights, the paged KV cache and one executor thread that runs continuous
// batching. Each step feeds every decoding sequence's last token plus prompt
// chunks of prefilling sequences (up to a token budget) through one forward
// pass, whose MoE layers go to a MoeExecutor (the router, in a server), then
// samples and streams one token per sequence that completed its prompt.
// Knows nothing of gRPC.
//
// KV admission is conservative: a sequence is admitted (moves from waiting
// to running) only when the blocks for its worst case, prompt + max_tokens
// tokens, can be reserved, so a running sequence never runs out of KV and
// nothing is ever preempted. Admission is first-come first-served.
#ifndef MOE_ATTENTION_SERVER_ATTENTION_ENGINE_H_
#define MOE_ATTENTION_SERVER_ATTENTION_ENGINE_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/kv_cache.h"
#include "core/logprobs.h"
#include "core/model_weights.h"
#include "core/moe_executor.h"
#include "core/sequence_state.h"
#include "core/thread_pool.h"
#include "core/transformer.h"

namespace moe {

struct AttentionEngineOptions {
  std::string model_dir;
  int num_threads = 0;             // compute threads; 0 = one per core
  // How long idle compute threads spin before sleeping (see ThreadPool).
  int spin_microseconds = ThreadPool::kServerSpinMicroseconds;
  int kv_block_size = 16;          // tokens per KV block
  int64_t kv_cache_bytes = int64_t{1} << 30;
  int prefill_chunk_tokens = 512;  // prompt tokens per step, over sequences
  int max_running = 256;           // sequences holding KV at once
  int max_waiting = 4096;          // queued sequences; more are refused
};

// What one sequence asks for. The request must already be valid for the
// model (see ValidateRequest); Submit checks it again.
struct SequenceSpec {
  GenerationRequest request;
  int logprobs = 0;  // top log-probabilities per token (0: none)
};

struct SequenceUsage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_tokens = 0;
  double queue_seconds = 0;    // submitted -> admitted (KV reserved)
  double prefill_seconds = 0;  // admitted -> first token
  double decode_seconds = 0;   // first token -> last token
};

struct GeneratedToken {
  int32_t token = 0;
  std::optional<TokenLogprobs> logprobs;  // when the spec asked for them
};

// Receives one sequence's tokens. Called on the engine's executor thread
// only, in order; OnToken never after OnFinish.
class SequenceObserver {
 public:
  virtual ~SequenceObserver() = default;
  virtual void OnToken(const GeneratedToken& token) = 0;
  // Exactly once, last. OK with the finish reason (kStop or kLength; kAbort
  // after Cancel, with status CANCELLED), or the error that ended the
  // sequence (e.g. UNAVAILABLE when the router failed).
  virtual void OnFinish(const absl::Status& status, FinishReason reason,
                        const SequenceUsage& usage) = 0;
};

struct AttentionLoadInfo {
  int running = 0;
  int waiting = 0;
  int kv_blocks_total = 0;
  int kv_blocks_free = 0;
  int kv_blocks_reserved = 0;  // reserved by running sequences, not allocated
  int kv_block_size = 0;
  int64_t steps = 0;
  int64_t generated_tokens = 0;
};

// Thread-safe: Submit, Cancel, Load and StopAccepting may be called from any
// thread.
class AttentionEngine {
 public:
  using SequenceId = uint64_t;

  // Loads the non-expert weights and creates the KV cache. `moe` runs the
  // routed experts of every MoE layer; borrowed, must outlive the engine, and
  // is called from the executor thread only.
  static absl::StatusOr<std::unique_ptr<AttentionEngine>> Load(
      const AttentionEngineOptions& options, MoeExecutor* moe);
  // Cancels everything still queued or running (each observer gets
  // OnFinish(CANCELLED)), then stops the executor.
  ~AttentionEngine();

  const ModelConfig& config() const { return weights_.config; }

  // Queues a sequence. Errors (the observer is then never called):
  // INVALID_ARGUMENT naming the field, RESOURCE_EXHAUSTED when its worst
  // case can never fit the KV cache or the queue is full, UNAVAILABLE after
  // StopAccepting.
  absl::StatusOr<SequenceId> Submit(SequenceSpec spec,
                                    std::shared_ptr<SequenceObserver> observer);
  // Ends a queued or running sequence: its KV blocks are freed and its
  // observer gets OnFinish(CANCELLED, kAbort) before the next step. Unknown
  // or finished ids are ignored.
  void Cancel(SequenceId id);

  // Refuses new sequences from now on (drain); queued and running ones go on.
  void StopAccepting();
  // True when no sequence is queued or running.
  bool Idle() const;

  AttentionLoadInfo Load() const;

 private:
  using Clock = std::chrono::steady_clock;

  struct Sequence {
    SequenceId id = 0;
    SequenceSpec spec;
    std::unique_ptr<SequenceState> state;
    std::shared_ptr<SequenceObserver> observer;
    int reserved_blocks = 0;  // worst case, reserved at admission
    Clock::time_point submitted, admitted, first_token;
  };

  AttentionEngine() = default;
  void ExecutorLoop();
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves queued sequences whose worst case fits into `admitted`.
  void AdmitLocked(std::vector<std::unique_ptr<Sequence>>& admitted)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs one forward pass over the running sequences.
  void Step();
  // Reports the end of a sequence and frees its KV blocks and reservation.
  void Finish(Sequence& seq, const absl::Status& status, FinishReason reason);
  int BlocksFor(const SequenceSpec& spec) const;

  AttentionEngineOptions options_;
  ModelWeights weights_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<Transformer> transformer_;

  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<Sequence>> waiting_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<SequenceId> cancelled_ ABSL_GUARDED_BY(mu_);
  SequenceId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int running_count_ ABSL_GUARDED_BY(mu_) = 0;
  int reserved_blocks_ ABSL_GUARDED_BY(mu_) = 0;  // over running sequences
  int64_t steps_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t generated_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  // Executor thread only.
  std::vector<std::unique_ptr<Sequence>> running_;
  std::thread executor_;
};

}  // namespace moe

#endif  // MOE_ATTENTION_SERVER_ATTENTION_ENGINE_H_
