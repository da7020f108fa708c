// router: top-k gating, capacity and overflow, fan-out to expert servers.
//   router --model DIR --expert_servers 127.0.0.1:5001,127.0.0.1:5002
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/server/server_process.h"
#include "router/router_server.h"
#include "tools/common/command_line.h"

ABSL_FLAG(std::string, model, "",
          "Checkpoint directory (only the gates are loaded).");
ABSL_FLAG(
    std::string, expert_servers, "",
    "Comma-separated expert server addresses; the order gives server ids.");
ABSL_FLAG(double, capacity_factor, 0.0,
          "Per-expert capacity ceil(f * tokens * k / experts) per batch; 0 = "
          "unlimited.");
ABSL_FLAG(std::string, overflow, "reroute",
          "When an expert is full: reroute (replica, else next-best expert) or "
          "drop.");
ABSL_FLAG(int, per_server_token_cap, 0,
          "Max slots per expert server per batch; 0 = none.");
ABSL_FLAG(double, fanout_timeout, 10.0,
          "Deadline of each expert call, seconds.");
ABSL_FLAG(double, health_probe_seconds, 1.0,
          "Every expert server's grpc.health.v1 is probed this often (each "
          "probe waits as long): two failed probes in a row mark a server "
          "down (it then takes no work), one SERVING answer marks it up.");
ABSL_FLAG(double, connect_timeout, 60.0,
          "How long to wait for the expert servers at start, seconds.");
ABSL_FLAG(int, threads, 1, "Threads for the gate projections.");
ABSL_FLAG(bool, metrics_per_expert, true,
          "Label token counters by expert (off for models with many experts).");
ABSL_FLAG(double, drain_seconds, 5.0,
          "Grace period for in-flight calls on SIGTERM.");
ABSL_FLAG(bool, shared_memory, true,
          "Reach expert servers on this host over shared memory (/dev/shm "
          "and futex wake-ups), falling back to gRPC where they cannot "
          "take it; false: always gRPC.");
ABSL_FLAG(std::string, data_plane, "grpc",
          "How the groups' rows reach the expert servers: grpc (float32 in "
          "the requests) or nccl (BF16, GPU to GPU from --device over one "
          "NCCL communicator per expert server, each started with "
          "--data_plane=nccl on its own GPU; gRPC still carries the calls, "
          "and a server whose link breaks gets its rows over gRPC again).");
ABSL_FLAG(std::string, device, "cuda:0",
          "With --data_plane=nccl: the router's GPU (cuda or cuda:N), which "
          "must not be an expert server's.");

ABSL_FLAG(double, rebalance_period_s, 0.0,
          "Seconds between automatic expert rebalances (re-placing and "
          "replicating experts from the load since the last one, while "
          "serving); 0: only when asked (moe-cli rebalance).");
ABSL_FLAG(double, rebalance_min_gain, 0.1,
          "Rebalance only when the predicted imbalance (most-loaded over mean "
          "expert server tokens) falls by at least this fraction, in [0, 1).");
ABSL_FLAG(int, rebalance_slots_per_server, 0,
          "Experts of one layer one expert server may host after a "
          "rebalance; 0: the current most per server and layer, plus one.");

ABSL_FLAG(double, rebalance_window_s, 0.0,
          "The load a rebalance balances: the tokens of the last this many "
          "seconds (a sliding window); 0: those since the previous "
          "rebalance.");
