#include "attention_server/attention_engine.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/generator.h"
#include "core/status_macros.h"

namespace moe {
namespace {

std::chrono::steady_clock::duration LeaseDuration(
    const AttentionEngineOptions& options) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(options.kv_lease_seconds));
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

absl::Status NotAwaiting(uint64_t id) {
  return absl::NotFoundError(absl::StrCat(
      "reservation ", id,
      " is not awaiting K/V (unknown, cancelled, failed, timed out or "
      "complete)"));
}

}  // namespace

struct AttentionEngine::Sequence {
  SequenceId id = 0;
  SequenceSpec spec;
  std::unique_ptr<SequenceState> state;
  std::shared_ptr<SequenceObserver> observer;
  int reserved_blocks = 0;  // worst case, reserved at admission
  bool admitted = false;
  int cached_tokens = 0;
  Clock::time_point submitted, admitted_at, first_token;

  // kPrefillOnly: prompt blocks already sent in full, for every layer.
  int sent_full_blocks = 0;

  // kRemotePrefill: which (layer, block) of the prompt arrived.
  int prompt_blocks = 0;
  std::vector<bool> received;  // [layer * prompt_blocks + block]
  int missing = 0;
  Clock::time_point lease_deadline;
  KvTransferSummary summary;
  double transfer_seconds = 0;
};

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
  if (options.micro_batches < 1 || options.micro_batches > 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "micro_batches must be 1, 2 or 3, got ", options.micro_batches));
  }
  if (!(options.kv_lease_seconds > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv_lease_seconds must be > 0, got ", options.kv_lease_seconds));
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
  engine->pool_ = std::make_unique<ThreadPool>(
      options.num_threads, options.spin_microseconds, options.pin_cpus);
  for (int i = 0; i < options.micro_batches; ++i) {
    engine->transformers_.push_back(std::make_unique<Transformer>(
        &engine->weights_, engine->cache_.get(), moe, engine->pool_.get()));
  }
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
  int64_t tokens = static_cast<int64_t>(spec.request.prompt.size());
  if (spec.role != SequenceRole::kPrefillOnly) tokens += spec.request.max_tokens;
  return cache_->BlocksFor(tokens);
}

std::vector<uint64_t> AttentionEngine::MatchableHashes(
    absl::Span<const int32_t> prompt) const {
  if (!options_.prefix_cache || prompt.empty()) return {};
  return PrefixBlockHashes(prompt.subspan(0, prompt.size() - 1),
                           cache_->shape().block_size);
}

int AttentionEngine::CachedPromptTokens(
    absl::Span<const int32_t> prompt) const {
  return cache_->CachedPrefixBlocks(MatchableHashes(prompt)) *
         cache_->shape().block_size;
}

absl::StatusOr<AttentionEngine::SequenceId> AttentionEngine::Submit(
    SequenceSpec spec, std::shared_ptr<SequenceObserver> observer) {
  RETURN_IF_ERROR(ValidateRequest(weights_.config, spec.request));
  if (spec.logprobs < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("logprobs: must be >= 0, got ", spec.logprobs));
  }
  if (spec.role == SequenceRole::kPrefillOnly && spec.transfer == nullptr) {
    return absl::InvalidArgumentError(
        "a prefill-only sequence needs a K/V destination");
  }
  const int blocks = BlocksFor(spec);
  if (blocks > cache_->num_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the request's K/V needs ", blocks, " blocks of ",
        cache_->shape().block_size, " tokens; this attention server has ",
        cache_->num_blocks(), " in all"));
  }
  auto seq = std::make_unique<Sequence>();
  seq->spec = std::move(spec);
  seq->observer = std::move(observer);
  seq->reserved_blocks = blocks;
  seq->submitted = Clock::now();
  SequenceId id = 0;
  {
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
    id = seq->id;
    waiting_.push_back(std::move(seq));
  }
  if (options_.monitor != nullptr) options_.monitor->OnLoad(Load());
  return id;
}

void AttentionEngine::Cancel(SequenceId id) {
  absl::MutexLock lock(&mu_);
  cancelled_.insert(id);
}

