// The compute side of an attention server: the non-expert weights, the
// paged KV cache with prefix caching, and one executor thread that runs
// continuous batching. Each step feeds every decoding sequence's last token
// plus prompt chunks of prefilling sequences (up to a token budget) through
// one forward pass, whose MoE layers go to a MoeExecutor (the router, in a
// server), then samples one token per sequence that completed its prompt.
// Knows nothing of gRPC.
//
// Sequences come in three roles (SequenceRole): run here from prompt to end
// (an attention server of role `both`); prefilled here with the K/V shipped
// to a decode server as it is computed (role `prefill`); or decoded here
// after their K/V and first token arrived from a prefill server (role
// `decode`: the sequence reserves its blocks first, then waits for the
// transfer, which must complete within a lease).
//
// KV admission is conservative: a sequence is admitted (moves from waiting
// to running) only when the blocks of its worst case can be reserved, so a
// running sequence never runs out of KV and nothing is ever preempted.
// Admission is first-come first-served. Prompts reuse cached K/V of earlier
// prompts with the same leading blocks (reported as cached tokens).
#ifndef MOE_ATTENTION_SERVER_ATTENTION_ENGINE_H_
#define MOE_ATTENTION_SERVER_ATTENTION_ENGINE_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "attention_server/kv_transfer.h"
#include "core/kv_cache.h"
#include "core/logprobs.h"
#include "core/model_weights.h"
#include "core/moe_executor.h"
#include "core/sequence_state.h"
#include "core/thread_pool.h"
#include "core/transformer.h"

namespace moe {

struct AttentionLoadInfo;

// Watches the engine for monitoring (the server's metrics). Calls come from
// the executor thread, and OnLoad also from Submit's caller, so an
// implementation must be thread-safe; each call must be cheap.
class EngineMonitor {
 public:
  virtual ~EngineMonitor() = default;
  // The engine's load after something changed (a step, admissions,
  // cancellations, finished transfers, a submission).
  virtual void OnLoad(const AttentionLoadInfo& load) = 0;
  // One step: the sequences in its batch, the prompt tokens it computed and
  // its wall time.
  virtual void OnStep(int sequences, int prompt_tokens, double seconds) = 0;
};

struct AttentionEngineOptions {
  std::string model_dir;
  int num_threads = 0;             // compute threads; 0 = one per core
  // How long idle compute threads spin before sleeping (see ThreadPool).
  int spin_microseconds = ThreadPool::kServerSpinMicroseconds;
  // CPUs for the compute threads (core/cpu_affinity.h); empty: unpinned.
  std::vector<int> pin_cpus;
  int kv_block_size = 16;          // tokens per KV block
  int64_t kv_cache_bytes = int64_t{1} << 30;
  int prefill_chunk_tokens = 512;  // prompt tokens per step, over sequences
  int max_running = 256;           // sequences holding KV at once
  int max_waiting = 4096;          // queued sequences; more are refused
  bool prefix_cache = true;        // reuse cached K/V of earlier prompts
  // A decode-role sequence to which no K/V has come for this long (since
  // its blocks were reserved, or since the last K/V arrived) before its
  // transfer completed fails (DEADLINE_EXCEEDED) and frees them: a prefill
  // that keeps sending may take longer, a stalled one may not.
  double kv_lease_seconds = 30;
  // The clock of those leases; null: std::chrono::steady_clock. For tests,
  // with ExpireLeases.
  std::function<std::chrono::steady_clock::time_point()> lease_clock;
  // Micro-batch ping-pong (1 = off, up to 3): a step's sequences are split
  // into this many micro-batches that go through the layers interleaved, so
  // that one micro-batch's attention is computed while another's MoE step
  // runs on the router and the expert servers.
  int micro_batches = 1;
  // Borrowed; must outlive the engine. Null: nobody watches.
  EngineMonitor* monitor = nullptr;
};

enum class SequenceRole {
  kLocal,          // prefill and decode here
  kPrefillOnly,    // prefill here; K/V and first token go to a decode server
  kRemotePrefill,  // K/V and first token come from a prefill server
};

// What one sequence asks for. The request must already be valid for the
// model (see ValidateRequest); Submit checks it again.
struct SequenceSpec {
  GenerationRequest request;
  int logprobs = 0;  // top log-probabilities per token (0: none)
  SequenceRole role = SequenceRole::kLocal;
  // kPrefillOnly: where the K/V goes.
  std::shared_ptr<KvTransferSink> transfer;
};

struct SequenceUsage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_tokens = 0;
  double queue_seconds = 0;     // submitted -> admitted (KV reserved)
  double prefill_seconds = 0;   // admitted -> first token
  double transfer_seconds = 0;  // kRemotePrefill: reserved -> K/V complete
  double decode_seconds = 0;    // first token -> last token
};

