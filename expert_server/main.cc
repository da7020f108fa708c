// expert_server: serves the FFNs of the experts placed on it.
//   expert_server --model DIR --experts 0:1,0:3,1:5 [--listen 127.0.0.1:0]
//   expert_server --model DIR --placement_servers 4 --server_index -1
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "core/expert_list.h"
#include "core/model_config.h"
#include "core/nccl_data_plane.h"
#include "core/cpu_affinity.h"
#include "core/server/server_process.h"
#include "expert_server/auto_placement.h"
#include "expert_server/expert_server.h"
#include "tools/common/command_line.h"

ABSL_FLAG(std::string, model, "", "Checkpoint directory.");
ABSL_FLAG(std::string, experts, "",
          "Experts placed here: LAYER:EXPERT or LAYER:FIRST-LAST entries, "
          "comma-separated, \"all\", or \"none\" (join empty and host "
          "what the router assigns). Or use --placement_servers.");
ABSL_FLAG(int, placement_servers, 0,
          "Automatic placement instead of --experts: the number of expert "
          "servers every expert is dealt across (the router's and launcher's "
          "rule); this server hosts the share of --server_index.");
ABSL_FLAG(int, placement_replicas, 1,
          "With --placement_servers: servers each expert is placed on.");
ABSL_FLAG(int, server_index, -1,
          "With --placement_servers: this server's index; -1 takes it from "
          "the host name's trailing -N (a StatefulSet pod's ordinal).");
ABSL_FLAG(bool, metrics_per_expert, true,
          "Label token counters by expert (off for models with many experts).");
ABSL_FLAG(std::string, pin_cpus, "",
          "Pin the compute threads to these CPUs, thread k to the k-th: "
          "\"all\" (every CPU this process may use, in order), a list such "
          "as \"0,2-3\", or empty (unpinned). Keeps a server's threads on "
          "distinct CPUs when several servers share a few cores.");
ABSL_FLAG(int, spin_us, moe::ThreadPool::kServerSpinMicroseconds,
          "How long idle compute threads spin before sleeping, us: longer "
          "saves wake-ups when the server has its cores to itself, shorter "
          "leaves them to other servers on the same cores.");
ABSL_FLAG(int, threads, 0, "Compute threads; 0 = one per core.");
ABSL_FLAG(std::string, device, "cpu",
          "Where the experts' FFNs run: cpu, cuda (device 0) or cuda:N. On a "
          "CUDA device the hosted experts are uploaded as BF16 at start.");
ABSL_FLAG(std::string, data_plane, "grpc",
          "How the router sends the groups' rows: grpc (in the requests) or "
          "nccl (GPU to GPU as BF16 over an NCCL communicator the router "
          "sets up; needs --device=cuda:N and NCCL). gRPC carries the calls "
          "either way.");
ABSL_FLAG(bool, shared_memory, true,
          "Serve routers and attention servers on this host over shared "
          "memory when they ask (/dev/shm and futex wake-ups instead of "
          "gRPC); false makes them use gRPC.");
ABSL_FLAG(double, drain_seconds, 5.0,
          "On SIGTERM/SIGINT, how long in-flight calls may take to finish.");

