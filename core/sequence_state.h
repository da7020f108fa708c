// The per-sequence state of generation, shared by the single-process batch
// generator and the attention server's continuous-batching scheduler: how
// much of the prompt is in the KV cache, the sampler, the generated tokens
// and the stop conditions.
#ifndef MOE_CORE_SEQUENCE_STATE_H_
#define MOE_CORE_SEQUENCE_STATE_H_

#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/model_config.h"
#include "core/sampling.h"

namespace moe {

struct GenerationRequest {
  std::vector<int32_t> prompt;
  int max_tokens = 16;
  SamplingParams sampling;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool capture_logits = false;  // keep the full logits of every step
  // The sampler's first step (a migrated request continues the sampling of
  // the server that failed, whose tokens end `prompt`). >= 0.
  int64_t first_sampler_step = 0;
};

enum class FinishReason { kStop, kLength, kAbort };
absl::string_view FinishReasonName(FinishReason reason);  // "stop", ...

// Not thread-safe: owned by the one thread that schedules the sequence.
class SequenceState {
 public:
  // `request` and `config` are borrowed and must outlive the state.
  SequenceState(const GenerationRequest* request, const ModelConfig* config);

  const GenerationRequest& request() const { return *request_; }
  int prompt_tokens() const { return static_cast<int>(request_->prompt.size()); }
  // Prompt tokens already in the KV cache.
  int prefilled() const { return prefilled_; }
  bool prefill_done() const { return prefilled_ == prompt_tokens(); }

  // Counts the first `tokens` prompt tokens as prefilled: their K/V came
  // from the prefix cache. Precondition: nothing prefilled yet, `tokens`
  // below the prompt length (the last prompt token must be computed here to
  // get the first token's logits).
  void MarkPrefilled(int tokens) { prefilled_ = tokens; }

  // The next prefill chunk: up to `budget` prompt tokens after those already
  // prefilled, which counts them as prefilled. Empty when the prompt is done.
  absl::Span<const int32_t> TakePrefillChunk(int budget);
  // The one token a decode step feeds: the last generated token.
  absl::Span<const int32_t> DecodeInput() const;

  // Continues a sequence whose prompt and first `generated` tokens were
  // computed elsewhere (a prefill server, or before a migration): the prompt
  // counts as prefilled, the tokens as sampled (the sampler resumes at step
  // first_sampler_step + generated.size(), so sampling continues exactly),
  // and the stop conditions are applied to them. Precondition: nothing prefilled or
  // sampled yet, `generated` not empty.
  void Resume(absl::Span<const int32_t> generated);

  // Samples the next token from `logits` (vocab floats, the last position's
  // logits; used as scratch) and applies the stop conditions: a stop token or
  // EOS (unless ignore_eos) finishes with kStop, reaching max_tokens with
  // kLength. Precondition: !done().
  int32_t Advance(absl::Span<float> logits);

  bool done() const { return done_; }
  FinishReason finish() const { return finish_; }
  const std::vector<int32_t>& output() const { return output_; }
  // With capture_logits: the raw logits of every step, before sampling.
  std::vector<std::vector<float>>& captured_logits() { return logits_; }

 private:
  bool IsStopToken(int32_t token) const;

  const GenerationRequest* request_;
  const ModelConfig* config_;
  Sampler sampler_;
  std::vector<int32_t> context_;  // prompt + generated, for the penalty
  std::vector<int32_t> output_;
  std::vector<std::vector<float>> logits_;
  int prefilled_ = 0;
  bool done_ = false;
  FinishReason finish_ = FinishReason::kLength;
};

}  // namespace moe

#endif  // MOE_CORE_SEQUENCE_STATE_H_
