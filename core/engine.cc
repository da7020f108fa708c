#include "core/engine.h"

#include "core/status_macros.h"

namespace moe {

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(
    const EngineOptions& options) {
  std::unique_ptr<Engine> engine(new Engine());
  CheckpointOptions ckpt_options;
  ckpt_options.populate = options.populate_weights;
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt,
                   Checkpoint::Open(options.model_dir, ckpt_options));
  ASSIGN_OR_RETURN(engine->weights_,
                   LoadModelWeights(std::shared_ptr<Checkpoint>(std::move(ckpt)),
                                    WeightSelection::Full()));
  const ModelConfig& c = engine->weights_.config;
  KvCacheShape shape;
  shape.num_layers = c.num_layers;
  shape.num_kv_heads = c.num_kv_heads;
  shape.head_dim = c.head_dim;
  shape.block_size = options.kv_block_size;
  ASSIGN_OR_RETURN(engine->cache_,
                   KvCache::Create(shape, options.kv_cache_bytes));
  engine->pool_ = std::make_unique<ThreadPool>(options.num_threads);
  engine->moe_ = std::make_unique<LocalMoeExecutor>(&engine->weights_,
                                                    engine->pool_.get());
  engine->transformer_ = std::make_unique<Transformer>(
      &engine->weights_, engine->cache_.get(), engine->moe_.get(),
      engine->pool_.get());
  return engine;
}

}  // namespace moe