absl::Status AttentionEngine::ReceiveKv(SequenceId id, int layer,
                                        int first_block, int num_blocks,
                                        absl::string_view data) {
  absl::MutexLock lock(&mu_);
  auto it = awaiting_.find(id);
  if (it == awaiting_.end()) return NotAwaiting(id);
  Sequence& seq = *it->second;
  const int layers = weights_.config.num_layers;
  if (layer < 0 || layer >= layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer: ", layer, " is outside [0, ", layers, ")"));
  }
  if (first_block < 0 || first_block >= seq.prompt_blocks) {
    return absl::InvalidArgumentError(
        absl::StrCat("first_block: ", first_block, " must be in [0, ",
                     seq.prompt_blocks, ") (the reservation's blocks)"));
  }
  if (num_blocks < 1 ||
      first_block + static_cast<int64_t>(num_blocks) > seq.prompt_blocks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_blocks: ", num_blocks, " must be >= 1 and end within the "
        "reservation's ", seq.prompt_blocks, " blocks (first_block ",
        first_block, ")"));
  }
  const int64_t block_bytes = cache_->BlockBytesPerLayer();
  if (static_cast<int64_t>(data.size()) != num_blocks * block_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data: holds ", data.size(), " bytes but ", num_blocks,
        " blocks of this cache's layout need ", num_blocks * block_bytes));
  }
  // Under the lock, so that the executor cannot free the blocks meanwhile.
  const std::vector<int32_t> table = cache_->BlockTable(id);
  const int missing_before = seq.missing;
  for (int i = 0; i < num_blocks; ++i) {
    std::memcpy(cache_->BlockData(layer, table[first_block + i]),
                data.data() + i * block_bytes, block_bytes);
    const size_t slot =
        static_cast<size_t>(layer) * seq.prompt_blocks + first_block + i;
    if (!seq.received[slot]) {
      seq.received[slot] = true;
      --seq.missing;
    }
  }
  // New blocks came, so the prefill is making progress: the lease runs from
  // now (blocks sent again do not extend it).
  if (seq.missing < missing_before) {
    seq.lease_deadline = LeaseNow() + LeaseDuration(options_);
  }
  return absl::OkStatus();
}

absl::Status AttentionEngine::CompleteKvTransfer(
    SequenceId id, const KvTransferSummary& summary) {
  absl::MutexLock lock(&mu_);
  auto it = awaiting_.find(id);
  if (it == awaiting_.end()) return NotAwaiting(id);
  Sequence& seq = *it->second;
  const int prompt = seq.state->prompt_tokens();
  absl::Status status;
  if (summary.num_tokens != prompt) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "num_tokens: the transfer covers ", summary.num_tokens,
        " tokens but the prompt has ", prompt));
  } else if (summary.tokens.empty()) {
    status = absl::InvalidArgumentError(
        "tokens: the prefill sampled no first token");
  } else if (static_cast<int64_t>(summary.tokens.size()) >
             seq.spec.request.max_tokens) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "tokens: the prefill sent ", summary.tokens.size(),
        " tokens, more than the request's max_tokens ",
        seq.spec.request.max_tokens));
  } else if (seq.missing > 0) {
    const auto first_missing =
        std::find(seq.received.begin(), seq.received.end(), false) -
        seq.received.begin();
    status = absl::FailedPreconditionError(absl::StrCat(
        "K/V incomplete: ", seq.missing, " of ", seq.received.size(),
        " layer blocks never arrived (first: layer ",
        first_missing / seq.prompt_blocks, ", block ",
        first_missing % seq.prompt_blocks,
        "); incomplete K/V is never decoded"));
  } else {
    for (int32_t token : summary.tokens) {
      if (token < 0 || token >= weights_.config.vocab_size) {
        status = absl::InvalidArgumentError(absl::StrCat(
            "tokens: token id ", token, " is outside the vocabulary"));
      }
    }
  }
  std::unique_ptr<Sequence> moved = std::move(it->second);
  awaiting_.erase(it);
  if (!status.ok()) {
    failed_transfers_.emplace_back(std::move(moved), status);
    return status;
  }
  moved->summary = summary;
  moved->transfer_seconds = Seconds(Clock::now() - moved->admitted_at);
  transferred_.push_back(std::move(moved));
  return absl::OkStatus();
}

void AttentionEngine::FailKvTransfer(SequenceId id, const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  auto it = awaiting_.find(id);
  if (it == awaiting_.end()) return;
  failed_transfers_.emplace_back(std::move(it->second), status);
  awaiting_.erase(it);
}

void AttentionEngine::ExpireLeases() {
  absl::MutexLock lock(&mu_);
  ExpireLeasesLocked();
}

