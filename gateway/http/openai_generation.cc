#include "gateway/http/openai_generation.h"

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/rpc/grpc_status.h"
#include "gateway/http/openai_response.h"
#include "gateway/http/stop_matcher.h"
#include "grpcpp/support/client_callback.h"

namespace moe {

void OpenAiBackend::CallStarted() {
  absl::MutexLock lock(&mu_);
  ++calls_;
}

void OpenAiBackend::CallEnded() {
  absl::MutexLock lock(&mu_);
  --calls_;
}

bool OpenAiBackend::WaitForNoCalls(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return calls_ == 0; };
  return mu_.AwaitWithTimeout(absl::Condition(&none), timeout);
}

namespace {

// gRPC's server pushback trailer, which the gateway sets when it refuses
// for lack of capacity (gateway_service.h kRetryPushbackKey).
constexpr char kRetryPushbackKey[] = "grpc-retry-pushback-ms";

std::string NewResponseId(OpenAiEndpoint endpoint) {
  thread_local std::mt19937_64 random(std::random_device{}());
  return absl::StrFormat(
      "%s-%016x%08x",
      endpoint == OpenAiEndpoint::kChatCompletions ? "chatcmpl" : "cmpl",
      random(), static_cast<uint32_t>(random()));
}

// The context length and prompt size in the gateway's refusal of a
// max_tokens that does not fit: "max_tokens: prompt (N tokens) +
// max_tokens (M) = S exceeds the context length C".
std::optional<int> RoomLeft(absl::string_view message) {
  int prompt = 0, max_tokens = 0, sum = 0, context = 0;
  const std::string m(message);
  if (std::sscanf(m.c_str(),
                  "max_tokens: prompt (%d tokens) + max_tokens (%d) = %d "
                  "exceeds the context length %d",
                  &prompt, &max_tokens, &sum, &context) != 4) {
    return std::nullopt;
  }
  if (context - prompt < 1) return std::nullopt;
  return context - prompt;
}

class Generation : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  Generation(std::shared_ptr<OpenAiBackend> backend, OpenAiRequest request,
             std::shared_ptr<HttpExchange> exchange, std::string id,
             int64_t created)
      : backend_(std::move(backend)),
        request_(std::move(request)),
        exchange_(std::move(exchange)),
        context_(std::make_shared<grpc::ClientContext>()),
        formatter_(request_, id, created, backend_->model_name(),
                   backend_->tokenizer()),
        created_(created),
        stop_(request_.stop) {
    grpc_request_ = request_.generate;
    grpc_request_.set_request_id(id);
  }

  // Deletes itself when the call is over.
  void Start() {
    backend_->CallStarted();
    if (!backend_->bearer_token().empty()) {
      context_->AddMetadata("authorization",
                            absl::StrCat("Bearer ", backend_->bearer_token()));
    }
    exchange_->OnGone([context = context_] { context->TryCancel(); });
    backend_->stub().async()->Generate(context_.get(), &grpc_request_, this);
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    if (!stopped_) Take(response_);
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    if (status.ok() || stopped_) {
      Finish();
    } else if (!Retry(status)) {
      Fail(status);
    }
    std::shared_ptr<OpenAiBackend> backend = std::move(backend_);
    delete this;
    backend->CallEnded();
  }

 private:
  bool chat() const {
    return request_.endpoint == OpenAiEndpoint::kChatCompletions;
  }

