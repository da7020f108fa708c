// Hugging Face tensor names of each family.
#ifndef MOE_CORE_WEIGHT_NAMES_H_
#define MOE_CORE_WEIGHT_NAMES_H_

#include <string>

#include "core/model_config.h"

namespace moe {

enum class FfnProj { kGate, kUp, kDown };

std::string EmbedTokensName();
std::string FinalNormName();
std::string LmHeadName();
// `suffix` e.g. "input_layernorm.weight" -> "model.layers.3.input_layernorm.weight"
std::string LayerTensorName(int layer, const std::string& suffix);
// "q_proj", "k_proj", ... with ".weight" / ".bias".
std::string AttentionTensorName(int layer, const std::string& proj,
                                const std::string& kind);
std::string RouterGateName(const ModelConfig& config, int layer);
std::string ExpertTensorName(const ModelConfig& config, int layer, int expert,
                             FfnProj proj);
std::string DenseMlpTensorName(int layer, FfnProj proj);
// "mlp.shared_expert." (Qwen2-MoE) or "mlp.shared_experts." (DeepSeek).
std::string SharedExpertTensorName(const ModelConfig& config, int layer,
                                   FfnProj proj);
// DeepSeek noaux_tc: the gate's e_score_correction_bias [E].
std::string RouterCorrectionBiasName(int layer);
std::string SharedExpertGateName(int layer);

}  // namespace moe

#endif  // MOE_CORE_WEIGHT_NAMES_H_