void AttentionEngine::ExpireLeasesLocked() {
  const Clock::time_point now = LeaseNow();
  for (auto it = awaiting_.begin(); it != awaiting_.end();) {
    if (now < it->second->lease_deadline) {
      ++it;
      continue;
    }
    failed_transfers_.emplace_back(
        std::move(it->second),
        absl::DeadlineExceededError(absl::StrCat(
            "no K/V of the prompt arrived for the ", options_.kv_lease_seconds,
            " s lease of its reservation (counted from the reservation and "
            "from each arrival); the request was not decoded")));
    it = awaiting_.erase(it);
  }
}

AttentionEngine::Clock::time_point AttentionEngine::LeaseNow() const {
  return options_.lease_clock ? options_.lease_clock() : Clock::now();
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
  info.kv_blocks_cached = cache_->num_cached_blocks();
  info.kv_block_size = cache_->shape().block_size;
  absl::MutexLock lock(&mu_);
  info.running = running_count_;
  info.waiting = static_cast<int>(waiting_.size());
  info.kv_blocks_reserved = std::max(
      0, reserved_blocks_ - (info.kv_blocks_total - info.kv_blocks_free));
  info.steps = steps_;
  info.generated_tokens = generated_tokens_;
  info.prefix_queried_tokens = prefix_queried_tokens_;
  info.prefix_hit_tokens = prefix_hit_tokens_;
  info.micro_batched_steps = micro_batched_steps_;
  return info;
}

