// expert_server: serves the FFNs of the experts placed on it.
//   expert_server --model DIR --experts 0:1,0:3,1:5 [--listen 127.0.0.1:0]
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "core/rpc/server_util.h"
#include "core/expert_list.h"
#include "expert_server/expert_server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "host:port to serve on (loopback by default; port 0 picks one).");
ABSL_FLAG(std::string, port_file, "",
          "If set, the bound port is written to this file once serving.");
ABSL_FLAG(std::string, model, "", "Checkpoint directory.");
ABSL_FLAG(std::string, experts, "",
          "Experts placed here: LAYER:EXPERT or LAYER:FIRST-LAST entries, "
          "comma-separated, or \"all\".");
ABSL_FLAG(int, spin_us, moe::ThreadPool::kServerSpinMicroseconds,
          "How long idle compute threads spin before sleeping, us: longer "
          "saves wake-ups when the server has its cores to itself, shorter "
          "leaves them to other servers on the same cores.");
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
  if (absl::GetFlag(FLAGS_spin_us) < 0) return fail("--spin_us must be >= 0");
  options.engine.spin_microseconds = absl::GetFlag(FLAGS_spin_us);
  absl::StatusOr<moe::ExpertList> experts =
      moe::ParseExpertList(absl::GetFlag(FLAGS_experts));
  if (!experts.ok()) return fail("--" + std::string(experts.status().message()));
  options.engine.all_experts = experts->all;
  options.engine.experts = experts->experts;

  moe::PrepareServerProcess();

  absl::StatusOr<std::unique_ptr<moe::ExpertServer>> server =
      moe::ExpertServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "expert_server: %s\n",
                 std::string(server.status().message()).c_str());
    return 1;
  }
  if (absl::Status s = moe::AnnounceServing(
          "expert_server",
          absl::StrCat((*server)->engine().HostedExperts().size(), " experts"),
          options.listen_address, (*server)->port(),
          absl::GetFlag(FLAGS_port_file));
      !s.ok()) {
    return fail(std::string(s.message()));
  }
  return moe::ServeUntilTerminated("expert_server", **server,
                                   absl::GetFlag(FLAGS_drain_seconds));
}
