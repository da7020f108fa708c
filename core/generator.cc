#include "core/generator.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Samples one sequence's next token and reports it to the streaming hook.
void Advance(const GeneratorOptions& options, size_t index, SequenceState& r,
             absl::Span<float> logits) {
  const int32_t token = r.Advance(logits);
  if (options.on_token) options.on_token(index, token);
}

}  // namespace

absl::Status ValidateRequest(const ModelConfig& config,
                             const GenerationRequest& request) {
  if (request.prompt.empty()) {
    return absl::InvalidArgumentError("prompt_ids: the prompt is empty");
  }
  for (size_t i = 0; i < request.prompt.size(); ++i) {
    const int32_t id = request.prompt[i];
    if (id < 0 || id >= config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt_ids[", i, "]: token id ", id,
                       " is outside the vocabulary [0, ", config.vocab_size, ")"));
    }
  }
  // The prompt alone leaves no room for a token: the prompt is at fault,
  // whatever max_tokens says.
  if (static_cast<int64_t>(request.prompt.size()) >=
      config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt_ids: the prompt's ", request.prompt.size(),
        " tokens leave no room for a token in the context length ",
        config.max_position_embeddings));
  }
  if (request.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens: must be >= 1, got ", request.max_tokens));
  }
  const int64_t needed =
      static_cast<int64_t>(request.prompt.size()) + request.max_tokens;
  if (needed > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_tokens: prompt (", request.prompt.size(), " tokens) + max_tokens (",
        request.max_tokens, ") = ", needed, " exceeds the context length ",
        config.max_position_embeddings));
  }
  for (int32_t id : request.stop_token_ids) {
    if (id < 0 || id >= config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop_token_ids: token id ", id,
                       " is outside the vocabulary [0, ", config.vocab_size, ")"));
    }
  }
  absl::Status sampling = ValidateSamplingParams(request.sampling);
  if (!sampling.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.", sampling.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<BatchGeneration> GenerateBatch(
    Engine& engine, absl::Span<const GenerationRequest> requests,
    const GeneratorOptions& options) {
  const ModelConfig& config = engine.config();
  for (size_t i = 0; i < requests.size(); ++i) {
    absl::Status s = ValidateRequest(config, requests[i]);
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("request ", i, ": ", s.message()));
    }
  }
  if (options.prefill_chunk_tokens < 1) {
    return absl::InvalidArgumentError("prefill_chunk_tokens must be >= 1");
  }

  std::vector<SequenceState> running;
  running.reserve(requests.size());
  for (const GenerationRequest& req : requests) running.emplace_back(&req, &config);
  // Sequence ids are the request indices; freed on every exit path.
  struct Release {
    Engine& engine;
    size_t n;
    ~Release() {
      for (size_t i = 0; i < n; ++i) engine.EndSequence(i);
    }
  } release{engine, 0};
  for (size_t i = 0; i < running.size(); ++i) {
    RETURN_IF_ERROR(engine.StartSequence(i));
    release.n = i + 1;
  }

  BatchGeneration out;
  // Chunked prefill: each step takes up to prefill_chunk_tokens prompt
  // tokens across sequences; a sequence whose prompt completes samples its
  // first token from that step's logits.
  const auto prefill_start = Clock::now();
  for (;;) {
    std::vector<SequenceChunk> chunks;
    std::vector<size_t> owners;
    int budget = options.prefill_chunk_tokens;
    for (size_t i = 0; i < running.size() && budget > 0; ++i) {
      SequenceState& r = running[i];
      if (r.prefill_done()) continue;
      const absl::Span<const int32_t> chunk = r.TakePrefillChunk(budget);
      chunks.push_back({static_cast<KvCache::SeqId>(i), chunk, r.prefill_done()});
      owners.push_back(i);
      budget -= static_cast<int>(chunk.size());
    }
    if (chunks.empty()) break;
    ASSIGN_OR_RETURN(std::vector<float> logits, engine.Forward(chunks));
    int64_t row = 0;
    for (size_t c = 0; c < chunks.size(); ++c) {
      out.stats.prefill_tokens += chunks[c].tokens.size();
      if (!chunks[c].want_logits) continue;
      Advance(options, owners[c], running[owners[c]],
              absl::MakeSpan(logits).subspan(row * config.vocab_size,
                                             config.vocab_size));
      ++row;
    }
  }
  out.stats.prefill_seconds = SecondsSince(prefill_start);

  // Decode: every unfinished sequence feeds its last token each step.
  const auto decode_start = Clock::now();
  for (;;) {
    std::vector<SequenceChunk> chunks;
    std::vector<size_t> owners;
    for (size_t i = 0; i < running.size(); ++i) {
      const SequenceState& r = running[i];
      if (r.done()) continue;
      chunks.push_back({static_cast<KvCache::SeqId>(i), r.DecodeInput(), true});
      owners.push_back(i);
    }
    if (chunks.empty()) break;
    ASSIGN_OR_RETURN(std::vector<float> logits, engine.Forward(chunks));
    for (size_t c = 0; c < chunks.size(); ++c) {
      Advance(options, owners[c], running[owners[c]],
              absl::MakeSpan(logits).subspan(c * config.vocab_size,
                                             config.vocab_size));
    }
    out.stats.decode_tokens += chunks.size();
  }
  out.stats.decode_seconds = SecondsSince(decode_start);

  for (SequenceState& r : running) {
    GenerationResult& result = out.results.emplace_back();
    result.output = r.output();
    result.finish = r.finish();
    result.logits = std::move(r.captured_logits());
  }
  return out;
}

}  // namespace moe