ABSL_FLAG(int, expert_server_nodes, 1,
          "Nodes the expert servers form, consecutive in --expert_servers "
          "order (2 nodes of 4 servers: the first two and the last two). "
          "Above 1, rebalancing keeps each expert group of a model with "
          "group-limited gating (DeepSeek's n_group), replicas included, on "
          "one node; it must divide the servers and n_group.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Route MoE layers to expert servers.\n"
      "  router --model DIR --expert_servers ADDR,ADDR [--capacity_factor F "
      "--overflow reroute|drop]");
  moe::tools::ParseCommandLineWithHyphens(argc, argv);
  auto fail = [](const std::string& message) {
    std::fprintf(stderr, "router: %s\n", message.c_str());
    return 2;
  };
  moe::RouterServerOptions options;
  options.engine.model_dir = absl::GetFlag(FLAGS_model);
  if (options.engine.model_dir.empty()) return fail("--model is required");
  options.expert_addresses = absl::StrSplit(absl::GetFlag(FLAGS_expert_servers),
                                            ',', absl::SkipWhitespace());
  if (options.expert_addresses.empty())
    return fail("--expert_servers is required");
  const double factor = absl::GetFlag(FLAGS_capacity_factor);
  if (!std::isfinite(factor) || factor < 0) {
    return fail("--capacity_factor must be finite and >= 0");
  }
  options.engine.capacity.capacity_factor = factor;
  const std::string overflow = absl::GetFlag(FLAGS_overflow);
  if (overflow == "reroute") {
    options.engine.capacity.policy =
        moe::CapacityOptions::OverflowPolicy::kReroute;
  } else if (overflow == "drop") {
    options.engine.capacity.policy =
        moe::CapacityOptions::OverflowPolicy::kDrop;
  } else {
    return fail("--overflow must be reroute or drop, got \"" + overflow + "\"");
  }
  if (absl::GetFlag(FLAGS_per_server_token_cap) < 0) {
    return fail("--per_server_token_cap must be >= 0");
  }
  options.engine.capacity.per_server_token_cap =
      absl::GetFlag(FLAGS_per_server_token_cap);
  if (!(absl::GetFlag(FLAGS_fanout_timeout) > 0))
    return fail("--fanout_timeout must be > 0");
  options.fanout_timeout_seconds = absl::GetFlag(FLAGS_fanout_timeout);
  if (!(absl::GetFlag(FLAGS_health_probe_seconds) > 0))
    return fail("--health_probe_seconds must be > 0");
  options.health_probe_seconds = absl::GetFlag(FLAGS_health_probe_seconds);
  options.connect_timeout_seconds = absl::GetFlag(FLAGS_connect_timeout);
  if (absl::GetFlag(FLAGS_threads) < 0) return fail("--threads must be >= 0");
  options.engine.num_threads = absl::GetFlag(FLAGS_threads);
  if (!(absl::GetFlag(FLAGS_drain_seconds) >= 0)) {
    return fail("--drain_seconds must be >= 0");
  }

  absl::StatusOr<moe::DataPlane> data_plane =
      moe::ParseDataPlane(absl::GetFlag(FLAGS_data_plane));
  if (!data_plane.ok()) {
    return fail(absl::StrCat("--data_plane: ", data_plane.status().message()));
  }
  absl::StatusOr<moe::DeviceSpec> device =
      moe::ParseDeviceSpec(absl::GetFlag(FLAGS_device));
  if (!device.ok()) {
    return fail(absl::StrCat("--device: ", device.status().message()));
  }
  if (*data_plane == moe::DataPlane::kNccl) {
    if (absl::Status s = moe::CheckNcclUsable(*device); !s.ok()) {
      return fail(absl::StrCat("--data_plane=nccl: ", s.message()));
    }
  }
  options.data_plane = *data_plane;
  options.shared_memory.enabled = absl::GetFlag(FLAGS_shared_memory);
  options.device = *device;

  const double period = absl::GetFlag(FLAGS_rebalance_period_s);
  if (!(period >= 0) || period > 86400 * 365) {
    return fail("--rebalance_period_s must be in [0, 31536000] seconds");
  }
  const double min_gain = absl::GetFlag(FLAGS_rebalance_min_gain);
  if (!(min_gain >= 0 && min_gain < 1)) {
    return fail("--rebalance_min_gain must be in [0, 1)");
  }
  const int slots = absl::GetFlag(FLAGS_rebalance_slots_per_server);
  if (slots < 0) return fail("--rebalance_slots_per_server must be >= 0");
  options.rebalance.period_seconds = period;
  options.rebalance.min_gain = min_gain;
  options.rebalance.slots_per_server = slots;
  const int nodes = absl::GetFlag(FLAGS_expert_server_nodes);
  if (nodes < 1) {
    return fail(absl::StrCat("--expert_server_nodes must be >= 1, got ",
                             nodes));
  }
  options.rebalance.num_nodes = nodes;
  const double window = absl::GetFlag(FLAGS_rebalance_window_s);
  if (!(window >= 0) || window > 86400 * 365) {
    return fail("--rebalance_window_s must be in [0, 31536000] seconds");
  }
  options.rebalance.window_seconds = window;

  options.metrics_per_expert = absl::GetFlag(FLAGS_metrics_per_expert);
  options.registry = std::make_shared<prometheus::Registry>();

  moe::PrepareServerProcess();
  moe::ServerProcess<moe::RouterServer> process;
  process.what = "router";
  process.drain_seconds = absl::GetFlag(FLAGS_drain_seconds);
  process.registry = options.registry;
  process.start = [&options](const std::string& bound_address) {
    options.listen_address = bound_address;
    return moe::RouterServer::Start(options);
  };
  process.detail = [&options](moe::RouterServer&) {
    return absl::StrCat(
        options.expert_addresses.size(), " expert servers",
        options.rebalance.period_seconds > 0
            ? absl::StrCat(", rebalancing every ",
                           options.rebalance.period_seconds, " s")
            : "",
        options.data_plane == moe::DataPlane::kNccl
            ? absl::StrCat(", NCCL data plane from ", options.device.ToString())
            : "");
  };
  return moe::RunServerProcess(process);
}
