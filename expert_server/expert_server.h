// An expert server: loads the experts placed on it and serves
// moe.v1.ExpertService, grpc.health.v1 and server reflection.
#ifndef MOE_EXPERT_SERVER_EXPERT_SERVER_H_
#define MOE_EXPERT_SERVER_EXPERT_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/nccl_data_plane.h"
#include "expert_server/expert_engine.h"
#include "expert_server/expert_metrics.h"
#include "expert_server/expert_service.h"
#include "grpcpp/server.h"
#include "prometheus/registry.h"

namespace moe {

struct ExpertServerOptions {
  // host:port; port 0 picks a free port (see ExpertServer::port()).
  std::string listen_address = "127.0.0.1:0";
  ExpertEngineOptions engine;
  // kNccl: a router may move the groups' rows over NCCL
  // (ExpertService.JoinDataPlane); needs a CUDA `engine.device` and NCCL in
  // this build, else Start fails with FAILED_PRECONDITION saying why.
  DataPlane data_plane = DataPlane::kGrpc;
  // Where the server's metrics go (deploy/metrics.md); null = a private
  // registry nobody scrapes.
  std::shared_ptr<prometheus::Registry> registry;
  bool metrics_per_expert = true;  // the `expert` label on token counters
  // Serve same-host clients over shared memory when they ask
  // (ExpertService.AttachSharedMemory); false refuses, and they use gRPC.
  bool shared_memory = true;
};

class ExpertServer {
 public:
  // Loads the weights, then starts serving; health is SERVING on return.
  static absl::StatusOr<std::unique_ptr<ExpertServer>> Start(
      const ExpertServerOptions& options);
  ~ExpertServer();

  int port() const { return port_; }
  const ExpertEngine& engine() const { return *engine_; }

  // Marks health NOT_SERVING and stops accepting RPCs; in-flight calls get
  // until `grace_seconds` to finish. Idempotent.
  void Shutdown(double grace_seconds = 5.0);
  // Blocks until the server has shut down.
  void Wait();

 private:
  ExpertServer() = default;
  std::unique_ptr<ExpertEngine> engine_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<ExpertMetrics> metrics_;
  std::unique_ptr<ExpertServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace moe

#endif  // MOE_EXPERT_SERVER_EXPERT_SERVER_H_
