// The CUDA backend's forward pass: the residual stream, attention over a
// paged KV cache in device memory, the dense and shared FFNs and lm_head all
// on one device, driven by one host thread through one stream.
//
// Routed experts: with a MoeExecutor (an attention server whose experts are
// behind the router) the post-attention-normed rows go to the host and the
// executor's output comes back; without one (the single-process engine)
// gating (TopKGating), the grouped expert FFN (CudaExpertFfn) and the
// weighted combine run on the device too, which needs every expert loaded.
//
// Numerics: weights BF16 (F16/F32 checkpoints are rounded at upload), GEMM
// inputs BF16 with float32 accumulation, the residual stream, norms,
// softmaxes and the KV cache float32.
#ifndef MOE_CORE_CUDA_CUDA_TRANSFORMER_H_
#define MOE_CORE_CUDA_CUDA_TRANSFORMER_H_

#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/cuda/cuda_expert_ffn.h"
#include "core/cuda/device_buffer.h"
#include "core/cuda/gemm.h"
#include "core/cuda/kernels.h"
#include "core/cuda/paged_attention.h"
#include "core/forward_pass.h"
#include "core/kv_cache.h"
#include "core/model_weights.h"
#include "core/moe_executor.h"

namespace moe::cuda {

class CudaTransformer final : public ForwardPass {
 public:
  // Uploads the non-expert weights (and, with `moe` null, every routed
  // expert) of `weights` to device `ordinal`, and allocates device rows for
  // all of `cache`'s blocks. `weights`, `cache` and `moe` are borrowed.
  static absl::StatusOr<std::unique_ptr<CudaTransformer>> Create(
      int ordinal, const ModelWeights* weights, KvCache* cache,
      MoeExecutor* moe);
  ~CudaTransformer() override;

  absl::Status Begin(absl::Span<const SequenceChunk> chunks) override;
  absl::Status AttentionLayer(int layer) override;
  absl::Status StartFfn(int layer) override;
  absl::Status FinishFfn(int layer) override;
  absl::StatusOr<std::vector<float>> End() override;
  void Abandon() override;
  int num_layers() const override { return config_.num_layers; }

 private:
  struct DeviceLayer {
    DeviceBuffer<bf16> input_norm, post_norm;
    DeviceBuffer<bf16> q, k, v, o, q_bias, k_bias, v_bias, o_bias;
    DeviceBuffer<bf16> q_norm, k_norm;
    DeviceBuffer<bf16> router_gate, shared_gate;
  };

  CudaTransformer(int ordinal, const ModelWeights* weights, KvCache* cache,
                  MoeExecutor* moe)
      : ordinal_(ordinal),
        weights_(weights),
        config_(weights->config),
        cache_(cache),
        moe_(moe) {}
  absl::Status UploadWeights();
  absl::Status ReserveForTokens(int64_t tokens);
  // The routed experts of MoE layer `layer` on the device (moe_ null).
  absl::Status RoutedExpertsOnDevice(int layer);

  const int ordinal_;
  const ModelWeights* weights_;
  const ModelConfig& config_;
  KvCache* cache_;
  MoeExecutor* moe_;

  std::unique_ptr<CudaExpertFfn> ffn_;  // owns the stream everything uses
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Gemm> gemm_;
  std::unique_ptr<DeviceKvStorage> kv_;
  DeviceBuffer<bf16> embed_, final_norm_, lm_head_;
  std::vector<DeviceLayer> layers_;

  // Per-pass state.
  std::vector<BatchSegment> segments_;
  std::vector<int32_t> positions_;
  int64_t total_ = 0;
  bool decode_only_ = false;
  int max_pos_ = 0;
  // Host-built int32 metadata uploaded once per pass: token ids, positions,
  // KV slots, sequence of each token, block-table starts, block tables.
  std::vector<int32_t> host_meta_;
  DeviceBuffer<int32_t> meta_;
  const int32_t *ids_ = nullptr, *pos_ = nullptr, *slot_of_ = nullptr,
                *seq_of_ = nullptr, *table_start_ = nullptr,
                *tables_ = nullptr;
  // Activations.
  DeviceBuffer<float> hidden_, normed_, q_, k_, v_, attn_, mlp_, shared_,
      shared_gate_, router_logits_, routing_weights_, expert_out_f32_,
      logits_;
  DeviceBuffer<bf16> x_bf16_, attn_bf16_, ffn_out_bf16_, gathered_,
      expert_out_;
  DeviceBuffer<int32_t> routing_experts_, routing_meta_;
  std::vector<int32_t> host_experts_, host_routing_meta_;
  // The MoE step between StartFfn and FinishFfn.
  enum class PendingMoe { kNone, kHost, kDevice };
  PendingMoe pending_ = PendingMoe::kNone;
  uint64_t moe_handle_ = 0;
  // The host MoeExecutor's input and output rows (page-locked).
  PinnedBuffer<float> host_normed_, host_mlp_;
};

}  // namespace moe::cuda

#endif  // MOE_CORE_CUDA_CUDA_TRANSFORMER_H_
