// A Hugging Face checkpoint directory: config.json plus model.safetensors or
// shards listed in model.safetensors.index.json.
//
// Shards are opened lazily, on the first request for a tensor they hold, so a
// caller that loads only part of a model never maps the other shards.
// Thread-safe.
#ifndef MOE_CORE_CHECKPOINT_H_
#define MOE_CORE_CHECKPOINT_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/model_config.h"
#include "core/safetensors.h"
#include "core/tensor.h"

namespace moe {

struct CheckpointOptions {
  // Fault mapped pages in when a shard is opened (servers want resident
  // weights; tools that read a few tensors do not).
  bool populate = false;
};

class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(
      const std::string& dir, CheckpointOptions options = {});

  const ModelConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }

  bool Has(const std::string& name) const;

  // The tensor `name`, which must have exactly `shape`. Errors name the
  // tensor: NOT_FOUND when missing, INVALID_ARGUMENT on a shape or dtype
  // problem, and whatever opening its shard reports.
  absl::StatusOr<TensorView> Get(const std::string& name,
                                 const std::vector<int64_t>& shape);

  // File names of the shards mapped so far (for tests of partial loading).
  std::vector<std::string> OpenedShards() const;

 private:
  Checkpoint() = default;
  absl::StatusOr<const SafetensorsFile*> Shard(const std::string& file);

  std::string dir_;
  ModelConfig config_;
  CheckpointOptions options_;
  std::map<std::string, std::string> weight_map_;  // tensor -> shard file
  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<SafetensorsFile>> shards_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_CORE_CHECKPOINT_H_