struct GeneratedToken {
  int32_t token = 0;
  std::optional<TokenLogprobs> logprobs;  // when the spec asked for them
};

// Receives one sequence's events. Called on the engine's executor thread
// only (OnReserved may also come from Submit's caller), in order; nothing
// after OnFinish.
class SequenceObserver {
 public:
  virtual ~SequenceObserver() = default;
  // kRemotePrefill: the blocks are reserved; the K/V may now be sent.
  virtual void OnReserved(const KvReservation& reservation) {}
  // kPrefillOnly: the first token was sampled and every block handed to
  // the transfer sink; `finished` when that token ends the request.
  virtual void OnPrefilled(const GeneratedToken& first, bool finished,
                           FinishReason reason) {}
  // kLocal and kRemotePrefill: each token, the first included.
  virtual void OnToken(const GeneratedToken& token) {}
  // Exactly once, last. OK with the finish reason (kStop or kLength; after
  // a kPrefillOnly sequence's hand-off, kLength unless it finished; kAbort
  // after Cancel, with status CANCELLED), or the error that ended the
  // sequence (e.g. UNAVAILABLE when the router failed).
  virtual void OnFinish(const absl::Status& status, FinishReason reason,
                        const SequenceUsage& usage) = 0;
};

struct AttentionLoadInfo {
  int running = 0;  // holding KV: prefilling, decoding, awaiting a transfer
  int waiting = 0;
  int kv_blocks_total = 0;
  int kv_blocks_free = 0;      // cached-but-unused blocks included
  int kv_blocks_cached = 0;    // of those, holding a cached prefix
  int kv_blocks_reserved = 0;  // reserved by running sequences, not allocated
  int kv_block_size = 0;
  int64_t steps = 0;
  int64_t generated_tokens = 0;
  int64_t prefix_queried_tokens = 0;  // prompt tokens looked up in the cache
  int64_t prefix_hit_tokens = 0;      // of those, found
  int64_t micro_batched_steps = 0;    // steps run as 2+ micro-batches
};

