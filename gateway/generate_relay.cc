#include "gateway/generate_relay.h"

#include <utility>

namespace moe {

std::shared_ptr<GenerateRelay> GenerateRelay::Start(
    v1::AttentionService::Stub* stub,
    const grpc::CallbackServerContext& server_context,
    v1::AttentionGenerateRequest request,
    std::shared_ptr<TokenStreamWriter> writer, std::function<void()> on_done) {
  std::shared_ptr<GenerateRelay> relay(new GenerateRelay());
  relay->self_ = relay;
  relay->context_ = grpc::ClientContext::FromCallbackServerContext(
      server_context, grpc::PropagationOptions());
  relay->request_ = std::move(request);
  relay->writer_ = std::move(writer);
  relay->on_done_ = std::move(on_done);
  stub->async()->Generate(relay->context_.get(), &relay->request_,
                          relay.get());
  relay->StartRead(&relay->response_);
  relay->StartCall();
  return relay;
}

void GenerateRelay::Abort() {
  {
    absl::MutexLock lock(&mu_);
    aborted_ = true;
  }
  context_->TryCancel();
}

void GenerateRelay::Cancel() { context_->TryCancel(); }

void GenerateRelay::OnReadDone(bool ok) {
  if (!ok) return;  // the stream ended; OnDone follows
  completion_tokens_ += response_.token_ids_size();
  if (response_.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
    finish_reason_ = response_.finish_reason();
    usage_ = response_.usage();
  }
  writer_->Append(response_);
  response_.Clear();
  StartRead(&response_);
}

void GenerateRelay::OnDone(const grpc::Status& status) {
  bool aborted;
  {
    absl::MutexLock lock(&mu_);
    aborted = aborted_;
  }
  if (aborted) {
    // The attention server's usage never arrived: report what the client got.
    v1::Usage usage;
    usage.set_prompt_tokens(request_.request().prompt_ids_size());
    usage.set_completion_tokens(completion_tokens_);
    writer_->Close(grpc::Status::OK, v1::FINISH_REASON_ABORT, usage);
  } else if (status.ok() && finish_reason_ == v1::FINISH_REASON_UNSPECIFIED) {
    writer_->Close(grpc::Status(grpc::StatusCode::INTERNAL,
                                "attention server ended the stream without a "
                                "finish reason"),
                   v1::FINISH_REASON_UNSPECIFIED, v1::Usage());
  } else {
    writer_->Close(status, finish_reason_, usage_);
  }
  if (on_done_) on_done_();
  // Drop the self-reference last: this may delete the relay.
  std::shared_ptr<GenerateRelay> self = std::move(self_);
}

}  // namespace moe
