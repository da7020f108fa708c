#include "expert_server/expert_engine.h"

#include <chrono>
#include <memory>

#include "absl/strings/str_cat.h"
#include "core/safetensors.h"
#include "core/status_macros.h"

namespace moe {

absl::StatusOr<std::unique_ptr<ExpertEngine>> ExpertEngine::Load(
    const ExpertEngineOptions& options) {
  if (!options.all_experts && options.experts.empty() &&
      !options.start_empty) {
    return absl::InvalidArgumentError(
        "expert server: no experts placed on it (empty placement; "
        "--experts=none starts it empty on purpose)");
  }
  if (options.start_empty && options.device.is_cuda()) {
    return absl::FailedPreconditionError(
        "expert server: --experts=none needs --device=cpu: a CUDA server "
        "uploads its experts once at start and cannot load more later");
  }
  WeightSelection selection = WeightSelection::Experts(options.experts);
  selection.all_experts = options.all_experts;
  std::unique_ptr<ExpertEngine> engine(new ExpertEngine());
  engine->model_dir_ = options.model_dir;
  engine->cuda_ = options.device.is_cuda();
  ASSIGN_OR_RETURN(ModelWeights weights,
                   LoadModelWeightsFromDir(options.model_dir, selection,
                                           /*populate=*/true));
  engine->config_ = weights.config;
  RETURN_IF_ERROR(CheckDeviceUsable(options.device));
  // A GPU server's FFNs run on the device: one host thread is enough.
  engine->pool_ = std::make_unique<ThreadPool>(
      options.device.is_cuda() ? 1 : options.num_threads,
      options.spin_microseconds, options.pin_cpus);
  std::vector<const FfnWeights*> hosted;
  {
    absl::MutexLock lock(&engine->hosted_mu_);
    engine->AddHostedLocked(std::make_shared<ModelWeights>(std::move(weights)));
    for (const auto& [id, w] : engine->hosted_) hosted.push_back(w.get());
  }
  ASSIGN_OR_RETURN(engine->backend_,
                   CreateExpertFfnBackend(options.device, hosted,
                                          engine->pool_.get()));
  // A CUDA backend stays on the executor thread, where its stream lives;
  // pinned compute threads stay on their CPUs.
  engine->run_inline_ = !options.device.is_cuda() && options.pin_cpus.empty();
  engine->cuda_backend_ = options.device.is_cuda();
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

void ExpertEngine::AddHostedLocked(std::shared_ptr<const ModelWeights> weights) {
  for (size_t l = 0; l < weights->layers.size(); ++l) {
    for (const auto& [e, w] : weights->layers[l].experts) {
      // Aliasing: each entry keeps the whole load (its mappings) alive.
      hosted_[{static_cast<int>(l), e}] =
          std::shared_ptr<const FfnWeights>(weights, &w);
    }
  }
}

std::vector<std::pair<int, int>> ExpertEngine::HostedExperts() const {
  absl::ReaderMutexLock lock(&hosted_mu_);
  std::vector<std::pair<int, int>> out;
  out.reserve(hosted_.size());
  for (const auto& [id, w] : hosted_) out.push_back(id);
  return out;
}

bool ExpertEngine::Hosts(int layer, int expert) const {
  absl::ReaderMutexLock lock(&hosted_mu_);
  return hosted_.count({layer, expert}) > 0;
}

absl::Status ExpertEngine::CheckExperts(
    const std::set<std::pair<int, int>>& experts) const {
  for (const auto& [layer, expert] : experts) {
    if (layer < 0 || layer >= config_.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("experts: layer ", layer, " is outside the model's "
                       "layers [0, ", config_.num_layers, ")"));
    }
    if (!config_.IsMoeLayer(layer)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "experts: layer ", layer, " is a dense layer (it has no experts)"));
    }
    if (expert < 0 || expert >= config_.num_experts) {
      return absl::InvalidArgumentError(absl::StrCat(
          "experts: expert ", expert, " of layer ", layer,
          " is outside the model's experts [0, ", config_.num_experts, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> ExpertEngine::LoadExperts(
    const std::set<std::pair<int, int>>& experts) {
  RETURN_IF_ERROR(CheckExperts(experts));
  if (cuda_) {
    return absl::FailedPreconditionError(
        "LoadExperts: this expert server runs its FFNs on CUDA, whose "
        "backend uploads the experts once at start; loading experts while "
        "serving is supported on --device=cpu only");
  }
  absl::MutexLock one_load(&load_mu_);
  std::set<std::pair<int, int>> missing;
  {
    absl::ReaderMutexLock lock(&hosted_mu_);
    for (const auto& id : experts) {
      if (hosted_.count(id) == 0) missing.insert(id);
    }
  }
  if (missing.empty()) return 0;
  // The shards are mapped without populating them whole: only the new
  // experts' bytes are faulted in, a slice at a time (PopulateRange), so
  // that the serving threads' own memory mapping never waits long on it.
  ASSIGN_OR_RETURN(ModelWeights weights,
                   LoadModelWeightsFromDir(model_dir_,
                                           WeightSelection::Experts(missing),
                                           /*populate=*/false));
  if (weights.config.hidden_size != config_.hidden_size ||
      weights.config.num_layers != config_.num_layers ||
      weights.config.num_experts != config_.num_experts) {
    return absl::FailedPreconditionError(absl::StrCat(
        "LoadExperts: the checkpoint in ", model_dir_,
        " no longer matches the one this server started with (hidden size, "
        "layers or experts changed)"));
  }
  for (const LayerWeights& layer : weights.layers) {
    for (const auto& [e, ffn] : layer.experts) {
      for (const TensorView* t : {&ffn.gate, &ffn.up, &ffn.down}) {
        PopulateRange(t->data, static_cast<size_t>(t->NumElements()) *
                                   DTypeSize(t->dtype));
      }
    }
  }
  absl::MutexLock lock(&hosted_mu_);
  AddHostedLocked(std::make_shared<ModelWeights>(std::move(weights)));
  return static_cast<int>(missing.size());
}

absl::StatusOr<int> ExpertEngine::UnloadExperts(
    const std::set<std::pair<int, int>>& experts) {
  RETURN_IF_ERROR(CheckExperts(experts));
  if (cuda_) {
    return absl::FailedPreconditionError(
        "UnloadExperts: this expert server runs its FFNs on CUDA, whose "
        "experts are fixed at start; supported on --device=cpu only");
  }
  absl::MutexLock lock(&hosted_mu_);
  int removed = 0;
  for (const auto& id : experts) removed += hosted_.erase(id);
  return removed;
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
      // Not the request's fault: the router's placement and this server's
      // experts disagree (FAILED_PRECONDITION makes the router route
      // around this server until its experts are reloaded).
      return absl::FailedPreconditionError(absl::StrCat(
          "groups[", i, "].expert: layer ", work[i].layer, " expert ",
          work[i].expert,
          " is not hosted on this expert server (restarted with other "
          "experts? the router reloads them)"));
    }
    if (work[i].tokens < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("groups[", i, "]: negative token count"));
    }
  }
  return absl::OkStatus();
}

namespace {
// The engine whose executor the calling thread stands in for (see
// ExpertEngine::PinCallerAsExecutor); null for other threads.
thread_local const ExpertEngine* executor_stand_in_for = nullptr;
}  // namespace

absl::Status ExpertEngine::PinCallerAsExecutor() {
  if (cuda_backend_) return absl::OkStatus();  // the executor keeps its stream
  RETURN_IF_ERROR(pool_->PinOwner());
  executor_stand_in_for = this;
  return absl::OkStatus();
}

void ExpertEngine::Submit(std::vector<ExpertWork> work, DoneCallback done) {
  Batch batch{std::move(work), nullptr, std::move(done)};
  const bool may_run_here = run_inline_ || executor_stand_in_for == this;
  {
    absl::MutexLock lock(&mu_);
    if (!may_run_here || running_ || !queue_.empty()) {
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
  // The weights are held for the whole batch: an expert unloaded meanwhile
  // stays mapped until the batch is done.
  std::vector<std::shared_ptr<const FfnWeights>> held;
  held.reserve(batch.work.size());
  {
    absl::ReaderMutexLock lock(&hosted_mu_);
    for (size_t i = 0; i < batch.work.size(); ++i) {
      const ExpertWork& w = batch.work[i];
      auto it = hosted_.find({w.layer, w.expert});
      if (it == hosted_.end()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "groups[", i, "].expert: layer ", w.layer, " expert ", w.expert,
            " is not hosted on this expert server (unloaded)"));
      }
      held.push_back(it->second);
    }
  }
  std::vector<FfnGroup> groups;
  groups.reserve(batch.work.size());
  for (size_t i = 0; i < batch.work.size(); ++i) {
    const ExpertWork& w = batch.work[i];
    if (w.tokens == 0) continue;
    groups.push_back({held[i].get(), w.x, w.tokens, w.out});
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
