#include "core/engine.h"

#include "core/status_macros.h"

namespace moe {

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(
    const EngineOptions& options) {
  RETURN_IF_ERROR(CheckDeviceUsable(options.device));
  std::unique_ptr<Engine> engine(new Engine());
  ASSIGN_OR_RETURN(engine->weights_,
                   LoadModelWeightsFromDir(options.model_dir,
                                           WeightSelection::Full(),
                                           options.populate_weights));
  ASSIGN_OR_RETURN(
      engine->cache_,
      KvCache::Create(KvCacheShape::ForModel(engine->weights_.config,
                                             options.kv_block_size),
                      options.kv_cache_bytes));
  // On a GPU the host threads only drive the device: one is enough.
  engine->pool_ = std::make_unique<ThreadPool>(
      options.device.is_cuda() ? 1 : options.num_threads);
  if (!options.device.is_cuda()) {
    engine->moe_ = std::make_unique<LocalMoeExecutor>(&engine->weights_,
                                                      engine->pool_.get());
  }
  ASSIGN_OR_RETURN(engine->forward_,
                   CreateForwardPass(options.device, &engine->weights_,
                                     engine->cache_.get(), engine->moe_.get(),
                                     engine->pool_.get()));
  return engine;
}

}  // namespace moe
