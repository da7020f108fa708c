// The gateway's OpenAI-compatible HTTP API: POST /v1/completions and
// /v1/chat/completions (whole or streamed as Server-Sent Events), GET
// /v1/models[/{id}] and GET /health, over HTTP/1.1 (HTTPS when given a
// certificate), served with Boost.Beast.
//
// It is a client of the gateway's own moe.v1.Inference service through the
// channel given to Start (an in-process one), so both APIs share admission,
// metrics and the text layer; gRPC statuses become OpenAI errors.
//
// Threads: an io_context run by a small pool (kIoThreads); each connection
// on its own strand. Generation streams use gRPC's callback API and post
// their output to the connection, so the I/O threads never wait on gRPC.
#ifndef MOE_GATEWAY_HTTP_OPENAI_HTTP_SERVER_H_
#define MOE_GATEWAY_HTTP_OPENAI_HTTP_SERVER_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/text/tokenizer.h"
#include "grpcpp/channel.h"

namespace moe {

struct OpenAiHttpOptions {
  int port = 0;  // 0 picks a free one
  std::string host = "127.0.0.1";  // loopback by default
  size_t max_body_bytes = 8 << 20;  // larger request bodies get 413
  // When not empty, /v1 requests must carry "Authorization: Bearer
  // <bearer_token>" (401 otherwise; /health stays open), and the gRPC
  // calls carry it on.
  std::string bearer_token;
  // Both set: HTTPS only (PEM certificate chain and private key).
  std::string tls_cert_pem;
  std::string tls_key_pem;
  // The one model served (OpenAI's `model`); other names are 404.
  std::string model_name;
  // The checkpoint's tokenizer (the gateway's own, shared): it gives the
  // tokens' text in logprobs ("token_id:ID" without). Null: none.
  std::shared_ptr<const Tokenizer> tokenizer;
};

class OpenAiHttpServer {
 public:
  static constexpr int kIoThreads = 2;

  // Listens on options.host:options.port; serving on return.
  static absl::StatusOr<std::unique_ptr<OpenAiHttpServer>> Start(
      const OpenAiHttpOptions& options, std::shared_ptr<grpc::Channel> channel);
  ~OpenAiHttpServer();

  int port() const;
  // The gateway is draining: /health answers 503 {"status":"draining"}
  // (load balancers stop sending) while running streams go on; new
  // generations are refused by the gateway itself (UNAVAILABLE -> 503).
  // Thread-safe.
  void StartDraining();
  // Stops accepting, closes every connection (cancelling their running
  // calls), waits for the calls to end and joins the threads. Idempotent;
  // not to be called from a handler.
  void Shutdown();

  struct Impl;

 private:
  explicit OpenAiHttpServer(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace moe

#endif  // MOE_GATEWAY_HTTP_OPENAI_HTTP_SERVER_H_
