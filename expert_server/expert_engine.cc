#include "expert_server/expert_engine.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace moe {

absl::StatusOr<std::unique_ptr<ExpertEngine>> ExpertEngine::Load(
    const ExpertEngineOptions& options) {
  if (!options.all_experts && options.experts.empty()) {
    return absl::InvalidArgumentError(
        "expert server: no experts placed on it (empty placement)");
  }
  WeightSelection selection = WeightSelection::Experts(options.experts);
  selection.all_experts = options.all_experts;
  std::unique_ptr<ExpertEngine> engine(new ExpertEngine());
  ASSIGN_OR_RETURN(engine->weights_,
                   LoadModelWeightsFromDir(options.model_dir, selection,
                                           /*populate=*/true));
  engine->pool_ = std::make_unique<ThreadPool>(options.num_threads,
                                              options.spin_microseconds);
  engine->executor_ = std::thread([e = engine.get()] { e->ExecutorLoop(); });
  return engine;
}

ExpertEngine::~ExpertEngine() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (executor_.joinable()) executor_.join();
}

std::vector<std::pair<int, int>> ExpertEngine::HostedExperts() const {
  std::vector<std::pair<int, int>> out;
  for (size_t l = 0; l < weights_.layers.size(); ++l) {
    for (const auto& [e, w] : weights_.layers[l].experts) {
      out.emplace_back(static_cast<int>(l), e);
    }
  }
  return out;
}

bool ExpertEngine::Hosts(int layer, int expert) const {
  if (layer < 0 || layer >= static_cast<int>(weights_.layers.size())) {
    return false;
  }
  return weights_.layers[layer].experts.count(expert) > 0;
}

absl::Status ExpertEngine::Validate(absl::Span<const ExpertWork> work) const {
  const ModelConfig& c = config();
  for (size_t i = 0; i < work.size(); ++i) {
    if (work[i].layer < 0 || work[i].layer >= c.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("groups[", i, "].layer: ", work[i].layer,
                       " is outside the model's layers [0, ", c.num_layers, ")"));
    }
    if (work[i].expert < 0 || work[i].expert >= c.num_experts) {
      return absl::InvalidArgumentError(absl::StrCat(
          "groups[", i, "].expert: ", work[i].expert,
          " is outside the model's experts [0, ", c.num_experts, ")"));
    }
    if (!Hosts(work[i].layer, work[i].expert)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "groups[", i, "].expert: layer ", work[i].layer, " expert ",
          work[i].expert, " is not hosted on this expert server"));
    }
    if (work[i].tokens < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("groups[", i, "]: negative token count"));
    }
  }
  return absl::OkStatus();
}

void ExpertEngine::Submit(std::vector<ExpertWork> work, DoneCallback done) {
  absl::MutexLock lock(&mu_);
  queue_.push_back({std::move(work), std::move(done)});
}

absl::Status ExpertEngine::Run(absl::Span<const ExpertWork> work) {
  RETURN_IF_ERROR(Validate(work));
  std::vector<FfnGroup> groups;
  groups.reserve(work.size());
  for (const ExpertWork& w : work) {
    if (w.tokens == 0) continue;
    groups.push_back({&weights_.layers[w.layer].experts.at(w.expert), w.x,
                      w.tokens, w.out});
  }
  runner_.Run(groups, pool_.get());
  return absl::OkStatus();
}

bool ExpertEngine::HasWorkOrStopping() const {
  return stopping_ || !queue_.empty();
}

void ExpertEngine::ExecutorLoop() {
  for (;;) {
    Batch batch;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &ExpertEngine::HasWorkOrStopping));
      if (queue_.empty()) return;  // stopping and drained
      batch = std::move(queue_.front());
      queue_.pop_front();
    }
    const auto start = std::chrono::steady_clock::now();
    absl::Status status = Run(batch.work);
    batch.done(std::move(status),
               std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                             start)
                   .count());
    // Nothing queued: the next batch is an RPC away, so the compute threads
    // sleep now rather than spin on cores the other servers may need.
    absl::MutexLock lock(&mu_);
    if (queue_.empty()) pool_->Park();
  }
}

}  // namespace moe
