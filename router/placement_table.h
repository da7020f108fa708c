// Expert placement: which expert servers host which (layer, expert).
//
// Server ids are dense, 0..num_servers-1. An expert may be hosted by several
// servers (replicas); a server may host any subset of (layer, expert).
// PlacementTable is a value type: const methods may be called concurrently,
// mutation needs external synchronisation.
#ifndef MOE_ROUTER_PLACEMENT_TABLE_H_
#define MOE_ROUTER_PLACEMENT_TABLE_H_

#include <compare>
#include <cstdint>
#include <map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/model_config.h"

namespace moe {

struct LayerExpert {
  int layer = 0;
  int expert = 0;
  auto operator<=>(const LayerExpert&) const = default;
};

class PlacementTable {
 public:
  // A table for servers 0..num_servers-1 (a negative count is taken as 0,
  // which makes every Add fail).
  explicit PlacementTable(int num_servers);

  int num_servers() const { return num_servers_; }
  // Number of (layer, expert, server) entries.
  int64_t num_entries() const { return num_entries_; }

  // Records that `server` hosts (layer, expert). INVALID_ARGUMENT for a
  // negative layer or expert or a server outside [0, num_servers);
  // ALREADY_EXISTS when that server already hosts it.
  absl::Status Add(int layer, int expert, int server);

  // Servers hosting (layer, expert), ascending; empty when none. The span
  // stays valid until the next Add.
  absl::Span<const int32_t> Replicas(int layer, int expert) const;

  // What `server` hosts, ascending by (layer, expert).
  std::vector<LayerExpert> ExpertsOn(int server) const;

  // OK when every expert of every MoE layer of `config` has at least one
  // replica and no entry lies outside the model (a layer past num_layers, a
  // dense layer, an expert past num_experts). Otherwise INVALID_ARGUMENT
  // naming the first offending (layer, expert) in (layer, expert) order.
  absl::Status Validate(const ModelConfig& config) const;

 private:
  int num_servers_;
  int64_t num_entries_ = 0;
  // Ordered so that listings and error messages are deterministic.
  std::map<LayerExpert, std::vector<int32_t>> replicas_;
};

// Places every expert of every MoE layer of `config` on `replicas` distinct
// servers by dealing replicas round-robin: pair number g (counting (layer,
// expert) pairs in order across layers) goes to servers g*replicas, ...,
// g*replicas + replicas-1, modulo num_servers. Each server then hosts floor
// or ceil of its share, overall and within each layer. INVALID_ARGUMENT when
// num_servers < 1, replicas < 1, replicas > num_servers, or the config has no
// experts.
absl::StatusOr<PlacementTable> AutoPlacement(const ModelConfig& config,
                                             int num_servers, int replicas);

}  // namespace moe

#endif  // MOE_ROUTER_PLACEMENT_TABLE_H_