// Thread-safe: every public method may be called from any thread.
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
  const KvCacheShape& kv_shape() const { return cache_->shape(); }

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

  // kRemotePrefill sequences, between OnReserved and the decode: the K/V of
  // layer `layer` for the prompt's blocks [first_block, first_block +
  // num_blocks), `data` being those blocks' bytes in order. INVALID_ARGUMENT
  // naming the field for a layer, block range or size that does not fit the
  // reservation; NOT_FOUND when the sequence is not awaiting K/V (unknown,
  // cancelled, failed or already complete).
  absl::Status ReceiveKv(SequenceId id, int layer, int first_block,
                         int num_blocks, absl::string_view data);
  // The prefill finished: decoding starts once every block of every layer
  // has arrived. FAILED_PRECONDITION naming what is missing otherwise (the
  // sequence then fails: incomplete K/V is never decoded); NOT_FOUND as for
  // ReceiveKv; INVALID_ARGUMENT for a summary that does not fit.
  absl::Status CompleteKvTransfer(SequenceId id,
                                  const KvTransferSummary& summary);
  // The transfer broke: the sequence fails with `status` and its blocks are
  // freed. Unknown ids are ignored.
  void FailKvTransfer(SequenceId id, const absl::Status& status);
  // Fails now every transfer whose lease has run out by the lease clock
  // (the executor does the same on its own when a lease runs out by the
  // steady clock); afterwards ReceiveKv answers NOT_FOUND for them.
  void ExpireLeases();

  // Refuses new sequences from now on (drain); queued and running ones go on.
  void StopAccepting();
  // True when no sequence is queued or running.
  bool Idle() const;

  // The number of leading prompt tokens the prefix cache holds now.
  int CachedPromptTokens(absl::Span<const int32_t> prompt) const;

  AttentionLoadInfo Load() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Sequence;

  AttentionEngine() = default;
  void ExecutorLoop();
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves queued sequences whose worst case fits into `admitted`.
  void AdmitLocked(std::vector<std::unique_ptr<Sequence>>& admitted)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Gives an admitted sequence its KV state (a prefix from the cache, or
  // the blocks a transfer fills); false when it failed instead.
  bool StartSequence(Sequence& seq);
  // Runs one forward pass over the running sequences.
  void Step();
  // The forward pass of `chunks`, split into micro-batches when configured
  // (ping-pong); logits in chunk order, as Transformer::Forward returns them.
  // `ship(chunk, layer)` runs once a chunk's K/V of `layer` is in the cache.
  // Chunks whose tokens the experts could not compute are added to
  // `failed` (chunk order); their logits rows are present but unusable.
  absl::StatusOr<std::vector<float>> Forward(
      absl::Span<const SequenceChunk> chunks,
      const std::function<void(size_t chunk, int layer)>& ship,
      std::vector<Transformer::FailedChunk>* failed);
  void SendPrefillKv(Sequence& seq, int layer);
  // Samples `seq`'s next token from `logits` and reports it.
  void Sample(Sequence& seq, absl::Span<float> logits);
  // Reports the end of a sequence and frees its KV blocks and reservation.
  void Finish(Sequence& seq, const absl::Status& status, FinishReason reason);
  int BlocksFor(const SequenceSpec& spec) const;
  // Now by the lease clock (AttentionEngineOptions::lease_clock).
  Clock::time_point LeaseNow() const;
  // Moves the transfers whose lease ran out by LeaseNow() to
  // failed_transfers_.
  void ExpireLeasesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Prefix hashes a prompt may match: its full blocks short of its last
  // token (which must be computed to get logits).
  std::vector<uint64_t> MatchableHashes(absl::Span<const int32_t> prompt) const;

  AttentionEngineOptions options_;
  ModelWeights weights_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<KvCache> cache_;
  // One per micro-batch; [0] runs whole steps.
  std::vector<std::unique_ptr<Transformer>> transformers_;

  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<Sequence>> waiting_ ABSL_GUARDED_BY(mu_);
  // kRemotePrefill sequences admitted and awaiting their K/V, by id; moved
  // to `transferred_` once complete.
  std::map<SequenceId, std::unique_ptr<Sequence>> awaiting_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Sequence>> transferred_ ABSL_GUARDED_BY(mu_);
  // Failed transfers: (sequence, status), for the executor to finish.
  std::vector<std::pair<std::unique_ptr<Sequence>, absl::Status>>
      failed_transfers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<SequenceId> cancelled_ ABSL_GUARDED_BY(mu_);
  SequenceId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int running_count_ ABSL_GUARDED_BY(mu_) = 0;
  int reserved_blocks_ ABSL_GUARDED_BY(mu_) = 0;  // over running sequences
  int64_t steps_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t generated_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t prefix_queried_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t prefix_hit_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t micro_batched_steps_ ABSL_GUARDED_BY(mu_) = 0;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  // Executor thread only.
  std::vector<std::unique_ptr<Sequence>> running_;
  std::thread executor_;
};

}  // namespace moe

#endif  // MOE_ATTENTION_SERVER_ATTENTION_ENGINE_H_
