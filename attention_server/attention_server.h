// An attention server (role `both`, `prefill` or `decode`): loads the
// non-expert weights, runs the MoE layers through the router (or dispatches
// them to the expert servers itself, --moe_dispatch=direct), and serves
// moe.v1.AttentionService, grpc.health.v1 and server reflection.
#ifndef MOE_ATTENTION_SERVER_ATTENTION_SERVER_H_
#define MOE_ATTENTION_SERVER_ATTENTION_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "attention_server/attention_engine.h"
#include "attention_server/attention_metrics.h"
#include "attention_server/attention_service.h"
#include "attention_server/direct_moe_executor.h"
#include "attention_server/remote_moe_executor.h"
#include "grpcpp/server.h"
#include "moe/v1/tensor.pb.h"
#include "prometheus/registry.h"

namespace moe {

// How the MoE steps reach the expert servers: through the router's
// MoeStream (the router gates, fans out and combines), or dispatched by the
// attention server itself with the router's placement and policy
// (attention_server/direct_moe_executor.h), one hop each way.
enum class MoeDispatchMode { kRouter, kDirect };

// "router" or "direct"; INVALID_ARGUMENT naming what was expected.
absl::StatusOr<MoeDispatchMode> ParseMoeDispatchMode(const std::string& name);

struct AttentionServerOptions {
  // host:port; port 0 picks a free port (see AttentionServer::port()).
  std::string listen_address = "127.0.0.1:0";
  std::string router_address;
  MoeDispatchMode moe_dispatch = MoeDispatchMode::kRouter;
  // The dtype hidden states and expert outputs travel in (tensor_codec.h):
  // DTYPE_F32 (bit-identical to the engine) or DTYPE_BF16 (half the bytes,
  // rounded).
  v1::DType wire_dtype = v1::DTYPE_F32;
  // With direct dispatch: calls to expert servers on this host over shared
  // memory (router/shm_expert_link.h) instead of the gRPC stream.
  bool shared_memory = true;
  AttentionRole role = AttentionRole::kBoth;
  // How long to wait for the router to report SERVING at start.
  double connect_timeout_seconds = 60;
  // Deadline of each RunMoe call.
  double router_timeout_seconds = 30;
  AttentionEngineOptions engine;  // its monitor is set by Start
  // Where the server's metrics go (deploy/metrics.md); null = a private
  // registry nobody scrapes.
  std::shared_ptr<prometheus::Registry> registry;
};

class AttentionServer {
 public:
  // Waits for the router, loads the weights, then serves; health is SERVING
  // on return.
  static absl::StatusOr<std::unique_ptr<AttentionServer>> Start(
      const AttentionServerOptions& options);
  ~AttentionServer();

  int port() const { return port_; }
  AttentionEngine& engine() { return *engine_; }
  AttentionRole role() const { return role_; }

  // Drains: health NOT_SERVING, new requests refused, running ones get up to
  // `grace_seconds` to finish before they are cancelled. Idempotent.
  void Shutdown(double grace_seconds = 5.0);
  void Wait();

 private:
  AttentionServer() = default;
  // Declared first: the engine reports to the metrics until it is gone.
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<AttentionMetrics> metrics_;
  std::unique_ptr<MoeExecutor> moe_;
  std::unique_ptr<AttentionEngine> engine_;
  std::unique_ptr<AttentionServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  AttentionRole role_ = AttentionRole::kBoth;
};

}  // namespace moe

#endif  // MOE_ATTENTION_SERVER_ATTENTION_SERVER_H_
