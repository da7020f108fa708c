// The command lines of the servers of a ClusterPlan: which binary, which
// flags, in which start-up stage. Pure computation; no process code.
#ifndef MOE_TOOLS_MOE_CLUSTER_SERVER_ARGS_H_
#define MOE_TOOLS_MOE_CLUSTER_SERVER_ARGS_H_

#include <string>
#include <vector>

#include "tools/moe_cluster/topology.h"

namespace moe::cluster {

// Start-up stages in dependency order; shutdown runs them backwards.
enum class Stage { kExpertServers = 0, kRouter, kAttentionServers, kGateway };
inline constexpr int kNumStages = 4;

// The binaries a cluster needs, by file name in --bin_dir.
inline constexpr const char* kExpertServerBinary = "expert_server";
inline constexpr const char* kRouterBinary = "router";
inline constexpr const char* kAttentionServerBinary = "attention_server";
inline constexpr const char* kGatewayBinary = "gateway";
std::vector<std::string> RequiredBinaries();

// One server to start. `args` are its flags except --listen and --port_file
// (added by the launcher) and the addresses of the servers it depends on
// (added by WithDependencies once those are known).
struct ServerLaunch {
  std::string name;    // unique; names its log and port files
  std::string binary;  // file name in --bin_dir
  Stage stage = Stage::kExpertServers;
  // Attention servers: their role ("both", "prefill", "decode"), which says
  // under which gateway flag their address goes.
  std::string role;
  std::vector<std::string> args;
  std::string detail;  // for the ready listing: "experts 0:0-3", "" if none
};

// The servers of `plan` in start-up order: expert servers (in router id
// order), the router, attention servers, the gateway. Only the settings the
// topology gives become flags ("--flag=value", one argument each); its
// "security" section gives every server --tls_cert_file, --tls_key_file and
// --tls_ca_file, and the gateway --auth_token_file.
std::vector<ServerLaunch> PlanLaunches(const ClusterPlan& plan,
                                       const std::string& model_dir);

// A started server of the previous stage.
struct Dependency {
  std::string address;
  std::string role;  // attention servers only
};

// The flag that carries the addresses of the previous stage's servers:
// router --expert_servers, attention_server --router, gateway
// --attention_servers (role both; --prefill_servers and --decode_servers
// for those roles); "" for expert servers.
std::string DependencyFlag(Stage stage, absl::string_view role = "");

// `launch.args` plus DependencyFlag=ADDR,ADDR,... (in the given order,
// which for the router is the expert server id order), one flag per role.
std::vector<std::string> WithDependencies(
    const ServerLaunch& launch, const std::vector<Dependency>& dependencies);

// Shortest decimal text that parses back to `value` ("0.5", "10").
std::string FormatNumber(double value);

}  // namespace moe::cluster

#endif  // MOE_TOOLS_MOE_CLUSTER_SERVER_ARGS_H_
