// expert_server: serves the FFNs of the experts placed on it.
//   expert_server --model DIR --experts 0:1,0:3,1:5 [--listen 127.0.0.1:0]
#include <csignal>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "expert_server/expert_server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "host:port to serve on (loopback by default; port 0 picks one).");
ABSL_FLAG(std::string, model, "", "Checkpoint directory.");
ABSL_FLAG(std::string, experts, "",
          "Experts placed here: LAYER:EXPERT,... or \"all\".");
ABSL_FLAG(int, threads, 0, "Compute threads; 0 = one per core.");
ABSL_FLAG(double, drain_seconds, 5.0,
          "On SIGTERM/SIGINT, how long in-flight calls may take to finish.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Serve the expert FFNs placed on this server.\n"
      "  expert_server --model DIR --experts 0:1,0:3,1:5 [--listen ADDR]");
  absl::ParseCommandLine(argc, argv);
  auto fail = [](const std::string& message) {
    std::fprintf(stderr, "expert_server: %s\n", message.c_str());
    return 2;
  };
  if (absl::GetFlag(FLAGS_model).empty()) return fail("--model is required");
  moe::ExpertServerOptions options;
  options.listen_address = absl::GetFlag(FLAGS_listen);
  options.engine.model_dir = absl::GetFlag(FLAGS_model);
  options.engine.num_threads = absl::GetFlag(FLAGS_threads);
  absl::StatusOr<std::set<std::pair<int, int>>> experts = moe::ParseExpertList(
      absl::GetFlag(FLAGS_experts), &options.engine.all_experts);
  if (!experts.ok()) return fail(std::string("--") + std::string(experts.status().message()));
  options.engine.experts = *experts;

  // Termination signals are taken synchronously below, not by a handler.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<moe::ExpertServer>> server =
      moe::ExpertServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "expert_server: %s\n",
                 std::string(server.status().message()).c_str());
    return 1;
  }
  std::printf("expert_server: %zu experts, listening on 127.0.0.1:%d\n",
              (*server)->engine().HostedExperts().size(), (*server)->port());
  std::fflush(stdout);
  int signal = 0;
  sigwait(&signals, &signal);
  std::printf("expert_server: signal %d, draining\n", signal);
  std::fflush(stdout);
  (*server)->Shutdown(absl::GetFlag(FLAGS_drain_seconds));
  (*server)->Wait();
  return 0;
}
