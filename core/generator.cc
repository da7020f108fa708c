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

// State of one request while it runs.
struct Running {
  const GenerationRequest* request;
  GenerationResult result;
  Sampler sampler;
  std::vector<int32_t> context;  // prompt + generated, for the penalty
  int prefilled = 0;             // prompt tokens already in the KV cache
  bool done = false;
};

bool IsStopToken(const ModelConfig& config, const GenerationRequest& request,
                 int32_t token) {
  if (std::find(request.stop_token_ids.begin(), request.stop_token_ids.end(),
                token) != request.stop_token_ids.end()) {
    return true;
  }
  return !request.ignore_eos &&
         std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(),
                   token) != config.eos_token_ids.end();
}

// Samples from one row of logits and applies the stop conditions.
void Advance(const ModelConfig& config, const GeneratorOptions& options,
             size_t index, Running& r, const float* logits) {
  std::vector<float> row(logits, logits + config.vocab_size);
  if (r.request->capture_logits) r.result.logits.push_back(row);
  const int32_t token = r.sampler.Sample(absl::MakeSpan(row), r.context);
  r.result.output.push_back(token);
  r.context.push_back(token);
  if (options.on_token) options.on_token(index, token);
  if (IsStopToken(config, *r.request, token)) {
    r.result.finish = FinishReason::kStop;
    r.done = true;
  } else if (static_cast<int>(r.result.output.size()) >= r.request->max_tokens) {
    r.result.finish = FinishReason::kLength;
    r.done = true;
  }
}

}  // namespace

absl::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
  }
  return "?";
}

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
  if (!sampling.ok()) return sampling;
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

  std::vector<Running> running;
  running.reserve(requests.size());
  for (const GenerationRequest& req : requests) {
    running.push_back({&req, {}, Sampler(req.sampling), req.prompt, 0, false});
  }
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
      Running& r = running[i];
      const int left = static_cast<int>(r.request->prompt.size()) - r.prefilled;
      if (left == 0) continue;
      const int take = std::min(left, budget);
      chunks.push_back({static_cast<KvCache::SeqId>(i),
                        absl::MakeConstSpan(r.request->prompt)
                            .subspan(r.prefilled, take),
                        take == left});
      owners.push_back(i);
      r.prefilled += take;
      budget -= take;
    }
    if (chunks.empty()) break;
    ASSIGN_OR_RETURN(std::vector<float> logits, engine.Forward(chunks));
    int64_t row = 0;
    for (size_t c = 0; c < chunks.size(); ++c) {
      out.stats.prefill_tokens += chunks[c].tokens.size();
      if (!chunks[c].want_logits) continue;
      Advance(config, options, owners[c], running[owners[c]],
              logits.data() + row * config.vocab_size);
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
      Running& r = running[i];
      if (r.done) continue;
      chunks.push_back({static_cast<KvCache::SeqId>(i),
                        absl::MakeConstSpan(&r.result.output.back(), 1), true});
      owners.push_back(i);
    }
    if (chunks.empty()) break;
    ASSIGN_OR_RETURN(std::vector<float> logits, engine.Forward(chunks));
    for (size_t c = 0; c < chunks.size(); ++c) {
      Advance(config, options, owners[c], running[owners[c]],
              logits.data() + c * config.vocab_size);
    }
    out.stats.decode_tokens += chunks.size();
  }
  out.stats.decode_seconds = SecondsSince(decode_start);

  for (Running& r : running) out.results.push_back(std::move(r.result));
  return out;
}

}  // namespace moe
