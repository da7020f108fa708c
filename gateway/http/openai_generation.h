// One OpenAI generation request run on the gateway's own moe.v1.Inference
// service (through the in-process channel) and answered on an
// HttpExchange: whole, or as Server-Sent Events ending in "data: [DONE]".
//
// Threads: the gRPC callback API; the reactor's callbacks run on gRPC's
// threads and only post to the exchange, so no HTTP I/O thread ever waits
// on the stream. When the client goes away the call is cancelled
// (ClientContext::TryCancel), which aborts the request and frees its K/V.
// A stop string ends the text at once and aborts the request (Abort RPC),
// whose last response still brings the usage.
#ifndef MOE_GATEWAY_HTTP_OPENAI_GENERATION_H_
#define MOE_GATEWAY_HTTP_OPENAI_GENERATION_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/text/tokenizer.h"
#include "gateway/http/http_connection.h"
#include "gateway/http/openai_request.h"
#include "moe/v1/generate.grpc.pb.h"

namespace moe {

// What every generation of one server shares. Thread-safe; each call holds
// a reference, so it outlives the calls.
class OpenAiBackend {
 public:
  OpenAiBackend(std::unique_ptr<v1::Inference::Stub> stub,
                std::string bearer_token, std::string model_name,
                std::shared_ptr<const Tokenizer> tokenizer)
      : stub_(std::move(stub)),
        bearer_token_(std::move(bearer_token)),
        model_name_(std::move(model_name)),
        tokenizer_(std::move(tokenizer)) {}

  v1::Inference::Stub& stub() { return *stub_; }
  // Sent as "authorization: Bearer <token>" when not empty.
  const std::string& bearer_token() const { return bearer_token_; }
  const std::string& model_name() const { return model_name_; }
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }

  void CallStarted();
  void CallEnded();
  // Waits until no call runs, at most `timeout`; whether none runs.
  bool WaitForNoCalls(absl::Duration timeout);

 private:
  const std::unique_ptr<v1::Inference::Stub> stub_;
  const std::string bearer_token_;
  const std::string model_name_;
  const std::shared_ptr<const Tokenizer> tokenizer_;
  absl::Mutex mu_;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
};

// Starts the generation; it answers `exchange` on its own.
void StartOpenAiGeneration(std::shared_ptr<OpenAiBackend> backend,
                           OpenAiRequest request,
                           std::shared_ptr<HttpExchange> exchange);

}  // namespace moe

#endif  // MOE_GATEWAY_HTTP_OPENAI_GENERATION_H_