bool AttentionEngine::HasWork() const {
  if (stopping_ || !cancelled_.empty() || !transferred_.empty() ||
      !failed_transfers_.empty()) {
    return true;
  }
  // Sequences to step: those holding KV that are not awaiting a transfer.
  if (running_count_ > static_cast<int>(awaiting_.size())) return true;
  return !waiting_.empty() && running_count_ < options_.max_running &&
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
    waiting_.front()->admitted = true;
    admitted.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

bool AttentionEngine::StartSequence(Sequence& seq) {
  seq.admitted_at = Clock::now();
  seq.state =
      std::make_unique<SequenceState>(&seq.spec.request, &weights_.config);
  const std::vector<int32_t>& prompt = seq.spec.request.prompt;
  if (seq.spec.role == SequenceRole::kRemotePrefill) {
    // The blocks the transfer fills, allocated now; ids never change.
    absl::Status status = cache_->AddSequence(seq.id);
    if (status.ok()) status = cache_->Append(seq.id, prompt.size());
    if (!status.ok()) {
      Finish(seq, absl::InternalError(status.message()), FinishReason::kAbort);
      return false;
    }
    seq.prompt_blocks = cache_->BlocksFor(prompt.size());
    seq.received.assign(
        static_cast<size_t>(seq.prompt_blocks) * weights_.config.num_layers,
        false);
    seq.missing = static_cast<int>(seq.received.size());
    seq.lease_deadline = LeaseNow() + LeaseDuration(options_);
    return true;
  }
  const std::vector<uint64_t> hashes = MatchableHashes(prompt);
  absl::StatusOr<int> cached = cache_->AddSequenceWithPrefix(seq.id, hashes);
  if (!cached.ok()) {
    Finish(seq, absl::InternalError(cached.status().message()),
           FinishReason::kAbort);
    return false;
  }
  seq.cached_tokens = *cached;
  seq.state->MarkPrefilled(*cached);
  absl::MutexLock lock(&mu_);
  prefix_queried_tokens_ += static_cast<int64_t>(prompt.size());
  prefix_hit_tokens_ += *cached;
  return true;
}

void AttentionEngine::ExecutorLoop() {
  // Best effort: unpinned, the steps compute the same results.
  pool_->PinOwner().IgnoreError();
  for (;;) {
    std::vector<std::unique_ptr<Sequence>> admitted, dequeued, transferred;
    std::vector<std::pair<std::unique_ptr<Sequence>, absl::Status>> failed;
    absl::flat_hash_set<SequenceId> cancelled;
    bool stopping = false;
    {
      absl::MutexLock lock(&mu_);
      // Sleep until there is work, or until the earliest transfer lease
      // runs out.
      absl::Time wake = absl::InfiniteFuture();
      const Clock::time_point lease_now = LeaseNow();
      for (const auto& [id, seq] : awaiting_) {
        wake = std::min(wake, absl::Now() + absl::FromChrono(
                                                seq->lease_deadline -
                                                lease_now));
      }
      mu_.AwaitWithDeadline(absl::Condition(this, &AttentionEngine::HasWork),
                            wake);
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
      for (auto it = awaiting_.begin(); it != awaiting_.end();) {
        Sequence& seq = *it->second;
        if (stopping || cancelled.contains(seq.id)) {
          failed.emplace_back(std::move(it->second),
                              absl::CancelledError("the request was cancelled"));
          it = awaiting_.erase(it);
        } else {
          ++it;
        }
      }
      ExpireLeasesLocked();
      for (auto& entry : failed_transfers_) failed.push_back(std::move(entry));
      failed_transfers_.clear();
      transferred.swap(transferred_);
      if (!stopping) AdmitLocked(admitted);
    }
    const absl::Status cancel_status =
        absl::CancelledError("the request was cancelled");
    for (std::unique_ptr<Sequence>& seq : dequeued) {
      Finish(*seq, cancel_status, FinishReason::kAbort);
    }
    for (auto& [seq, status] : failed) {
      Finish(*seq, status, FinishReason::kAbort);
    }
    for (std::unique_ptr<Sequence>& seq : running_) {
      if (stopping || cancelled.contains(seq->id)) {
        Finish(*seq, cancel_status, FinishReason::kAbort);
        seq.reset();
      }
    }
    running_.erase(std::remove(running_.begin(), running_.end(), nullptr),
                   running_.end());
    // Transfers that completed: the prefill's tokens come first.
    for (std::unique_ptr<Sequence>& seq : transferred) {
      if (stopping || cancelled.contains(seq->id)) {
        Finish(*seq, cancel_status, FinishReason::kAbort);
        continue;
      }
      seq->cached_tokens = seq->summary.cached_tokens;
      seq->state->Resume(seq->summary.tokens);
      seq->first_token = Clock::now();
      for (size_t i = 0; i < seq->summary.tokens.size(); ++i) {
        GeneratedToken out;
        out.token = seq->summary.tokens[i];
        if (i == 0 && seq->spec.logprobs > 0) out.logprobs = seq->summary.logprobs;
        seq->observer->OnToken(out);
      }
      if (seq->state->done()) {
        Finish(*seq, absl::OkStatus(), seq->state->finish());
      } else {
        running_.push_back(std::move(seq));
      }
    }
    if (stopping) return;
    for (std::unique_ptr<Sequence>& seq : admitted) {
      if (!StartSequence(*seq)) continue;
      if (seq->spec.role == SequenceRole::kRemotePrefill) {
        KvReservation reservation;
        reservation.id = seq->id;
        reservation.num_blocks = seq->prompt_blocks;
        reservation.block_size = cache_->shape().block_size;
        reservation.num_layers = weights_.config.num_layers;
        reservation.block_bytes = cache_->BlockBytesPerLayer();
        std::shared_ptr<SequenceObserver> observer = seq->observer;
        {
          absl::MutexLock lock(&mu_);
          awaiting_.emplace(seq->id, std::move(seq));
        }
        observer->OnReserved(reservation);
        continue;
      }
      running_.push_back(std::move(seq));
    }
    if (!running_.empty()) Step();
    if (options_.monitor != nullptr) options_.monitor->OnLoad(Load());
  }
}

void AttentionEngine::SendPrefillKv(Sequence& seq, int layer) {
  const int end = cache_->BlocksFor(seq.state->prefilled());
  if (end <= seq.sent_full_blocks) return;
  const std::vector<int32_t> table = cache_->BlockTable(seq.id);
  std::vector<const float*> blocks;
  blocks.reserve(end - seq.sent_full_blocks);
  for (int b = seq.sent_full_blocks; b < end; ++b) {
    blocks.push_back(cache_->BlockData(layer, table[b]));
  }
  seq.spec.transfer->SendBlocks(layer, seq.sent_full_blocks, blocks,
                                cache_->BlockBytesPerLayer());
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
  int prompt_tokens = 0;
  std::vector<Sequence*> shipping;  // prefill-only sequences in this pass
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    SequenceState& state = *running_[i]->state;
    if (state.prefill_done()) continue;
    const absl::Span<const int32_t> chunk = state.TakePrefillChunk(budget);
    chunks.push_back({static_cast<KvCache::SeqId>(running_[i]->id), chunk,
                      state.prefill_done()});
    owners.push_back(i);
    budget -= static_cast<int>(chunk.size());
    prompt_tokens += static_cast<int>(chunk.size());
    if (running_[i]->spec.role == SequenceRole::kPrefillOnly) {
      shipping.push_back(running_[i].get());
    }
  }
  if (chunks.empty()) return;
  const Clock::time_point step_start = Clock::now();

  // A prefill-only sequence's blocks go out layer by layer as they are
  // written, overlapping the rest of the pass.
  std::function<void(size_t, int)> ship;
  if (!shipping.empty()) {
    ship = [&](size_t chunk, int layer) {
      Sequence& seq = *running_[owners[chunk]];
      if (seq.spec.role == SequenceRole::kPrefillOnly) SendPrefillKv(seq, layer);
    };
  }
  std::vector<Transformer::FailedChunk> failed;
  absl::StatusOr<std::vector<float>> logits = Forward(chunks, ship, &failed);
  const int block_size = cache_->shape().block_size;
  for (Sequence* seq : shipping) {
    seq->sent_full_blocks = seq->state->prefilled() / block_size;
  }
  const int64_t vocab = weights_.config.vocab_size;
  int64_t sampled = 0;
  if (!logits.ok()) {
    // The step's sequences have partial KV for this step: end them all.
    for (size_t owner : owners) {
      Finish(*running_[owner], logits.status(), FinishReason::kAbort);
      running_[owner].reset();
    }
  } else {
    // Chunks whose tokens an expert could not compute end with that error
    // (their K/V of this step is unusable); the rest go on.
    for (const Transformer::FailedChunk& f : failed) {
      Finish(*running_[owners[f.chunk]], f.status, FinishReason::kAbort);
      running_[owners[f.chunk]].reset();
    }
    int64_t row = 0;
    for (size_t c = 0; c < chunks.size(); ++c) {
      if (!chunks[c].want_logits) continue;
      if (running_[owners[c]] == nullptr) {  // failed above
        ++row;
        continue;
      }
      Sequence& seq = *running_[owners[c]];
      Sample(seq, absl::MakeSpan(*logits).subspan(row * vocab, vocab));
      ++row;
      ++sampled;
      if (seq.state->done() || seq.spec.role == SequenceRole::kPrefillOnly) {
        running_[owners[c]].reset();  // Sample finished it
      }
    }
  }
  running_.erase(std::remove(running_.begin(), running_.end(), nullptr),
                 running_.end());
  {
    absl::MutexLock lock(&mu_);
    ++steps_;
    generated_tokens_ += sampled;
  }
  if (options_.monitor != nullptr) {
    options_.monitor->OnStep(
        static_cast<int>(chunks.size()), prompt_tokens,
        std::chrono::duration<double>(Clock::now() - step_start).count());
  }
}