namespace {

// The experts to host, from --experts or from automatic placement.
absl::Status ChoosePlacement(const std::string& model_dir,
                             moe::ExpertEngineOptions& engine) {
  const int num_servers = absl::GetFlag(FLAGS_placement_servers);
  const std::string experts_flag = absl::GetFlag(FLAGS_experts);
  if (num_servers == 0) {
    absl::StatusOr<moe::ExpertList> experts = moe::ParseExpertList(experts_flag);
    if (!experts.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", experts.status().message()));
    }
    engine.all_experts = experts->all;
    engine.experts = experts->experts;
    engine.start_empty = experts->none;
    if (experts->none) {
      std::printf("expert_server: --experts=none: hosting no expert until "
                  "the router assigns some\n");
    }
    return absl::OkStatus();
  }
  if (!experts_flag.empty()) {
    return absl::InvalidArgumentError(
        "give --experts or --placement_servers, not both");
  }
  if (num_servers < 0) {
    return absl::InvalidArgumentError("--placement_servers must be >= 1");
  }
  int index = absl::GetFlag(FLAGS_server_index);
  if (index == -1) {
    char host[HOST_NAME_MAX + 1] = {};
    if (gethostname(host, sizeof(host) - 1) != 0) {
      return absl::InternalError("--server_index=-1: cannot read the host name");
    }
    absl::StatusOr<int> ordinal = moe::OrdinalFromHostname(host);
    if (!ordinal.ok()) return ordinal.status();
    index = *ordinal;
  }
  absl::StatusOr<moe::ModelConfig> config = moe::LoadModelConfig(model_dir);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::set<std::pair<int, int>>> placed = moe::AutoPlacedExperts(
      *config, num_servers, absl::GetFlag(FLAGS_placement_replicas), index);
  if (!placed.ok()) return placed.status();
  engine.experts = *std::move(placed);
  std::printf("expert_server: server %d of %d (automatic placement, %d "
              "replicas): %zu experts\n",
              index, num_servers, absl::GetFlag(FLAGS_placement_replicas),
              engine.experts.size());
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Serve the expert FFNs placed on this server.\n"
      "  expert_server --model DIR --experts 0:1,0:3,1:5 [--listen ADDR]\n"
      "  expert_server --model DIR --placement_servers N [--server_index I]");
  moe::tools::ParseCommandLineWithHyphens(argc, argv);
  auto fail = [](const std::string& message) {
    std::fprintf(stderr, "expert_server: %s\n", message.c_str());
    return 2;
  };
  if (absl::GetFlag(FLAGS_model).empty()) return fail("--model is required");
  moe::ExpertServerOptions options;
  options.engine.model_dir = absl::GetFlag(FLAGS_model);
  if (absl::GetFlag(FLAGS_threads) < 0) return fail("--threads must be >= 0");
  options.engine.num_threads = absl::GetFlag(FLAGS_threads);
  if (absl::GetFlag(FLAGS_spin_us) < 0) return fail("--spin_us must be >= 0");
  if (!(absl::GetFlag(FLAGS_drain_seconds) >= 0)) {
    return fail("--drain_seconds must be >= 0");
  }
  options.engine.spin_microseconds = absl::GetFlag(FLAGS_spin_us);
  absl::StatusOr<std::vector<int>> pin_cpus =
      moe::ParseCpuList(absl::GetFlag(FLAGS_pin_cpus));
  if (!pin_cpus.ok()) {
    return fail("--pin_cpus: " + std::string(pin_cpus.status().message()));
  }
  options.engine.pin_cpus = *std::move(pin_cpus);
  absl::StatusOr<moe::DeviceSpec> device =
      moe::ParseDeviceSpec(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return fail(absl::StrCat("--device: ", device.status().message()));
  if (absl::Status s = moe::CheckDeviceUsable(*device); !s.ok()) {
    return fail(absl::StrCat("--device: ", s.message()));
  }
  options.engine.device = *device;
  absl::StatusOr<moe::DataPlane> data_plane =
      moe::ParseDataPlane(absl::GetFlag(FLAGS_data_plane));
  if (!data_plane.ok()) {
    return fail(absl::StrCat("--data_plane: ", data_plane.status().message()));
  }
  if (*data_plane == moe::DataPlane::kNccl) {
    if (!device->is_cuda()) {
      return fail("--data_plane=nccl needs --device=cuda:N (the rows arrive "
                  "in GPU memory), got --device=" + device->ToString());
    }
    if (absl::Status s = moe::CheckNcclUsable(*device); !s.ok()) {
      return fail(absl::StrCat("--data_plane=nccl: ", s.message()));
    }
  }
  options.data_plane = *data_plane;
  if (absl::Status s = ChoosePlacement(options.engine.model_dir, options.engine);
      !s.ok()) {
    return fail(std::string(s.message()));
  }
  options.metrics_per_expert = absl::GetFlag(FLAGS_metrics_per_expert);
  options.shared_memory = absl::GetFlag(FLAGS_shared_memory);
  options.registry = std::make_shared<prometheus::Registry>();

  moe::PrepareServerProcess();
  moe::ServerProcess<moe::ExpertServer> process;
  process.what = "expert_server";
  process.drain_seconds = absl::GetFlag(FLAGS_drain_seconds);
  process.registry = options.registry;
  process.start = [&options](const std::string& bound_address) {
    options.listen_address = bound_address;
    return moe::ExpertServer::Start(options);
  };
  process.detail = [&options](moe::ExpertServer& server) {
    return absl::StrCat(server.engine().HostedExperts().size(), " experts on ",
                        server.engine().backend_name(),
                        moe::DescribePinning(options.engine.pin_cpus));
  };
  return moe::RunServerProcess(process);
}
