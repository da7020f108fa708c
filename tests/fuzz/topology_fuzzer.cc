// moe-cluster topology files: ParseTopology on arbitrary JSON text, then
// placement resolution against a small Qwen2-MoE model (3 layers, the middle
// one dense, 8 experts) and the server command lines PlanLaunches builds.
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "core/model_generator.h"
#include "tests/fuzz/fuzz_util.h"
#include "tools/moe_cluster/server_args.h"
#include "tools/moe_cluster/topology.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const moe::ModelConfig config =
      moe::SmallConfig(moe::ModelFamily::kQwen2Moe);
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<moe::cluster::Topology> topology =
      moe::cluster::ParseTopology(text, "fuzz.json");
  if (!topology.ok()) return 0;
  absl::StatusOr<moe::cluster::ClusterPlan> plan =
      moe::cluster::ResolveTopology(*topology, config);
  if (!plan.ok()) return 0;
  for (const auto& server : plan->expert_servers) {
    moe::fuzz::Check(!server.experts.empty(),
                     "a resolved expert server hosts no expert");
  }
  (void)moe::cluster::PlanLaunches(*plan, "/model");
  return 0;
}
