// Generation loop over an Engine: validation, chunked prefill, batched decode,
// sampling and stop conditions, for a set of requests decoded together.
#ifndef MOE_CORE_GENERATOR_H_
#define MOE_CORE_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/engine.h"
#include "core/sampling.h"
#include "core/sequence_state.h"

namespace moe {

struct GenerationResult {
  std::vector<int32_t> output;
  FinishReason finish = FinishReason::kLength;
  // With capture_logits: output.size() vectors of vocab logits, the logits
  // the step's token was sampled from (before any sampling processor).
  std::vector<std::vector<float>> logits;
};

// INVALID_ARGUMENT naming the field: empty prompt, token id outside the
// vocabulary, max_tokens < 1, prompt + max_tokens over the context length,
// bad sampling values, stop ids outside the vocabulary.
absl::Status ValidateRequest(const ModelConfig& config,
                             const GenerationRequest& request);

struct GeneratorOptions {
  int prefill_chunk_tokens = 512;  // token budget of one prefill step
  // Called on the generating thread after each sampled token (streaming).
  std::function<void(size_t request, int32_t token)> on_token;
};

struct GenerationStats {
  int64_t prefill_tokens = 0;
  double prefill_seconds = 0;
  int64_t decode_tokens = 0;
  double decode_seconds = 0;
};

struct BatchGeneration {
  std::vector<GenerationResult> results;  // one per request, in order
  GenerationStats stats;
};

// Decodes all requests together as one batch (prefill, then one decode step
// for all running sequences at a time). Every request is validated first.
// Sequences' KV is freed before returning, on success and on error.
absl::StatusOr<BatchGeneration> GenerateBatch(
    Engine& engine, absl::Span<const GenerationRequest> requests,
    const GeneratorOptions& options = {});

}  // namespace moe

#endif  // MOE_CORE_GENERATOR_H_