absl::StatusOr<std::vector<float>> AttentionEngine::Forward(
    absl::Span<const SequenceChunk> chunks,
    const std::function<void(size_t chunk, int layer)>& ship,
    std::vector<Transformer::FailedChunk>* failed) {
  const int layers = weights_.config.num_layers;
  const size_t m = std::min<size_t>(transformers_.size(), chunks.size());
  if (m <= 1) {
    std::function<void(int)> hook;
    if (ship) {
      hook = [&](int layer) {
        for (size_t c = 0; c < chunks.size(); ++c) ship(c, layer);
      };
    }
    absl::StatusOr<std::vector<float>> logits =
        transformers_[0]->Forward(chunks, hook);
    if (logits.ok()) *failed = transformers_[0]->failed_chunks();
    return logits;
  }
  // Contiguous micro-batches of about equal token counts.
  int64_t total = 0;
  for (const SequenceChunk& chunk : chunks) total += chunk.tokens.size();
  std::vector<size_t> begin(m + 1, chunks.size());
  begin[0] = 0;
  int64_t seen = 0;
  size_t next = 1;
  for (size_t c = 0; c < chunks.size() && next < m; ++c) {
    seen += chunks[c].tokens.size();
    // Leave at least one chunk for each remaining micro-batch.
    if (seen * static_cast<int64_t>(m) >= total * static_cast<int64_t>(next) ||
        chunks.size() - (c + 1) == m - next) {
      begin[next++] = c + 1;
    }
  }
  for (size_t i = 0; i < m; ++i) {
    RETURN_IF_ERROR(transformers_[i]->Begin(
        chunks.subspan(begin[i], begin[i + 1] - begin[i])));
  }
  {
    absl::MutexLock lock(&mu_);
    ++micro_batched_steps_;
  }
  // Ping-pong: micro-batch i waits for its previous layer's MoE step only
  // after the others have sent theirs, then computes its attention while
  // theirs run.
  absl::Status status;
  for (int l = 0; l < layers && status.ok(); ++l) {
    for (size_t i = 0; i < m && status.ok(); ++i) {
      Transformer& t = *transformers_[i];
      if (l > 0) status = t.FinishFfn(l - 1);
      if (status.ok()) status = t.AttentionLayer(l);
      if (status.ok() && ship) {
        for (size_t c = begin[i]; c < begin[i + 1]; ++c) ship(c, l);
      }
      if (status.ok()) status = t.StartFfn(l);
    }
  }
  if (!status.ok()) {
    // Every started MoE step is waited for, also after an error.
    for (size_t i = 0; i < m; ++i) transformers_[i]->Abandon();
    return status;
  }
  for (size_t i = 0; i < m && status.ok(); ++i) {
    status = transformers_[i]->FinishFfn(layers - 1);
  }
  if (!status.ok()) {
    for (size_t i = 0; i < m; ++i) transformers_[i]->Abandon();
    return status;
  }
  std::vector<float> logits;
  for (size_t i = 0; i < m; ++i) {
    ASSIGN_OR_RETURN(std::vector<float> part, transformers_[i]->End());
    logits.insert(logits.end(), part.begin(), part.end());
    for (Transformer::FailedChunk f : transformers_[i]->failed_chunks()) {
      f.chunk += begin[i];
      failed->push_back(std::move(f));
    }
  }
  return logits;
}

