// The gateway: serves the public moe.v1.Inference API, grpc.health.v1 and
// server reflection, relaying generation to the attention servers.
#ifndef MOE_GATEWAY_GATEWAY_SERVER_H_
#define MOE_GATEWAY_GATEWAY_SERVER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gateway/attention_pool.h"
#include "gateway/gateway_metrics.h"
#include "gateway/gateway_service.h"
#include "gateway/http/openai_http_server.h"
#include "grpcpp/server.h"
#include "prometheus/registry.h"

namespace moe {

struct GatewayServerOptions {
  std::string listen_address = "127.0.0.1:0";
  // The model directory: its config.json (for validation) and, when
  // present, its tokenizer files and chat template (text prompts).
  std::string model_dir;
  // Either attention servers of role both, or prefill and decode servers.
  std::vector<std::string> attention_addresses;
  std::vector<std::string> prefill_addresses;
  std::vector<std::string> decode_addresses;
  // Cache-aware choice: a server holding a prompt's prefix is passed over
  // when it has more than this many requests in flight beyond the least
  // loaded one.
  int prefix_overload_margin = 4;
  // How long to wait for every attention server to report SERVING at start.
  double connect_timeout_seconds = 60;
  int max_in_flight = 1024;  // Generate calls at once; more are refused
  // When not empty, the public API's calls must carry "authorization:
  // Bearer <bearer_token>" (grpc.health.v1 does not).
  std::string bearer_token;
  // Where the gateway's metrics go (deploy/metrics.md); null = a private
  // registry nobody scrapes.
  std::shared_ptr<prometheus::Registry> registry;
  // The OpenAI-compatible HTTP API (gateway/http), served beside the gRPC
  // port when set: it calls this gateway's own Inference service through an
  // in-process channel, so both APIs share admission, metrics and the text
  // layer. Its bearer token and TLS identity are filled in by Start from
  // bearer_token and the process security (the same as the gRPC port's).
  std::optional<OpenAiHttpOptions> http;
};

class GatewayServer {
 public:
  // Waits for the attention servers, then serves; SERVING on return.
  static absl::StatusOr<std::unique_ptr<GatewayServer>> Start(
      const GatewayServerOptions& options);
  ~GatewayServer();

  int port() const { return port_; }
  // The HTTP API's port; 0 when it is off.
  int http_port() const { return http_ != nullptr ? http_->port() : 0; }
  GatewayServiceImpl& service() { return *service_; }

  // Drains: health NOT_SERVING, new requests refused with UNAVAILABLE,
  // running streams get up to `grace_seconds` to finish. Idempotent.
  void Shutdown(double grace_seconds = 5.0);
  void Wait();

 private:
  GatewayServer() = default;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<GatewayMetrics> metrics_;
  std::unique_ptr<AttentionPool> colocated_, prefill_, decode_;
  std::unique_ptr<GatewayServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<OpenAiHttpServer> http_;
  int port_ = 0;
};

}  // namespace moe

#endif  // MOE_GATEWAY_GATEWAY_SERVER_H_
