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
  RETURN_IF_ERROR(CheckDeviceUsable(options.device));
  // A GPU server's FFNs run on the device: one host thread is enough.
  engine->pool_ = std::make_unique<ThreadPool>(
      options.device.is_cuda() ? 1 : options.num_threads,
      options.spin_microseconds, options.pin_cpus);
  std::vector<const FfnWeights*> hosted;
  for (const LayerWeights& layer : engine->weights_.layers) {
    for (const auto& entry : layer.experts) hosted.push_back(&entry.second);
  }
  ASSIGN_OR_RETURN(engine->backend_,
                   CreateExpertFfnBackend(options.device, hosted,
                                          engine->pool_.get()));
  // A CUDA backend stays on the executor thread, where its stream lives;
  // pinned compute threads stay on their CPUs.
  engine->run_inline_ = !options.device.is_cuda() && options.pin_cpus.empty();
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
  Batch batch{std::move(work), nullptr, std::move(done)};
  {
    absl::MutexLock lock(&mu_);
    if (!run_inline_ || running_ || !queue_.empty()) {
      queue_.push_back(std::move(batch));
      return;
    }
    running_ = true;
  }
  // Nothing queued or running: compute on the caller's thread, which saves
  // the executor's wake-up (one scheduling delay per call on a busy host).
  RunAndReport(batch);
}

void ExpertEngine::SubmitTask(std::vector<ExpertWork> work, BackendTask task,
                              DoneCallback done) {
  absl::MutexLock lock(&mu_);
  queue_.push_back({std::move(work), std::move(task), std::move(done)});
}

absl::Status ExpertEngine::Run(const Batch& batch) {
  RETURN_IF_ERROR(Validate(batch.work));
  std::vector<FfnGroup> groups;
  groups.reserve(batch.work.size());
  for (const ExpertWork& w : batch.work) {
    if (w.tokens == 0) continue;
    groups.push_back({&weights_.layers[w.layer].experts.at(w.expert), w.x,
                      w.tokens, w.out});
  }
  if (batch.task) return batch.task(*backend_, groups);
  return backend_->Run(groups);
}

bool ExpertEngine::HasWorkOrStopping() const {
  return !running_ && (stopping_ || !queue_.empty());
}

void ExpertEngine::RunAndReport(Batch& batch) {
  const auto start = std::chrono::steady_clock::now();
  absl::Status status = Run(batch);
  batch.done(std::move(status),
             std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                           start)
                 .count());
  // Nothing queued: the next batch is an RPC away, so the compute threads
  // sleep now rather than spin on cores the other servers may need.
  absl::MutexLock lock(&mu_);
  running_ = false;
  if (queue_.empty()) pool_->Park();
}

void ExpertEngine::ExecutorLoop() {
  // Best effort: unpinned, the FFNs compute the same results.
  pool_->PinOwner().IgnoreError();
  for (;;) {
    Batch batch;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &ExpertEngine::HasWorkOrStopping));
      if (queue_.empty()) return;  // stopping and drained
      batch = std::move(queue_.front());
      queue_.pop_front();
      running_ = true;
    }
    RunAndReport(batch);
  }
}

}  // namespace moe