void AttentionEngine::Sample(Sequence& seq, absl::Span<float> logits) {
  GeneratedToken out;
  std::vector<float> raw;
  if (seq.spec.logprobs > 0) raw.assign(logits.begin(), logits.end());
  const bool first = seq.state->output().empty();
  out.token = seq.state->Advance(logits);
  if (seq.spec.logprobs > 0) {
    out.logprobs = ComputeLogprobs(raw, out.token, seq.spec.logprobs);
  }
  if (first) {
    seq.first_token = Clock::now();
    // The prompt's full blocks are final now: later prompts may share them.
    if (options_.prefix_cache) {
      cache_->RegisterPrefix(
          seq.id,
          PrefixBlockHashes(seq.spec.request.prompt, cache_->shape().block_size))
          .IgnoreError();  // cannot fail: the blocks exist and are full
    }
  }
  if (seq.spec.role == SequenceRole::kPrefillOnly) {
    KvTransferSummary summary;
    summary.num_tokens = seq.state->prompt_tokens();
    summary.tokens = {out.token};
    summary.logprobs = out.logprobs;
    summary.cached_tokens = seq.cached_tokens;
    summary.queue_seconds = Seconds(seq.admitted_at - seq.submitted);
    summary.prefill_seconds = Seconds(seq.first_token - seq.admitted_at);
    seq.spec.transfer->Finish(summary);
    seq.observer->OnPrefilled(out, seq.state->done(), seq.state->finish());
    Finish(seq, absl::OkStatus(),
           seq.state->done() ? seq.state->finish() : FinishReason::kLength);
    return;
  }
  seq.observer->OnToken(out);
  if (seq.state->done()) {
    Finish(seq, absl::OkStatus(), seq.state->finish());
  }
}

void AttentionEngine::Finish(Sequence& seq, const absl::Status& status,
                             FinishReason reason) {
  const Clock::time_point now = Clock::now();
  SequenceUsage usage;
  usage.prompt_tokens = static_cast<int>(seq.spec.request.prompt.size());
  usage.cached_tokens = seq.cached_tokens;
  if (seq.admitted) {
    usage.queue_seconds = Seconds(seq.admitted_at - seq.submitted);
    if (seq.state != nullptr) {
      usage.completion_tokens = static_cast<int>(seq.state->output().size());
    }
    if (seq.spec.role == SequenceRole::kRemotePrefill) {
      // Queue and prefill happened on the prefill server.
      usage.queue_seconds += seq.summary.queue_seconds;
      usage.prefill_seconds = seq.summary.prefill_seconds;
      usage.transfer_seconds = seq.transfer_seconds;
    } else if (usage.completion_tokens > 0) {
      usage.prefill_seconds = Seconds(seq.first_token - seq.admitted_at);
    } else {
      usage.prefill_seconds = Seconds(now - seq.admitted_at);
    }
    if (usage.completion_tokens > 0 &&
        seq.spec.role != SequenceRole::kPrefillOnly) {
      usage.decode_seconds = Seconds(now - seq.first_token);
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
  if (seq.spec.role == SequenceRole::kPrefillOnly && !status.ok() &&
      seq.spec.transfer != nullptr) {
    seq.spec.transfer->Abort(status);
  }
  seq.observer->OnFinish(status, reason, usage);
  seq.observer.reset();
}

}  // namespace moe
