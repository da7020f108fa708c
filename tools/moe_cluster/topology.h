// A cluster topology: which servers `moe-cluster up` starts and with what
// settings. Parsing, validation and placement resolution only; no process
// code (see cluster_launcher.h for that).
//
// The file is strict JSON (no comments). Every key below is optional unless
// marked required; an unknown key anywhere is an error naming it, and every
// value is type- and range-checked with an error naming its JSON path.
//
//   {
//     "name": "four-slices",      // default: the file name without ".json"
//     "description": "text",      // free text, ignored
//
//     // Expert servers (required), either a count with automatic placement
//     // (moe::AutoPlacement: each expert of each MoE layer on `replicas`
//     // distinct servers, dealt round-robin) ...
//     "expert_servers": 4,        // 1..256, servers named expert-0, expert-1..
//     "replicas": 1,              // 1..expert_servers (only with a count)
//     // ... or an explicit placement, one object per server:
//     "expert_servers": [
//       {"name": "expert-0",      // default: expert-<index>
//        "experts": "0:0-3,1:0-3",// required; core/expert_list.h syntax, or
//                                 // "all": every expert of every MoE layer
//        "threads": 1,            // overrides expert_threads
//        "device": "cuda:1"}      // overrides expert_device
//     ],
//     "expert_threads": 1,        // default --threads of every expert server
//                                 // (0 = one per core); unset: server default
//     "expert_device": "cuda:1",  // default --device of every expert server:
//                                 // "cpu", "cuda" (= "cuda:0") or "cuda:N"
//     "pin_cpus": "all",          // --pin_cpus of every expert and attention
//                                 // server: their compute threads pinned,
//                                 // thread k to the k-th CPU ("all" or a
//                                 // list like "0,2-3"); unset: unpinned
//     "shared_memory": true,      // --shared_memory of every expert server,
//                                 // attention server and the router: MoE
//                                 // calls between servers on one host over
//                                 // /dev/shm (the default); false: gRPC
//
//     "router": {                 // each key maps to the router flag
//       "capacity_factor": 0,     // number >= 0 (0 = unlimited)
//       "overflow": "reroute",    // "reroute" or "drop"
//       "per_server_token_cap": 0,// integer >= 0 (0 = none)
//       "fanout_timeout": 10,     // seconds, number > 0
//       "threads": 1,             // integer >= 0
//       "rebalance_period_s": 0,  // seconds >= 0 (0 = only on request)
//       "rebalance_min_gain": 0.1,// in [0, 1)
//       "rebalance_slots_per_server": 0,  // integer >= 0 (0 = automatic)
//       "rebalance_window_s": 0,  // seconds >= 0 (0 = since the last one)
//       "expert_server_nodes": 1} // integer >= 1: nodes the expert servers
//                                 // form, in order (hierarchical EPLB)
//     },
//
//     // Attention servers (required): a count (1..256, all role "both",
//     // named attention-0, ...) or one object per server:
//     "attention_servers": [
//       {"name": "attention-0",   // default: attention-<index>
//        "role": "both",          // "both" (default), "prefill" or "decode";
//                                 // either every server is "both", or there
//                                 // is at least one "prefill" and one
//                                 // "decode" and no "both"
//        "threads": 0,            // integer >= 0 (0 = one per core)
//        "kv_cache_mb": 256,      // integer >= 1
//        "prefill_chunk_tokens": 512,  // integer >= 1
//        "max_running": 64,       // integer >= 1
//        "prefix_cache": true,    // reuse cached K/V of earlier prompts
//        "kv_lease_seconds": 30,  // decode: how long K/V may take, > 0
//        "micro_batches": 1,      // decode ping-pong micro-batches, 1..3
//        "moe_dispatch": "router",// "router" (default): MoE steps go
//                                 // through the router; "direct": this
//                                 // server sends them to the expert
//                                 // servers itself with the router's
//                                 // placement (one hop each way)
//        "wire_dtype": "f32"}     // "f32" (default, bit-identical) or
//                                 // "bf16" (half the bytes, rounded)
//     ],
//
//     "data_plane": {             // how the groups' rows travel between
//                                 // the router and the expert servers
//       "kind": "nccl",           // required: "grpc" (float32 in the gRPC
//                                 // requests, the default without this
//                                 // section) or "nccl" (BF16 GPU to GPU;
//                                 // every expert server needs a CUDA device
//                                 // other than the router's)
//       "router_device": "cuda:0" // nccl only: the router's GPU (default
//                                 // "cuda:0")
//     },
//
//     "gateway": {                // each key maps to the gateway flag
//       "max_in_flight": 1024,    // Generate calls at once, 1..2^24; more
//                                 // get RESOURCE_EXHAUSTED with a retry hint
//       "drain_seconds": 30       // on SIGTERM, the longest wait for the
//                                 // streams in flight to finish (>= 0)
//     },
//
//     "security": {               // TLS and the public API's token; paths
//                                 // relative to the topology file's folder
//       "tls_cert_file": "server.pem",  // every server's certificate chain,
//       "tls_key_file": "server.key",   // its key and the CA bundle: all
//       "tls_ca_file": "ca.pem",        // three or none (mutual TLS inside)
//       "auth_token_file": "token"      // the gateway's --auth_token_file
//     }
//   }
//
// Settings left out are not passed, so the servers' own defaults apply.
// Server names are unique across the cluster, 1..64 characters from
// [A-Za-z0-9._-]; "router" and "gateway" are taken by those two servers.
#ifndef MOE_TOOLS_MOE_CLUSTER_TOPOLOGY_H_
#define MOE_TOOLS_MOE_CLUSTER_TOPOLOGY_H_

