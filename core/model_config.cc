#include "core/model_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "core/config_json.h"
#include "core/model_config_deepseek.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

using config_json::FieldError;
using config_json::OptionalBool;
using config_json::OptionalInt;
using config_json::OptionalIntList;
using config_json::OptionalNumber;
using config_json::OptionalPositiveFloat;
using config_json::RequiredInt;
using Json = nlohmann::json;

absl::StatusOr<ModelFamily> DetectFamily(const Json& j) {
  auto arch = j.find("architectures");
  if (arch != j.end() && !arch->is_null()) {
    if (!arch->is_array() || arch->empty() || !(*arch)[0].is_string()) {
      return FieldError("architectures", "must be a non-empty list of strings");
    }
    const std::string name = (*arch)[0].get<std::string>();
    absl::StatusOr<ModelFamily> f = ParseFamily(name);
    if (!f.ok()) {
      return FieldError("architectures",
                        absl::StrCat("names an unsupported architecture \"",
                                     name,
                                     "\" (supported: MixtralForCausalLM, "
                                     "Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, "
                                     "OlmoeForCausalLM, DeepseekV2ForCausalLM, "
                                     "DeepseekV3ForCausalLM)"));
    }
    return f;
  }
  auto type = j.find("model_type");
  if (type == j.end() || !type->is_string()) {
    return FieldError("architectures",
                      "is missing (and no model_type string to fall back on)");
  }
  const std::string name = type->get<std::string>();
  absl::StatusOr<ModelFamily> f = ParseFamily(name);
  if (!f.ok()) {
    return FieldError("model_type",
                      absl::StrCat("names an unsupported model type \"", name,
                                   "\" (supported: mixtral, qwen2_moe, "
                                   "qwen3_moe, olmoe, deepseek_v2, "
                                   "deepseek_v3)"));
  }
  return f;
}

