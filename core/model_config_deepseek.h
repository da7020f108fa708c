// The DeepSeek-V2/V3 part of config.json (Hugging Face DeepseekV2Config /
// DeepseekV3Config field names and defaults): MLA sizes, DeepSeekMoE
// routing, the dense first layers and YaRN rope scaling.
#ifndef MOE_CORE_MODEL_CONFIG_DEEPSEEK_H_
#define MOE_CORE_MODEL_CONFIG_DEEPSEEK_H_

#include "absl/status/status.h"
#include "core/model_config.h"
#include "nlohmann/json.hpp"

namespace moe {

// Reads the family's fields into `c`, whose family and common sizes
// (hidden_size, num_layers, num_heads, vocab_size) are already parsed; sets
// head_dim (qk_nope + qk_rope) and num_kv_heads (= num_heads). Anything this
// engine does not implement (attention_bias, fp8 quantization, another rope
// scaling, another scoring function) is refused naming the field.
absl::Status ParseDeepseekFields(const nlohmann::json& j, ModelConfig& c);

// Writes the fields ParseDeepseekFields reads.
void DeepseekFieldsToJson(const ModelConfig& c, nlohmann::json& j);

absl::string_view TopkMethodName(TopkMethod method);      // "noaux_tc", ...
absl::string_view ScoringFuncName(ScoringFunc scoring);   // "sigmoid", ...

}  // namespace moe

#endif  // MOE_CORE_MODEL_CONFIG_DEEPSEEK_H_