#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/attention_role.h"
#include "core/expert_list.h"
#include "core/model_config.h"
#include "core/nccl_data_plane.h"

namespace moe::cluster {

inline constexpr int kMaxServersPerKind = 256;

struct ExpertServerTopology {
  std::string name;
  ExpertList experts;  // explicit placement only
  std::optional<int> threads;
  // "cpu" or "cuda:N" (normalised: "cuda" is "cuda:0"); unset: the server's
  // default (cpu).
  std::optional<std::string> device;
  // CPUs for this server's compute threads (as the top-level "pin_cpus",
  // which it overrides), e.g. one core per expert server.
  std::optional<std::string> pin_cpus;
};

struct RouterTopology {
  std::optional<double> capacity_factor;
  std::optional<std::string> overflow;  // "reroute" or "drop"
  std::optional<int> per_server_token_cap;
  std::optional<double> fanout_timeout;  // seconds
  std::optional<int> threads;
  std::optional<double> rebalance_period_s;  // 0: only on request
  std::optional<double> rebalance_min_gain;  // [0, 1)
  std::optional<int> rebalance_slots_per_server;  // 0: automatic
  std::optional<int> expert_server_nodes;         // >= 1
  std::optional<double> rebalance_window_s;       // 0: since the last
};

struct AttentionServerTopology {
  std::string name;
  AttentionRole role = AttentionRole::kBoth;
  std::optional<int> threads;
  std::optional<int> kv_cache_mb;
  std::optional<int> prefill_chunk_tokens;
  std::optional<int> max_running;
  std::optional<bool> prefix_cache;
  std::optional<double> kv_lease_seconds;
  std::optional<int> micro_batches;
  std::optional<std::string> moe_dispatch;  // "router" or "direct"
  std::optional<std::string> wire_dtype;    // "f32" or "bf16"
};

struct GatewayTopology {
  std::optional<int> max_in_flight;
  std::optional<double> drain_seconds;
};

// "data_plane": with kNccl the router gets --data_plane=nccl
// --device=ROUTER_DEVICE and every expert server --data_plane=nccl.
struct DataPlaneTopology {
  DataPlane kind = DataPlane::kGrpc;
  std::string router_device;  // "cuda:N" with kNccl, else empty
};

// Absolute paths; empty = not given. The TLS files are all given or none.
struct SecurityTopology {
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_ca_file;
  std::string auth_token_file;
  bool tls() const { return !tls_cert_file.empty(); }
};

// A parsed, model-independent topology.
struct Topology {
  std::string source;  // the file, for errors
  std::string name;
  // True when "expert_servers" is a count: `expert_servers` then holds
  // only names and threads, and the experts come from AutoPlacement.
  bool automatic_placement = false;
  int replicas = 1;  // automatic placement only
  std::vector<ExpertServerTopology> expert_servers;
  RouterTopology router;
  std::vector<AttentionServerTopology> attention_servers;
  GatewayTopology gateway;
  SecurityTopology security;
  DataPlaneTopology data_plane;
  std::optional<std::string> pin_cpus;
  std::optional<bool> shared_memory;
};

// Parses topology JSON. `source` names the file in errors; it also gives the
// default name (its base name without ".json"). Errors are INVALID_ARGUMENT,
// "topology SOURCE: PATH: problem", e.g.
// "topology x.json: router.capacity_factor: must be a finite number >= 0".
absl::StatusOr<Topology> ParseTopology(absl::string_view json_text,
                                       absl::string_view source);

// Reads and parses a topology file; NOT_FOUND naming the path when it
// cannot be read.
absl::StatusOr<Topology> LoadTopology(const std::string& path);

// An expert server with its experts resolved against a model.
struct ExpertServerPlan {
  std::string name;
  // (layer, expert); empty only for a spare ("experts": "none"), which
  // hosts what the router's rebalancing assigns it.
  std::set<std::pair<int, int>> experts;
  std::optional<int> threads;
  std::optional<std::string> device;
  bool spare = false;
  std::optional<std::string> pin_cpus;  // overrides ClusterPlan::pin_cpus
};

// A topology resolved against a model: what each server is started with.
struct ClusterPlan {
  std::string name;
  std::vector<ExpertServerPlan> expert_servers;  // index = router server id
  RouterTopology router;
  std::vector<AttentionServerTopology> attention_servers;
  GatewayTopology gateway;
  SecurityTopology security;
  DataPlaneTopology data_plane;
  std::optional<std::string> pin_cpus;
  std::optional<bool> shared_memory;  // every server's --shared_memory
};

// Resolves the placement: automatic placement through moe::AutoPlacement,
// explicit lists ("all" expanded to every expert of every MoE layer) checked
// entry by entry (errors name the server and the (layer, expert)) and for
// coverage with moe::PlacementTable::Validate. INVALID_ARGUMENT prefixed with
// "topology SOURCE: ".
absl::StatusOr<ClusterPlan> ResolveTopology(const Topology& topology,
                                            const ModelConfig& config);

}  // namespace moe::cluster

#endif  // MOE_TOOLS_MOE_CLUSTER_TOPOLOGY_H_