absl::Status ParseInto(const Json& j, ModelConfig& c) {
  ASSIGN_OR_RETURN(c.family, DetectFamily(j));
  const ModelFamily f = c.family;

  ASSIGN_OR_RETURN(c.hidden_size, RequiredInt(j, "hidden_size"));
  ASSIGN_OR_RETURN(c.num_layers, RequiredInt(j, "num_hidden_layers"));
  ASSIGN_OR_RETURN(c.num_heads, RequiredInt(j, "num_attention_heads"));
  ASSIGN_OR_RETURN(c.num_kv_heads,
                   OptionalInt(j, "num_key_value_heads", c.num_heads, 1));
  ASSIGN_OR_RETURN(c.vocab_size, RequiredInt(j, "vocab_size"));
  if (c.is_deepseek()) {
    // head_dim and num_kv_heads follow from the MLA sizes (below).
  } else if (f == ModelFamily::kQwen3Moe) {
    ASSIGN_OR_RETURN(c.head_dim, RequiredInt(j, "head_dim"));
  } else {
    ASSIGN_OR_RETURN(c.head_dim,
                     OptionalInt(j, "head_dim", c.hidden_size / c.num_heads, 1));
    if (c.head_dim < 1) {  // the default, with more heads than hidden units
      return FieldError(
          "head_dim", absl::StrCat("is missing and hidden_size / "
                                   "num_attention_heads = ", c.hidden_size,
                                   " / ", c.num_heads, " rounds down to 0"));
    }
  }
  const bool eps_1e6 = f == ModelFamily::kQwen2Moe ||
                       f == ModelFamily::kQwen3Moe || c.is_deepseek();
  ASSIGN_OR_RETURN(c.rms_norm_eps, OptionalPositiveFloat(j, "rms_norm_eps",
                                                         eps_1e6 ? 1e-6 : 1e-5));
  ASSIGN_OR_RETURN(c.rope_theta,
                   OptionalNumber(j, "rope_theta",
                                  f == ModelFamily::kMixtral ? 1e6 : 1e4));
  ASSIGN_OR_RETURN(c.max_position_embeddings,
                   OptionalInt(j, "max_position_embeddings", 4096, 1));
  ASSIGN_OR_RETURN(c.tie_word_embeddings,
                   OptionalBool(j, "tie_word_embeddings", false));

  if (auto it = j.find("hidden_act"); it != j.end() && !it->is_null()) {
    if (!it->is_string() || it->get<std::string>() != "silu") {
      return FieldError("hidden_act", "must be \"silu\"");
    }
  }
  if (auto it = j.find("rope_scaling");
      it != j.end() && !it->is_null() && !c.is_deepseek()) {
    return FieldError("rope_scaling", "is not supported (must be null)");
  }

  // Experts.
  if (c.is_deepseek()) {
    RETURN_IF_ERROR(ParseDeepseekFields(j, c));
  } else {
  ASSIGN_OR_RETURN(c.num_experts_per_tok,
                   RequiredInt(j, "num_experts_per_tok"));
  if (f == ModelFamily::kMixtral) {
    ASSIGN_OR_RETURN(c.num_experts, RequiredInt(j, "num_local_experts"));
    ASSIGN_OR_RETURN(c.expert_intermediate_size,
                     RequiredInt(j, "intermediate_size"));
    c.norm_topk_prob = true;  // Mixtral always renormalises
    ASSIGN_OR_RETURN(c.sliding_window, OptionalInt(j, "sliding_window", 0));
  } else {
    ASSIGN_OR_RETURN(c.num_experts, RequiredInt(j, "num_experts"));
    ASSIGN_OR_RETURN(c.norm_topk_prob,
                     OptionalBool(j, "norm_topk_prob", false));
    if (f == ModelFamily::kOlmoe) {
      ASSIGN_OR_RETURN(c.expert_intermediate_size,
                       RequiredInt(j, "intermediate_size"));
    } else {
      ASSIGN_OR_RETURN(c.expert_intermediate_size,
                       RequiredInt(j, "moe_intermediate_size"));
      ASSIGN_OR_RETURN(c.decoder_sparse_step,
                       OptionalInt(j, "decoder_sparse_step", 1, 1));
      if (auto it = j.find("mlp_only_layers"); it != j.end() && !it->is_null()) {
        if (!it->is_array()) {
          return FieldError("mlp_only_layers", "must be a list of layer indices");
        }
        for (const Json& v : *it) {
          if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
              v.get<int64_t>() >= c.num_layers) {
            return FieldError("mlp_only_layers",
                              absl::StrCat("holds an invalid layer index ",
                                           v.dump(), " (num_hidden_layers is ",
                                           c.num_layers, ")"));
          }
          c.mlp_only_layers.push_back(v.get<int>());
        }
      }
      bool sliding;
      ASSIGN_OR_RETURN(sliding, OptionalBool(j, "use_sliding_window", false));
      if (sliding) {
        return FieldError("use_sliding_window", "true is not supported");
      }
    }
  }
  }  // not DeepSeek
  if (c.num_experts_per_tok > c.num_experts) {
    return FieldError("num_experts_per_tok",
                      absl::StrCat("(", c.num_experts_per_tok,
                                   ") exceeds the number of experts (",
                                   c.num_experts, ")"));
  }

  // Family-specific attention and FFN details.
  switch (f) {
    case ModelFamily::kMixtral:
      break;
    case ModelFamily::kQwen2Moe: {
      ASSIGN_OR_RETURN(c.qkv_bias, OptionalBool(j, "qkv_bias", true));
      // Every Qwen2-MoE MoE layer has a shared expert.
      ASSIGN_OR_RETURN(c.shared_expert_intermediate_size,
                       RequiredInt(j, "shared_expert_intermediate_size"));
      c.shared_expert_gated = true;
      break;
    }
    case ModelFamily::kQwen3Moe: {
      bool bias;
      ASSIGN_OR_RETURN(bias, OptionalBool(j, "attention_bias", false));
      c.qkv_bias = c.o_bias = bias;
      c.qk_norm = QkNorm::kPerHead;
      break;
    }
    case ModelFamily::kDeepseekV2:
    case ModelFamily::kDeepseekV3:
      break;  // ParseDeepseekFields
    case ModelFamily::kOlmoe: {
      bool bias;
      ASSIGN_OR_RETURN(bias, OptionalBool(j, "attention_bias", false));
      c.qkv_bias = c.o_bias = bias;
      c.qk_norm = QkNorm::kWholeProjection;
      if (auto it = j.find("clip_qkv"); it != j.end() && !it->is_null()) {
        ASSIGN_OR_RETURN(c.clip_qkv, OptionalPositiveFloat(j, "clip_qkv", 0));
      }
      break;
    }
  }
  // Dense layers need the dense FFN size.
  bool any_dense = false;
  for (int l = 0; l < c.num_layers; ++l) any_dense |= !c.IsMoeLayer(l);
  if (any_dense) {
    ASSIGN_OR_RETURN(c.dense_intermediate_size,
                     RequiredInt(j, "intermediate_size"));
  }

  if (c.num_heads % c.num_kv_heads != 0) {
    return FieldError("num_key_value_heads",
                      absl::StrCat("(", c.num_kv_heads,
                                   ") must divide num_attention_heads (",
                                   c.num_heads, ")"));
  }
  if (c.head_dim % 2 != 0 && !c.is_deepseek()) {
    return FieldError("head_dim", "must be even (rotary embedding pairs)");
  }

  ASSIGN_OR_RETURN(c.bos_token_id, OptionalInt(j, "bos_token_id", -1, -1));
  ASSIGN_OR_RETURN(c.eos_token_ids, OptionalIntList(j, "eos_token_id"));
  for (int id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return FieldError("eos_token_id",
                        absl::StrCat("holds ", id, ", outside the vocabulary"));
    }
  }
  if (auto it = j.find("torch_dtype"); it != j.end() && it->is_string()) {
    c.torch_dtype = it->get<std::string>();
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view FamilyName(ModelFamily family) {
  switch (family) {
    case ModelFamily::kMixtral:
      return "mixtral";
    case ModelFamily::kQwen2Moe:
      return "qwen2_moe";
    case ModelFamily::kQwen3Moe:
      return "qwen3_moe";
    case ModelFamily::kOlmoe:
      return "olmoe";
    case ModelFamily::kDeepseekV2:
      return "deepseek_v2";
    case ModelFamily::kDeepseekV3:
      return "deepseek_v3";
  }
  return "?";
}

absl::string_view ArchitectureName(ModelFamily family) {
  switch (family) {
    case ModelFamily::kMixtral:
      return "MixtralForCausalLM";
    case ModelFamily::kQwen2Moe:
      return "Qwen2MoeForCausalLM";
    case ModelFamily::kQwen3Moe:
      return "Qwen3MoeForCausalLM";
    case ModelFamily::kOlmoe:
      return "OlmoeForCausalLM";
    case ModelFamily::kDeepseekV2:
      return "DeepseekV2ForCausalLM";
    case ModelFamily::kDeepseekV3:
      return "DeepseekV3ForCausalLM";
  }
  return "?";
}

absl::StatusOr<ModelFamily> ParseFamily(absl::string_view name) {
  for (ModelFamily f :
       {ModelFamily::kMixtral, ModelFamily::kQwen2Moe, ModelFamily::kQwen3Moe,
        ModelFamily::kOlmoe, ModelFamily::kDeepseekV2,
        ModelFamily::kDeepseekV3}) {
    if (name == FamilyName(f) || name == ArchitectureName(f)) return f;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown model family \"", name, "\""));
}

