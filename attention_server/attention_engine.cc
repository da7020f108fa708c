#include "attention_server/attention_engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/generator.h"
#include "core/status_macros.h"

namespace moe {
namespace {

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<AttentionEngine>> AttentionEngine::Load(
    const AttentionEngineOptions& options, MoeExecutor* moe) {
  if (options.prefill_chunk_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefill_chunk_tokens must be >= 1, got ", options.prefill_chunk_tokens));
  }
  if (options.max_running < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_running must be >= 1, got ", options.max_running));
  }
  if (options.max_waiting < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_waiting must be >= 0, got ", options.max_waiting));
  }
  std::unique_ptr<AttentionEngine> engine(new AttentionEngine());
  engine->options_ = options;
  ASSIGN_OR_RETURN(engine->weights_,
                   LoadModelWeightsFromDir(options.model_dir,
                                           WeightSelection::NonExpertOnly(),
                                           /*populate=*/true));
  ASSIGN_OR_RETURN(
      engine->cache_,
      KvCache::Create(KvCacheShape::ForModel(engine->weights_.config,
                                             options.kv_block_size),
                      options.kv_cache_bytes));
  engine->pool_ = std::make_unique<ThreadPool>(options.num_threads,
                                              options.spin_microseconds);
  engine->transformer_ = std::make_unique<Transformer>(
      &engine->weights_, engine->cache_.get(), moe, engine->pool_.get());
  engine->executor_ = std::thread([e = engine.get()] { e->ExecutorLoop(); });
  return engine;
}

AttentionEngine::~AttentionEngine() {
  {
    absl::MutexLock lock(&mu_);
    accepting_ = false;
    stopping_ = true;
  }
  if (executor_.joinable()) executor_.join();
}

int AttentionEngine::BlocksFor(const SequenceSpec& spec) const {
  return cache_->BlocksFor(static_cast<int64_t>(spec.request.prompt.size()) +
                           spec.request.max_tokens);
}

absl::StatusOr<AttentionEngine::SequenceId> AttentionEngine::Submit(
    SequenceSpec spec, std::shared_ptr<SequenceObserver> observer) {
  RETURN_IF_ERROR(ValidateRequest(weights_.config, spec.request));
  if (spec.logprobs < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("logprobs: must be >= 0, got ", spec.logprobs));
  }
  const int blocks = BlocksFor(spec);
  if (blocks > cache_->num_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "prompt + max_tokens = ",
        spec.request.prompt.size() + spec.request.max_tokens,
        " tokens need ", blocks, " KV blocks; this attention server has ",
        cache_->num_blocks(), " in all"));
  }
  auto seq = std::make_unique<Sequence>();
  seq->spec = std::move(spec);
  seq->observer = std::move(observer);
  seq->reserved_blocks = blocks;
  seq->submitted = Clock::now();
  absl::MutexLock lock(&mu_);
  if (!accepting_) {
    return absl::UnavailableError(
        "attention server is draining and takes no new requests");
  }
  if (static_cast<int>(waiting_.size()) >= options_.max_waiting) {
    return absl::ResourceExhaustedError(
        absl::StrCat("attention server queue is full (", waiting_.size(),
                     " requests waiting); retry later"));
  }
  seq->id = next_id_++;
  const SequenceId id = seq->id;
  waiting_.push_back(std::move(seq));
  return id;
}

void AttentionEngine::Cancel(SequenceId id) {
  absl::MutexLock lock(&mu_);
  cancelled_.insert(id);
}

void AttentionEngine::StopAccepting() {
  absl::MutexLock lock(&mu_);
  accepting_ = false;
}

bool AttentionEngine::Idle() const {
  absl::MutexLock lock(&mu_);
  return waiting_.empty() && running_count_ == 0;
}

AttentionLoadInfo AttentionEngine::Load() const {
  AttentionLoadInfo info;
  info.kv_blocks_total = cache_->num_blocks();
  info.kv_blocks_free = cache_->num_free_blocks();
  info.kv_block_size = cache_->shape().block_size;
  absl::MutexLock lock(&mu_);
  info.running = running_count_;
  info.waiting = static_cast<int>(waiting_.size());
  info.kv_blocks_reserved = std::max(
      0, reserved_blocks_ - (info.kv_blocks_total - info.kv_blocks_free));
  info.steps = steps_;
  info.generated_tokens = generated_tokens_;
  return info;
}

bool AttentionEngine::HasWork() const {
  if (stopping_ || !cancelled_.empty() || running_count_ > 0) return true;
  return !waiting_.empty() &&
         reserved_blocks_ + waiting_.front()->reserved_blocks <=
             cache_->num_blocks();
}

