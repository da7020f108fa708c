#include "core/rpc/startup_health.h"

#include <chrono>
#include <cstdio>

#include "core/rpc/server_util.h"
#include "grpcpp/health_check_service_interface.h"

namespace moe {

absl::StatusOr<std::unique_ptr<StartupHealthServer>> StartupHealthServer::Start(
    const std::string& what, const std::string& listen_address,
    const std::string& port_file) {
  absl::StatusOr<StartedServer> started =
      StartGrpcServer(what, listen_address, {}, /*serving=*/false);
  if (!started.ok()) return started.status();
  std::unique_ptr<StartupHealthServer> startup(new StartupHealthServer());
  startup->server_ = std::move(started->server);
  startup->port_ = started->port;
  startup->bound_address_ = BoundAddress(listen_address, started->port);
  std::printf("%s: starting, health NOT_SERVING on %s\n", what.c_str(),
              startup->bound_address_.c_str());
  std::fflush(stdout);
  if (!port_file.empty()) {
    if (absl::Status s = WritePortFile(port_file, startup->port_); !s.ok()) {
      return s;
    }
  }
  return startup;
}

StartupHealthServer::~StartupHealthServer() { Stop(); }

void StartupHealthServer::Stop() {
  if (server_ == nullptr) return;
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
  server_.reset();
}

}  // namespace moe