bool ModelConfig::IsMoeLayer(int layer) const {
  if (is_deepseek()) {
    return num_experts > 0 && layer >= first_k_dense_replace &&
           layer % moe_layer_freq == 0;
  }
  if (family == ModelFamily::kMixtral || family == ModelFamily::kOlmoe) {
    return true;
  }
  if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) !=
      mlp_only_layers.end()) {
    return false;
  }
  return num_experts > 0 && (layer + 1) % decoder_sparse_step == 0;
}

int ModelConfig::NumMoeLayers() const {
  int n = 0;
  for (int l = 0; l < num_layers; ++l) n += IsMoeLayer(l);
  return n;
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text) {
  Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError("config.json: not valid JSON");
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError("config.json: top level must be an object");
  }
  ModelConfig c;
  RETURN_IF_ERROR(ParseInto(j, c));
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  const std::string path = dir + "/config.json";
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  absl::StatusOr<ModelConfig> c = ParseModelConfig(ss.str());
  if (!c.ok()) {
    return absl::Status(c.status().code(),
                        absl::StrCat(c.status().message(), " (", path, ")"));
  }
  return c;
}

std::string ModelConfigToJson(const ModelConfig& c) {
  Json j;
  j["architectures"] = {std::string(ArchitectureName(c.family))};
  j["model_type"] = std::string(FamilyName(c.family));
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["hidden_act"] = "silu";
  if (!c.torch_dtype.empty()) j["torch_dtype"] = c.torch_dtype;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else if (!c.eos_token_ids.empty()) {
    j["eos_token_id"] = c.eos_token_ids;
  }
  j["num_experts_per_tok"] = c.num_experts_per_tok;
  switch (c.family) {
    case ModelFamily::kDeepseekV2:
    case ModelFamily::kDeepseekV3:
      DeepseekFieldsToJson(c, j);
      break;
    case ModelFamily::kMixtral:
      j["num_local_experts"] = c.num_experts;
      j["intermediate_size"] = c.expert_intermediate_size;
      j["sliding_window"] =
          c.sliding_window > 0 ? Json(c.sliding_window) : Json(nullptr);
      break;
    case ModelFamily::kOlmoe:
      j["num_experts"] = c.num_experts;
      j["intermediate_size"] = c.expert_intermediate_size;
      j["norm_topk_prob"] = c.norm_topk_prob;
      j["attention_bias"] = c.qkv_bias;
      j["clip_qkv"] = c.clip_qkv > 0 ? Json(c.clip_qkv) : Json(nullptr);
      break;
    case ModelFamily::kQwen2Moe:
    case ModelFamily::kQwen3Moe:
      j["num_experts"] = c.num_experts;
      j["moe_intermediate_size"] = c.expert_intermediate_size;
      j["norm_topk_prob"] = c.norm_topk_prob;
      j["decoder_sparse_step"] = c.decoder_sparse_step;
      j["mlp_only_layers"] = c.mlp_only_layers;
      if (c.dense_intermediate_size > 0) {
        j["intermediate_size"] = c.dense_intermediate_size;
      }
      if (c.family == ModelFamily::kQwen2Moe) {
        j["shared_expert_intermediate_size"] = c.shared_expert_intermediate_size;
        j["qkv_bias"] = c.qkv_bias;
      } else {
        j["attention_bias"] = c.qkv_bias;
      }
      break;
  }
  return j.dump(2) + "\n";
}

}  // namespace moe
