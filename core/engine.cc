#include "core/engine.h"

#include "core/status_macros.h"

namespace moe {

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(
    const EngineOptions& options) {
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
  engine->pool_ = std::make_unique<ThreadPool>(options.num_threads);
  engine->moe_ = std::make_unique<LocalMoeExecutor>(&engine->weights_,
                                                    engine->pool_.get());
  engine->transformer_ = std::make_unique<Transformer>(
      &engine->weights_, engine->cache_.get(), engine->moe_.get(),
      engine->pool_.get());
  return engine;
}

}  // namespace moe
