#include "core/rpc/generate_codec.h"

#include "absl/strings/str_cat.h"
#include "core/generator.h"

namespace moe {

absl::StatusOr<DecodedGenerateRequest> DecodeGenerateRequest(
    const v1::GenerateRequest& request, const ModelConfig& config) {
  DecodedGenerateRequest out;
  if (request.request_id().size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id: at most ", kMaxRequestIdBytes,
                     " bytes, got ", request.request_id().size()));
  }
  for (char c : request.request_id()) {
    if (c < 0x20 || c > 0x7e) {
      return absl::InvalidArgumentError(
          "request_id: only printable ASCII characters are allowed");
    }
  }
  out.request_id = request.request_id();
  if (request.logprobs() < 0 || request.logprobs() > kMaxLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("logprobs: must be in [0, ", kMaxLogprobs, "], got ",
                     request.logprobs()));
  }
  out.logprobs = request.logprobs();
  if (request.stop_token_ids_size() > kMaxStopTokenIds) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop_token_ids: at most ", kMaxStopTokenIds,
                     " ids, got ", request.stop_token_ids_size()));
  }

  if (!request.prompt().empty() || request.messages_size() > 0) {
    return absl::InvalidArgumentError(
        "prompt, messages: text is encoded by the gateway; this server takes "
        "prompt_ids");
  }

  GenerationRequest& g = out.generation;
  g.prompt.assign(request.prompt_ids().begin(), request.prompt_ids().end());
  g.max_tokens = request.max_tokens();
  g.stop_token_ids.assign(request.stop_token_ids().begin(),
                          request.stop_token_ids().end());
  g.ignore_eos = request.ignore_eos();
  const v1::SamplingParams& s = request.sampling();
  g.sampling.temperature = s.temperature();
  g.sampling.top_k = s.top_k();
  if (s.has_top_p()) g.sampling.top_p = s.top_p();
  if (s.has_repetition_penalty()) {
    g.sampling.repetition_penalty = s.repetition_penalty();
  }
  out.has_seed = s.has_seed();
  if (s.has_seed()) g.sampling.seed = s.seed();
  absl::Status valid = ValidateRequest(config, g);
  if (!valid.ok()) return valid;
  return out;
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kAbort:
      return v1::FINISH_REASON_ABORT;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void AppendLogprobs(const TokenLogprobs& logprobs,
                    v1::GenerateResponse* response) {
  v1::TokenLogprobs* out = response->add_logprobs();
  out->set_token_id(logprobs.token);
  out->set_logprob(logprobs.logprob);
  for (const auto& [token, logprob] : logprobs.top) {
    v1::TopLogprob* top = out->add_top();
    top->set_token_id(token);
    top->set_logprob(logprob);
  }
}

}  // namespace moe