void AttentionEngine::AdmitLocked(
    std::vector<std::unique_ptr<Sequence>>& admitted) {
  while (!waiting_.empty() && running_count_ < options_.max_running) {
    const int need = waiting_.front()->reserved_blocks;
    if (reserved_blocks_ + need > cache_->num_blocks()) break;
    reserved_blocks_ += need;
    ++running_count_;
    admitted.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

void AttentionEngine::ExecutorLoop() {
  for (;;) {
    std::vector<std::unique_ptr<Sequence>> admitted, dequeued;
    absl::flat_hash_set<SequenceId> cancelled;
    bool stopping = false;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &AttentionEngine::HasWork));
      stopping = stopping_;
      cancelled.swap(cancelled_);
      for (auto it = waiting_.begin(); it != waiting_.end();) {
        if (stopping || cancelled.contains((*it)->id)) {
          dequeued.push_back(std::move(*it));
          it = waiting_.erase(it);
        } else {
          ++it;
        }
      }
      if (!stopping) AdmitLocked(admitted);
    }
    const absl::Status cancel_status =
        absl::CancelledError("the request was cancelled");
    for (std::unique_ptr<Sequence>& seq : dequeued) {
      Finish(*seq, cancel_status, FinishReason::kAbort);
    }
    for (std::unique_ptr<Sequence>& seq : running_) {
      if (stopping || cancelled.contains(seq->id)) {
        Finish(*seq, cancel_status, FinishReason::kAbort);
        seq.reset();
      }
    }
    running_.erase(std::remove(running_.begin(), running_.end(), nullptr),
                   running_.end());
    if (stopping) return;
    for (std::unique_ptr<Sequence>& seq : admitted) {
      seq->admitted = Clock::now();
      seq->state = std::make_unique<SequenceState>(&seq->spec.request,
                                                   &weights_.config);
      // Cannot fail: ids are unique and the reservation covers the blocks.
      absl::Status added = cache_->AddSequence(seq->id);
      if (!added.ok()) {
        Finish(*seq, absl::InternalError(added.message()), FinishReason::kAbort);
        continue;
      }
      running_.push_back(std::move(seq));
    }
    if (!running_.empty()) Step();
  }
}

void AttentionEngine::Step() {
  // Decode tokens first, then prompt chunks within the prefill budget.
  std::vector<SequenceChunk> chunks;
  std::vector<size_t> owners;
  chunks.reserve(running_.size());
  for (size_t i = 0; i < running_.size(); ++i) {
    const SequenceState& state = *running_[i]->state;
    if (!state.prefill_done() || state.output().empty()) continue;
    chunks.push_back({static_cast<KvCache::SeqId>(running_[i]->id),
                      state.DecodeInput(), true});
    owners.push_back(i);
  }
  int budget = options_.prefill_chunk_tokens;
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    SequenceState& state = *running_[i]->state;
    if (state.prefill_done()) continue;
    const absl::Span<const int32_t> chunk = state.TakePrefillChunk(budget);
    chunks.push_back({static_cast<KvCache::SeqId>(running_[i]->id), chunk,
                      state.prefill_done()});
    owners.push_back(i);
    budget -= static_cast<int>(chunk.size());
  }
  if (chunks.empty()) return;

  absl::StatusOr<std::vector<float>> logits = transformer_->Forward(chunks);
  const int64_t vocab = weights_.config.vocab_size;
  int64_t sampled = 0;
  if (!logits.ok()) {
    // The step's sequences have partial KV for this step: end them all.
    for (size_t owner : owners) {
      Finish(*running_[owner], logits.status(), FinishReason::kAbort);
      running_[owner].reset();
    }
  } else {
    int64_t row = 0;
    std::vector<float> raw;
    for (size_t c = 0; c < chunks.size(); ++c) {
      if (!chunks[c].want_logits) continue;
      Sequence& seq = *running_[owners[c]];
      absl::Span<float> row_logits =
          absl::MakeSpan(*logits).subspan(row * vocab, vocab);
      ++row;
      GeneratedToken out;
      if (seq.spec.logprobs > 0) raw.assign(row_logits.begin(), row_logits.end());
      out.token = seq.state->Advance(row_logits);
      if (seq.spec.logprobs > 0) {
        out.logprobs = ComputeLogprobs(raw, out.token, seq.spec.logprobs);
      }
      if (seq.state->output().size() == 1) seq.first_token = Clock::now();
      ++sampled;
      seq.observer->OnToken(out);
      if (seq.state->done()) {
        Finish(seq, absl::OkStatus(), seq.state->finish());
        running_[owners[c]].reset();
      }
    }
  }
  running_.erase(std::remove(running_.begin(), running_.end(), nullptr),
                 running_.end());
  absl::MutexLock lock(&mu_);
  ++steps_;
  generated_tokens_ += sampled;
}

void AttentionEngine::Finish(Sequence& seq, const absl::Status& status,
                             FinishReason reason) {
  const Clock::time_point now = Clock::now();
  SequenceUsage usage;
  usage.prompt_tokens = static_cast<int>(seq.spec.request.prompt.size());
  const bool admitted = seq.state != nullptr;
  if (admitted) {
    usage.completion_tokens = static_cast<int>(seq.state->output().size());
    usage.queue_seconds = Seconds(seq.admitted - seq.submitted);
    if (usage.completion_tokens > 0) {
      usage.prefill_seconds = Seconds(seq.first_token - seq.admitted);
      usage.decode_seconds = Seconds(now - seq.first_token);
    } else {
      usage.prefill_seconds = Seconds(now - seq.admitted);
    }
    // Free before reporting, so that whoever sees the end of the stream
    // also sees the blocks back in the pool.
    cache_->FreeSequence(seq.id);
    absl::MutexLock lock(&mu_);
    reserved_blocks_ -= seq.reserved_blocks;
    --running_count_;
  } else {
    usage.queue_seconds = Seconds(now - seq.submitted);
  }
  seq.observer->OnFinish(status, reason, usage);
  seq.observer.reset();
}

}  // namespace moe