  // One response of the stream.
  void Take(const v1::GenerateResponse& response) {
    ChoiceOutput piece;
    piece.text = stop_.Feed(response.text());
    piece.token_ids.assign(response.token_ids().begin(),
                           response.token_ids().end());
    piece.logprobs.assign(response.logprobs().begin(),
                          response.logprobs().end());
    completion_tokens_ += response.token_ids_size();
    if (response.has_usage()) {
      usage_.prompt_tokens = response.usage().prompt_tokens();
      usage_.cached_tokens = response.usage().cached_tokens();
    }
    if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      finish_reason_ = response.finish_reason() == v1::FINISH_REASON_LENGTH
                           ? "length"
                       : response.finish_reason() == v1::FINISH_REASON_ABORT
                           ? "abort"
                           : "stop";
    }
    if (stop_.stopped()) {
      stopped_ = true;
      finish_reason_ = "stop";
      AbortUpstream();
    }
    if (request_.stream) {
      BeginEvents();
      // The finish reason goes with the last chunk (Finish).
      if (!piece.text.empty() || !piece.token_ids.empty()) {
        exchange_->SendEvent(formatter_.Chunk(piece));
      }
    } else {
      whole_.text += piece.text;
      whole_.token_ids.insert(whole_.token_ids.end(), piece.token_ids.begin(),
                              piece.token_ids.end());
      whole_.logprobs.insert(whole_.logprobs.end(), piece.logprobs.begin(),
                             piece.logprobs.end());
    }
  }

  void BeginEvents() {
    if (events_started_) return;
    events_started_ = true;
    exchange_->StartEvents();
    if (chat()) exchange_->SendEvent(formatter_.RoleChunk());
  }

  // Ends the request upstream after a stop string; the stream's last
  // response (FINISH_REASON_ABORT, with usage) follows.
  void AbortUpstream() {
    struct AbortCall {
      grpc::ClientContext context;
      v1::AbortRequest request;
      v1::AbortResponse response;
    };
    auto abort = std::make_shared<AbortCall>();
    if (!backend_->bearer_token().empty()) {
      abort->context.AddMetadata(
          "authorization", absl::StrCat("Bearer ", backend_->bearer_token()));
    }
    abort->context.set_deadline(std::chrono::system_clock::now() +
                                std::chrono::seconds(10));
    abort->request.set_request_id(grpc_request_.request_id());
    backend_->stub().async()->Abort(
        &abort->context, &abort->request, &abort->response,
        [abort, context = context_, backend = backend_](grpc::Status status) {
          // Cancelling ends the stream just as well, without the usage.
          if (!status.ok() || !abort->response.found()) context->TryCancel();
        });
  }

  void Finish() {
    ChoiceOutput last;
    last.text = stop_.Finish();
    // An OK stream always ends with a response carrying the finish reason
    // and usage (TokenStreamWriter); were it missing, the token count would
    // tell the reason.
    last.finish_reason = finish_reason_.value_or(
        completion_tokens_ >= request_.generate.max_tokens() ? "length"
                                                              : "stop");
    usage_.completion_tokens = completion_tokens_;
    if (request_.stream) {
      BeginEvents();
      exchange_->SendEvent(formatter_.Chunk(last));
      if (request_.include_usage) {
        exchange_->SendEvent(formatter_.UsageChunk(usage_));
      }
      exchange_->SendEvent("[DONE]");
      exchange_->EndEvents();
      return;
    }
    whole_.text += last.text;
    whole_.finish_reason = last.finish_reason;
    HttpResponse response;
    response.body = formatter_.Whole(whole_, usage_);
    exchange_->Send(std::move(response));
  }

  // A chat request without max_tokens gets the room its prompt leaves,
  // when the default does not fit.
  bool Retry(const grpc::Status& status) {
    if (status.error_code() != grpc::StatusCode::INVALID_ARGUMENT ||
        request_.max_tokens_given || events_started_ || completion_tokens_ > 0) {
      return false;
    }
    const std::optional<int> room = RoomLeft(status.error_message());
    if (!room.has_value() || *room >= request_.generate.max_tokens()) {
      return false;
    }
    OpenAiRequest retry = request_;
    retry.generate.set_max_tokens(*room);
    retry.max_tokens_given = true;
    (new Generation(backend_, std::move(retry), exchange_, formatter_.id(),
                    created_))
        ->Start();
    return true;
  }

  void Fail(const grpc::Status& status) {
    const OpenAiError error =
        OpenAiErrorFromStatus(FromGrpcStatus(status), &request_);
    if (events_started_) {
      // The status line is sent: the error goes in the stream, as vLLM does.
      exchange_->SendEvent(OpenAiErrorBody(error));
      exchange_->SendEvent("[DONE]");
      exchange_->EndEvents();
      return;
    }
    HttpResponse response;
    response.status = error.http_status;
    response.body = OpenAiErrorBody(error);
    if (error.http_status == 429) {
      const auto& trailers = context_->GetServerTrailingMetadata();
      auto it = trailers.find(kRetryPushbackKey);
      int64_t ms = 0;
      if (it != trailers.end() &&
          absl::SimpleAtoi(absl::string_view(it->second.data(),
                                             it->second.size()),
                           &ms) &&
          ms >= 0) {
        response.headers.emplace_back(
            "Retry-After", absl::StrCat(std::max<int64_t>(1, (ms + 999) / 1000)));
      }
    }
    exchange_->Send(std::move(response));
  }

  std::shared_ptr<OpenAiBackend> backend_;
  const OpenAiRequest request_;
  const std::shared_ptr<HttpExchange> exchange_;
  // Shared with the exchange's OnGone callback, which may outlive the call.
  const std::shared_ptr<grpc::ClientContext> context_;
  OpenAiFormatter formatter_;
  const int64_t created_;
  v1::GenerateRequest grpc_request_;
  v1::GenerateResponse response_;

  // Touched by the reactor's callbacks only, which gRPC runs one at a time.
  StopMatcher stop_;
  bool stopped_ = false;
  bool events_started_ = false;
  int completion_tokens_ = 0;
  OpenAiUsage usage_;
  std::optional<std::string> finish_reason_;
  ChoiceOutput whole_;  // not streaming: everything so far
};

}  // namespace

void StartOpenAiGeneration(std::shared_ptr<OpenAiBackend> backend,
                           OpenAiRequest request,
                           std::shared_ptr<HttpExchange> exchange) {
  const std::string id = NewResponseId(request.endpoint);
  (new Generation(std::move(backend), std::move(request), std::move(exchange),
                  id, static_cast<int64_t>(std::time(nullptr))))
      ->Start();
}

}  // namespace moe
