#include "tests/generate_client.h"

#include <chrono>
#include <memory>

namespace moe::testing {

StreamResult RunGenerate(v1::Inference::Stub& stub,
                         const v1::GenerateRequest& request,
                         double timeout_seconds) {
  StreamResult result;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(
                           static_cast<int64_t>(timeout_seconds * 1000)));
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    ++result.responses;
    if (result.responses == 1) {
      result.request_id = response.request_id();
    } else if (response.request_id() != result.request_id) {
      result.request_id_consistent = false;
    }
    result.text += response.text();
    if (!response.text().empty()) result.text_chunks.push_back(response.text());
    result.tokens.insert(result.tokens.end(), response.token_ids().begin(),
                         response.token_ids().end());
    for (const v1::TokenLogprobs& lp : response.logprobs()) {
      result.logprobs.push_back(lp);
    }
    if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      ++result.finish_messages;
      result.finish_reason = response.finish_reason();
      result.usage = response.usage();
    }
  }
  result.status = reader->Finish();
  return result;
}

v1::GenerateRequest GreedyRequest(const std::vector<int32_t>& prompt,
                                  int max_tokens) {
  v1::GenerateRequest request;
  for (int32_t id : prompt) request.add_prompt_ids(id);
  request.set_max_tokens(max_tokens);
  request.set_ignore_eos(true);
  return request;
}

}  // namespace moe::testing
