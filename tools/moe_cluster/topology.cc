#include "tools/moe_cluster/topology.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/cpu_affinity.h"
#include "core/status_macros.h"
#include "nlohmann/json.hpp"
#include "tools/moe_cluster/json_fields.h"

namespace moe::cluster {
namespace {

using Json = nlohmann::json;

constexpr int kMaxThreads = 4096;
constexpr int kMaxKvCacheMb = 1 << 24;  // 16 TiB
constexpr int kMaxTokens = 1 << 24;

// Server names become file names (<log_dir>/<name>.log), hence the charset.
absl::Status CheckName(absl::string_view path, absl::string_view name) {
  if (name.empty() || name.size() > 64) {
    return PathError(path, "must be 1 to 64 characters long");
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_' && c != '.') {
      return PathError(path, absl::StrCat("\"", name,
                                          "\" may only hold letters, digits, "
                                          "'-', '_' and '.'"));
    }
  }
  if (name == "." || name == "..") {
    return PathError(path, absl::StrCat("\"", name, "\" is not a valid name"));
  }
  return absl::OkStatus();
}

// Reads "name" of the object at `path`, defaulting to `fallback`.
absl::StatusOr<std::string> ReadName(const Json& object, absl::string_view path,
                                     std::string fallback) {
  ASSIGN_OR_RETURN(std::optional<std::string> name,
                   OptionalString(object, path, "name"));
  if (!name.has_value()) return fallback;
  RETURN_IF_ERROR(CheckName(FieldPath(path, "name"), *name));
  return *name;
}

// A device string: "cpu", "cuda" or "cuda:N", normalised ("cuda" is
// "cuda:0"); nullopt when the key is absent.
absl::StatusOr<std::optional<std::string>> OptionalDevice(
    const Json& object, absl::string_view path, absl::string_view key) {
  ASSIGN_OR_RETURN(std::optional<std::string> text,
                   OptionalString(object, path, key));
  if (!text.has_value()) return text;
  absl::StatusOr<DeviceSpec> device = ParseDeviceSpec(*text);
  if (!device.ok()) {
    return PathError(FieldPath(path, key),
                     absl::StrCat("must be \"cpu\", \"cuda\" or \"cuda:N\", "
                                  "got \"",
                                  *text, "\""));
  }
  return std::optional<std::string>(device->ToString());
}

// "expert_servers" / "attention_servers" as a count: 1..kMaxServersPerKind.
absl::StatusOr<int> ReadCount(const Json& value, absl::string_view path) {
  Json wrapper = {{"n", value}};
  absl::StatusOr<std::optional<int>> count =
      OptionalInt(wrapper, "", "n", 1, kMaxServersPerKind);
  if (!count.ok()) {
    return PathError(
        path,
        absl::StrCat("must be a server count in [1, ", kMaxServersPerKind,
                     "] or a list of server objects, got ", value.dump()));
  }
  return **count;
}

absl::StatusOr<ExpertServerTopology> ParseExpertServer(const Json& value,
                                                       const std::string& path,
                                                       size_t index) {
  RETURN_IF_ERROR(
      CheckObject(value, path,
                  {"name", "experts", "threads", "device", "pin_cpus"}));
  ExpertServerTopology server;
  ASSIGN_OR_RETURN(server.name,
                   ReadName(value, path, absl::StrCat("expert-", index)));
  ASSIGN_OR_RETURN(std::optional<std::string> experts,
                   OptionalString(value, path, "experts"));
  if (!experts.has_value()) {
    return PathError(FieldPath(path, "experts"),
                     "required (a list like \"0:0-3,1:0-3\" or \"all\")");
  }
  absl::StatusOr<ExpertList> list = ParseExpertList(*experts);
  if (!list.ok()) {
    // The parser's message starts with "experts: ".
    absl::string_view message = list.status().message();
    absl::ConsumePrefix(&message, "experts: ");
    return PathError(FieldPath(path, "experts"), message);
  }
  server.experts = *std::move(list);
  ASSIGN_OR_RETURN(server.threads,
                   OptionalInt(value, path, "threads", 0, kMaxThreads));
  ASSIGN_OR_RETURN(server.device, OptionalDevice(value, path, "device"));
  ASSIGN_OR_RETURN(server.pin_cpus, OptionalString(value, path, "pin_cpus"));
  if (server.pin_cpus.has_value()) {
    if (absl::Status cpus = ParseCpuList(*server.pin_cpus).status();
        !cpus.ok()) {
      return PathError(FieldPath(path, "pin_cpus"), cpus.message());
    }
  }
  return server;
}

// "expert_servers" with "replicas", "expert_threads" and "expert_device".
struct ExpertServersSection {
  bool automatic_placement = false;
  int replicas = 1;
  std::vector<ExpertServerTopology> servers;
  // Where each server's device was set ("expert_servers[1].device",
  // "expert_device"), or "" when it was not: for the data plane's errors.
  std::vector<std::string> device_paths;
};

absl::StatusOr<ExpertServersSection> ParseExpertServers(const Json& root) {
  ExpertServersSection section;
  auto it = root.find("expert_servers");
  if (it == root.end()) {
    return PathError("expert_servers",
                     "required (a server count or a list of server objects)");
  }
  ASSIGN_OR_RETURN(std::optional<int> default_threads,
                   OptionalInt(root, "", "expert_threads", 0, kMaxThreads));
  ASSIGN_OR_RETURN(std::optional<int> replicas,
                   OptionalInt(root, "", "replicas", 1, kMaxServersPerKind));
  ASSIGN_OR_RETURN(std::optional<std::string> default_device,
                   OptionalDevice(root, "", "expert_device"));
  const std::string default_device_path =
      default_device.has_value() ? "expert_device" : "";
  // "expert_pin_cpus": one CPU list per server of a counted section.
  std::vector<std::string> pin_lists;
  if (auto pins = root.find("expert_pin_cpus"); pins != root.end()) {
    if (it->is_array()) {
      return PathError("expert_pin_cpus",
                       "only applies to expert_servers given as a count; a "
                       "listed server takes its own \"pin_cpus\"");
    }
    if (!pins->is_array()) {
      return PathError("expert_pin_cpus",
                       "must be a list of CPU lists, one per expert server");
    }
    for (size_t i = 0; i < pins->size(); ++i) {
      const std::string path = IndexPath("expert_pin_cpus", i);
      if (!(*pins)[i].is_string()) {
        return PathError(path, "must be a CPU list such as \"0\" or \"2-3\"");
      }
      const std::string cpus = (*pins)[i].get<std::string>();
      if (absl::Status parsed = ParseCpuList(cpus).status(); !parsed.ok()) {
        return PathError(path, parsed.message());
      }
      pin_lists.push_back(cpus);
    }
  }
  if (it->is_array()) {
    if (replicas.has_value()) {
      return PathError("replicas",
                       "only applies to automatic placement (expert_servers "
                       "given as a count); an explicit placement lists the "
                       "replicas itself");
    }
    if (it->empty() || it->size() > kMaxServersPerKind) {
      return PathError("expert_servers",
                       absl::StrCat("must list 1 to ", kMaxServersPerKind,
                                    " servers, got ", it->size()));
    }
    for (size_t i = 0; i < it->size(); ++i) {
      ASSIGN_OR_RETURN(
          ExpertServerTopology server,
          ParseExpertServer((*it)[i], IndexPath("expert_servers", i), i));
      if (!server.threads.has_value()) server.threads = default_threads;
      if (server.device.has_value()) {
        section.device_paths.push_back(
            FieldPath(IndexPath("expert_servers", i), "device"));
      } else {
        server.device = default_device;
        section.device_paths.push_back(default_device_path);
      }
      section.servers.push_back(std::move(server));
    }
    return section;
  }
  ASSIGN_OR_RETURN(const int count, ReadCount(*it, "expert_servers"));
  section.automatic_placement = true;
  section.replicas = replicas.value_or(1);
  if (section.replicas > count) {
    return PathError("replicas",
                     absl::StrCat("must be at most expert_servers (", count,
                                  "), got ", section.replicas));
  }
  if (!pin_lists.empty() && static_cast<int>(pin_lists.size()) != count) {
    return PathError("expert_pin_cpus",
                     absl::StrCat("lists ", pin_lists.size(),
                                  " CPU lists for ", count,
                                  " expert servers"));
  }
  for (int i = 0; i < count; ++i) {
    ExpertServerTopology server;
    server.name = absl::StrCat("expert-", i);
    server.threads = default_threads;
    server.device = default_device;
    if (!pin_lists.empty()) server.pin_cpus = pin_lists[i];
    section.servers.push_back(std::move(server));
    section.device_paths.push_back(default_device_path);
  }
  return section;
}

absl::StatusOr<RouterTopology> ParseRouter(const Json& root) {
  RouterTopology router;
  auto it = root.find("router");
  if (it == root.end()) return router;
  const Json& r = *it;
  RETURN_IF_ERROR(
      CheckObject(r, "router",
                  {"capacity_factor", "overflow", "per_server_token_cap",
                   "fanout_timeout", "threads", "rebalance_period_s",
                   "rebalance_min_gain", "rebalance_slots_per_server",
                   "expert_server_nodes", "rebalance_window_s"}));
  ASSIGN_OR_RETURN(router.capacity_factor,
                   OptionalNumber(r, "router", "capacity_factor", 0, false));
  ASSIGN_OR_RETURN(router.overflow, OptionalString(r, "router", "overflow",
                                                   {"reroute", "drop"}));
  ASSIGN_OR_RETURN(
      router.per_server_token_cap,
      OptionalInt(r, "router", "per_server_token_cap", 0, kMaxTokens));
  ASSIGN_OR_RETURN(router.fanout_timeout,
                   OptionalNumber(r, "router", "fanout_timeout", 0, true));
  ASSIGN_OR_RETURN(router.threads,
                   OptionalInt(r, "router", "threads", 0, kMaxThreads));
  ASSIGN_OR_RETURN(router.rebalance_period_s,
                   OptionalNumber(r, "router", "rebalance_period_s", 0, false));
  ASSIGN_OR_RETURN(router.rebalance_min_gain,
                   OptionalNumber(r, "router", "rebalance_min_gain", 0, false));
  if (router.rebalance_min_gain.has_value() &&
      *router.rebalance_min_gain >= 1) {
    return PathError("router.rebalance_min_gain",
                     absl::StrCat("must be in [0, 1), got ",
                                  *router.rebalance_min_gain));
  }
  ASSIGN_OR_RETURN(router.rebalance_slots_per_server,
                   OptionalInt(r, "router", "rebalance_slots_per_server", 0,
                               kMaxTokens));
  // Whether the nodes divide the servers and the model's expert groups is
  // the router's check at start (it knows the model).
  ASSIGN_OR_RETURN(router.rebalance_window_s,
                   OptionalNumber(r, "router", "rebalance_window_s", 0, false));
  ASSIGN_OR_RETURN(router.expert_server_nodes,
                   OptionalInt(r, "router", "expert_server_nodes", 1,
                               kMaxServersPerKind));
  return router;
}

absl::StatusOr<DataPlaneTopology> ParseDataPlaneSection(const Json& root) {
  DataPlaneTopology plane;
  auto it = root.find("data_plane");
  if (it == root.end()) return plane;
  RETURN_IF_ERROR(CheckObject(*it, "data_plane", {"kind", "router_device"}));
  ASSIGN_OR_RETURN(std::optional<std::string> kind,
                   OptionalString(*it, "data_plane", "kind", {"grpc", "nccl"}));
  if (!kind.has_value()) {
    return PathError("data_plane.kind", "required (\"grpc\" or \"nccl\")");
  }
  ASSIGN_OR_RETURN(plane.kind, ParseDataPlane(*kind));
  ASSIGN_OR_RETURN(std::optional<std::string> router_device,
                   OptionalDevice(*it, "data_plane", "router_device"));
  if (plane.kind == DataPlane::kGrpc) {
    if (router_device.has_value()) {
      return PathError("data_plane.router_device",
                       "only applies to kind \"nccl\"");
    }
    return plane;
  }
  plane.router_device = router_device.value_or("cuda:0");
  if (plane.router_device == "cpu") {
    return PathError("data_plane.router_device",
                     "must be a CUDA device (\"cuda\" or \"cuda:N\"): the "
                     "router sends the rows from its GPU, got \"cpu\"");
  }
  return plane;
}

// With the nccl data plane every expert server needs a CUDA device, and
// not the router's: NCCL refuses two ranks of one communicator on one GPU.
// (Expert servers may share a GPU: each has its own communicator.)
absl::Status CheckDataPlane(const Topology& topology,
                            const std::vector<std::string>& device_paths) {
  if (topology.data_plane.kind != DataPlane::kNccl) return absl::OkStatus();
  for (size_t i = 0; i < topology.expert_servers.size(); ++i) {
    const ExpertServerTopology& server = topology.expert_servers[i];
    if (!server.device.has_value() || *server.device == "cpu") {
      return PathError(
          device_paths[i].empty()
              ? (topology.automatic_placement
                     ? std::string("expert_device")
                     : FieldPath(IndexPath("expert_servers", i), "device"))
              : device_paths[i],
          absl::StrCat("the nccl data plane needs every expert server on a "
                       "CUDA device (\"cuda:N\"), but expert server ",
                       server.name, " has ",
                       server.device.has_value() ? "\"cpu\"" : "none"));
    }
    if (*server.device == topology.data_plane.router_device) {
      return PathError(
          "data_plane.router_device",
          absl::StrCat(topology.data_plane.router_device,
                       " is also the device of expert server ", server.name,
                       " (", device_paths[i],
                       "); NCCL needs the router and each expert server on "
                       "different GPUs"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<GatewayTopology> ParseGateway(const Json& root) {
  GatewayTopology gateway;
  auto it = root.find("gateway");
  if (it == root.end()) return gateway;
  RETURN_IF_ERROR(
      CheckObject(*it, "gateway", {"max_in_flight", "drain_seconds"}));
  ASSIGN_OR_RETURN(gateway.max_in_flight,
                   OptionalInt(*it, "gateway", "max_in_flight", 1, kMaxTokens));
  ASSIGN_OR_RETURN(gateway.drain_seconds,
                   OptionalNumber(*it, "gateway", "drain_seconds", 0, false));
  return gateway;
}

absl::StatusOr<AttentionServerTopology> ParseAttentionServer(
    const Json& value, const std::string& path, size_t index) {
  RETURN_IF_ERROR(CheckObject(
      value, path,
      {"name", "role", "threads", "kv_cache_mb", "prefill_chunk_tokens",
       "max_running", "prefix_cache", "kv_lease_seconds", "micro_batches",
       "moe_dispatch", "wire_dtype"}));
  AttentionServerTopology server;
  ASSIGN_OR_RETURN(server.name,
                   ReadName(value, path, absl::StrCat("attention-", index)));
  ASSIGN_OR_RETURN(std::optional<std::string> role,
                   OptionalString(value, path, "role",
                                  {"both", "prefill", "decode"}));
  if (role.has_value()) {
    ASSIGN_OR_RETURN(server.role, ParseAttentionRole(*role));
  }
  ASSIGN_OR_RETURN(server.threads,
                   OptionalInt(value, path, "threads", 0, kMaxThreads));
  ASSIGN_OR_RETURN(server.kv_cache_mb,
                   OptionalInt(value, path, "kv_cache_mb", 1, kMaxKvCacheMb));
  ASSIGN_OR_RETURN(
      server.prefill_chunk_tokens,
      OptionalInt(value, path, "prefill_chunk_tokens", 1, kMaxTokens));
  ASSIGN_OR_RETURN(server.max_running,
                   OptionalInt(value, path, "max_running", 1, kMaxTokens));
  ASSIGN_OR_RETURN(server.prefix_cache,
                   OptionalBool(value, path, "prefix_cache"));
  ASSIGN_OR_RETURN(server.kv_lease_seconds,
                   OptionalNumber(value, path, "kv_lease_seconds", 0, true));
  ASSIGN_OR_RETURN(server.micro_batches,
                   OptionalInt(value, path, "micro_batches", 1, 3));
  ASSIGN_OR_RETURN(server.moe_dispatch,
                   OptionalString(value, path, "moe_dispatch",
                                  {"router", "direct"}));
  ASSIGN_OR_RETURN(server.wire_dtype,
                   OptionalString(value, path, "wire_dtype", {"f32", "bf16"}));
  return server;
}

absl::StatusOr<std::vector<AttentionServerTopology>> ParseAttentionServers(
    const Json& root) {
  std::vector<AttentionServerTopology> servers;
  auto it = root.find("attention_servers");
  if (it == root.end()) {
    return PathError("attention_servers",
                     "required (a server count or a list of server objects)");
  }
  if (it->is_array()) {
    if (it->empty() || it->size() > kMaxServersPerKind) {
      return PathError("attention_servers",
                       absl::StrCat("must list 1 to ", kMaxServersPerKind,
                                    " servers, got ", it->size()));
    }
    for (size_t i = 0; i < it->size(); ++i) {
      ASSIGN_OR_RETURN(
          AttentionServerTopology server,
          ParseAttentionServer((*it)[i], IndexPath("attention_servers", i), i));
      servers.push_back(std::move(server));
    }
    int both = 0, prefill = 0, decode = 0;
    for (const AttentionServerTopology& s : servers) {
      both += s.role == AttentionRole::kBoth;
      prefill += s.role == AttentionRole::kPrefill;
      decode += s.role == AttentionRole::kDecode;
    }
    if (prefill + decode > 0 && (both > 0 || prefill == 0 || decode == 0)) {
      return PathError(
          "attention_servers",
          absl::StrCat("either every server has role \"both\", or there are "
                       "\"prefill\" and \"decode\" servers and no \"both\" "
                       "(got ", both, " both, ", prefill, " prefill, ", decode,
                       " decode)"));
    }
    return servers;
  }
  ASSIGN_OR_RETURN(const int count, ReadCount(*it, "attention_servers"));
  for (int i = 0; i < count; ++i) {
    AttentionServerTopology server;
    server.name = absl::StrCat("attention-", i);
    servers.push_back(std::move(server));
  }
  return servers;
}

absl::Status CheckUniqueNames(const Topology& topology) {
  absl::flat_hash_set<std::string> names = {"router", "gateway"};
  auto add = [&](const std::string& name, const std::string& path) {
    if (!names.insert(name).second) {
      return PathError(path, absl::StrCat("server name \"", name,
                                          "\" is used twice (\"router\" and "
                                          "\"gateway\" are reserved)"));
    }
    return absl::OkStatus();
  };
  for (size_t i = 0; i < topology.expert_servers.size(); ++i) {
    RETURN_IF_ERROR(add(topology.expert_servers[i].name,
                        FieldPath(IndexPath("expert_servers", i), "name")));
  }
  for (size_t i = 0; i < topology.attention_servers.size(); ++i) {
    RETURN_IF_ERROR(add(topology.attention_servers[i].name,
                        FieldPath(IndexPath("attention_servers", i), "name")));
  }
  return absl::OkStatus();
}

// "security": file names resolved against the topology file's folder (the
// servers run elsewhere, so paths are made absolute). The files themselves
// are read by the launcher (main.cc), not here.
absl::StatusOr<SecurityTopology> ParseSecurity(const Json& root,
                                               absl::string_view source) {
  SecurityTopology security;
  auto it = root.find("security");
  if (it == root.end()) return security;
  RETURN_IF_ERROR(CheckObject(*it, "security",
                              {"tls_cert_file", "tls_key_file", "tls_ca_file",
                               "auth_token_file"}));
  const std::filesystem::path folder =
      std::filesystem::path(std::string(source)).parent_path();
  auto read = [&](absl::string_view key,
                  std::string& out) -> absl::Status {
    ASSIGN_OR_RETURN(std::optional<std::string> value,
                     OptionalString(*it, "security", key));
    if (!value.has_value()) return absl::OkStatus();
    if (value->empty()) {
      return PathError(FieldPath("security", key), "must not be empty");
    }
    std::error_code ec;
    const std::filesystem::path absolute =
        std::filesystem::absolute(folder / *value, ec);
    out = ec ? (folder / *value).string() : absolute.lexically_normal().string();
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(read("tls_cert_file", security.tls_cert_file));
  RETURN_IF_ERROR(read("tls_key_file", security.tls_key_file));
  RETURN_IF_ERROR(read("tls_ca_file", security.tls_ca_file));
  RETURN_IF_ERROR(read("auth_token_file", security.auth_token_file));
  const int tls_given = !security.tls_cert_file.empty() +
                        !security.tls_key_file.empty() +
                        !security.tls_ca_file.empty();
  if (tls_given != 0 && tls_given != 3) {
    return PathError("security",
                     "tls_cert_file, tls_key_file and tls_ca_file go together "
                     "(mutual TLS between the servers needs all three)");
  }
  return security;
}

absl::StatusOr<Topology> ParseRoot(const Json& root, absl::string_view source) {
  RETURN_IF_ERROR(
      CheckObject(root, "",
                  {"name", "description", "expert_servers", "replicas",
                   "expert_threads", "expert_device", "expert_pin_cpus",
                   "router",
                   "attention_servers", "gateway", "security", "data_plane",
                   "pin_cpus", "shared_memory"}));
  Topology topology;
  topology.source = std::string(source);
  absl::string_view stem = source.substr(source.rfind('/') + 1);
  absl::ConsumeSuffix(&stem, ".json");
  ASSIGN_OR_RETURN(std::optional<std::string> name,
                   OptionalString(root, "", "name"));
  topology.name = name.value_or(std::string(stem));
  RETURN_IF_ERROR(OptionalString(root, "", "description").status());
  ASSIGN_OR_RETURN(ExpertServersSection experts, ParseExpertServers(root));
  topology.automatic_placement = experts.automatic_placement;
  topology.replicas = experts.replicas;
  topology.expert_servers = std::move(experts.servers);
  ASSIGN_OR_RETURN(topology.router, ParseRouter(root));
  ASSIGN_OR_RETURN(topology.attention_servers, ParseAttentionServers(root));
  ASSIGN_OR_RETURN(topology.gateway, ParseGateway(root));
  ASSIGN_OR_RETURN(topology.security, ParseSecurity(root, source));
  ASSIGN_OR_RETURN(topology.data_plane, ParseDataPlaneSection(root));
  ASSIGN_OR_RETURN(topology.pin_cpus, OptionalString(root, "", "pin_cpus"));
  if (topology.pin_cpus.has_value()) {
    // Checked against this host's CPUs, where the servers will run.
    if (absl::Status cpus = ParseCpuList(*topology.pin_cpus).status();
        !cpus.ok()) {
      return PathError("pin_cpus", cpus.message());
    }
  }
  ASSIGN_OR_RETURN(topology.shared_memory,
                   OptionalBool(root, "", "shared_memory"));
  RETURN_IF_ERROR(CheckUniqueNames(topology));
  RETURN_IF_ERROR(CheckDataPlane(topology, experts.device_paths));
  return topology;
}

}  // namespace

absl::StatusOr<Topology> ParseTopology(absl::string_view json_text,
                                       absl::string_view source) {
  const std::string prefix = absl::StrCat("topology ", source);
  absl::StatusOr<Json> root = ParseJson(json_text);
  if (!root.ok()) return Prefixed(prefix, root.status());
  absl::StatusOr<Topology> topology = ParseRoot(*root, source);
  if (!topology.ok()) return Prefixed(prefix, topology.status());
  return topology;
}

absl::StatusOr<Topology> LoadTopology(const std::string& path) {
  std::error_code ec;
  std::ifstream in(path, std::ios::binary);
  if (!std::filesystem::is_regular_file(path, ec) || !in) {
    return absl::NotFoundError(
        absl::StrCat("topology ", path, ": cannot read the file"));
  }
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::NotFoundError(
        absl::StrCat("topology ", path, ": cannot read the file"));
  }
  return ParseTopology(text.str(), path);
}

}  // namespace moe::cluster
