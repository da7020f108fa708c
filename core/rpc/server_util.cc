#include "core/rpc/server_util.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_builder.h"
#include "core/security/process_security.h"

namespace moe {

absl::StatusOr<StartedServer> StartGrpcServer(
    const std::string& what, const std::string& listen_address,
    std::initializer_list<grpc::Service*> services, bool serving) {
  // Both are process-wide switches read when a server is built.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  StartedServer started;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen_address,
                           security::ProcessServerCredentials(),
                           &started.port);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  for (grpc::Service* service : services) builder.RegisterService(service);
  started.server = builder.BuildAndStart();
  if (started.server == nullptr || started.port == 0) {
    return absl::UnavailableError(absl::StrCat(
        what, ": cannot listen on ", listen_address,
        " (address in use, or not a valid host:port)"));
  }
  started.server->GetHealthCheckService()->SetServingStatus(serving);
  return started;
}

void DrainGrpcServer(grpc::Server& server, double grace_seconds,
                     const std::function<bool()>& idle) {
  server.GetHealthCheckService()->SetServingStatus(false);
  const auto deadline =
      std::chrono::system_clock::now() +
      std::chrono::microseconds(
          static_cast<int64_t>(std::max(0.0, grace_seconds) * 1e6));
  if (idle) {
    while (!idle() && std::chrono::system_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  server.Shutdown(deadline);
}

std::string BoundAddress(const std::string& listen_address, int port) {
  const size_t colon = listen_address.rfind(':');
  const std::string host =
      colon == std::string::npos ? listen_address : listen_address.substr(0, colon);
  return absl::StrCat(host, ":", port);
}

absl::Status AnnounceServing(const std::string& what, const std::string& detail,
                             const std::string& listen_address, int port,
                             const std::string& port_file) {
  std::printf("%s: %s, listening on %s\n", what.c_str(), detail.c_str(),
              BoundAddress(listen_address, port).c_str());
  std::fflush(stdout);
  if (port_file.empty()) return absl::OkStatus();
  return WritePortFile(port_file, port);
}

absl::Status WritePortFile(const std::string& path, int port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    out.close();
    if (!out) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot write the port file ", tmp));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot rename the port file ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

namespace {
sigset_t TerminationSet() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}
}  // namespace

void BlockTerminationSignals() {
  const sigset_t signals = TerminationSet();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

void PrepareServerProcess() {
  BlockTerminationSignals();
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

int WaitForTerminationSignal() {
  const sigset_t signals = TerminationSet();
  int signal = 0;
  while (sigwait(&signals, &signal) != 0) {
  }
  return signal;
}

}  // namespace moe
