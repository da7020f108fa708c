#include "core/sequence_state.h"

#include <algorithm>

namespace moe {

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

SequenceState::SequenceState(const GenerationRequest* request,
                             const ModelConfig* config)
    : request_(request),
      config_(config),
      sampler_(request->sampling, request->first_sampler_step),
      context_(request->prompt) {}

absl::Span<const int32_t> SequenceState::TakePrefillChunk(int budget) {
  const int take = std::min(prompt_tokens() - prefilled_, std::max(budget, 0));
  absl::Span<const int32_t> chunk =
      absl::MakeConstSpan(request_->prompt).subspan(prefilled_, take);
  prefilled_ += take;
  return chunk;
}

absl::Span<const int32_t> SequenceState::DecodeInput() const {
  return absl::MakeConstSpan(&output_.back(), 1);
}

bool SequenceState::IsStopToken(int32_t token) const {
  const std::vector<int32_t>& stops = request_->stop_token_ids;
  if (std::find(stops.begin(), stops.end(), token) != stops.end()) return true;
  const std::vector<int>& eos = config_->eos_token_ids;
  return !request_->ignore_eos &&
         std::find(eos.begin(), eos.end(), token) != eos.end();
}

void SequenceState::Resume(absl::Span<const int32_t> generated) {
  prefilled_ = prompt_tokens();
  sampler_ = Sampler(request_->sampling,
                     request_->first_sampler_step +
                         static_cast<int64_t>(generated.size()));
  for (int32_t token : generated) {
    output_.push_back(token);
    context_.push_back(token);
    if (IsStopToken(token)) {
      finish_ = FinishReason::kStop;
      done_ = true;
      return;
    }
  }
  if (static_cast<int>(output_.size()) >= request_->max_tokens) {
    finish_ = FinishReason::kLength;
    done_ = true;
  }
}

int32_t SequenceState::Advance(absl::Span<float> logits) {
  if (request_->capture_logits) {
    logits_.emplace_back(logits.begin(), logits.end());
  }
  const int32_t token = sampler_.Sample(logits, context_);
  output_.push_back(token);
  context_.push_back(token);
  if (IsStopToken(token)) {
    finish_ = FinishReason::kStop;
    done_ = true;
  } else if (static_cast<int>(output_.size()) >= request_->max_tokens) {
    finish_ = FinishReason::kLength;
    done_ = true;
  }
  return token;
}

}  // namespace moe
