#include "core/model_config_deepseek.h"

#include <cmath>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/config_json.h"
#include "core/status_macros.h"

namespace moe {
namespace {

using config_json::FieldError;
using config_json::OptionalBool;
using config_json::OptionalInt;
using config_json::OptionalNumber;
using config_json::RequiredInt;
using Json = nlohmann::json;

absl::StatusOr<std::string> OptionalString(const Json& j, const char* field,
                                           const char* dflt) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return std::string(dflt);
  if (!it->is_string()) return FieldError(field, "must be a string");
  return it->get<std::string>();
}

// A number >= 0 (the YaRN mscales may be 0).
absl::StatusOr<double> NonNegativeNumber(const Json& j, const char* field,
                                         double dflt) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_number()) return FieldError(field, "must be a number");
  const double v = it->get<double>();
  if (!(v >= 0) || !std::isfinite(v)) {
    return FieldError(field, absl::StrCat("must be >= 0 and finite, got ", v));
  }
  return v;
}

absl::Status ParseYarn(const Json& j, YarnScaling& y) {
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return FieldError("rope_scaling", "must be an object");
  const Json& r = *it;
  std::string type;
  ASSIGN_OR_RETURN(type, OptionalString(r, "type", ""));
  if (type.empty()) {
    ASSIGN_OR_RETURN(type, OptionalString(r, "rope_type", ""));
  }
  if (type != "yarn") {
    return FieldError("rope_scaling.type",
                      absl::StrCat("\"", type,
                                   "\" is not supported (only \"yarn\")"));
  }
  absl::StatusOr<double> factor = OptionalNumber(r, "factor", 0);
  if (!factor.ok() || *factor == 0) {
    return FieldError("rope_scaling.factor",
                      "must be a positive number for yarn");
  }
  y.factor = *factor;
  absl::StatusOr<int> orig =
      OptionalInt(r, "original_max_position_embeddings", 4096, 1);
  if (!orig.ok()) {
    return FieldError("rope_scaling.original_max_position_embeddings",
                      "must be a positive integer");
  }
  y.original_max_position_embeddings = *orig;
  struct Field {
    const char* name;
    double dflt;
    double* out;
  };
  for (const Field& f : {Field{"beta_fast", 32, &y.beta_fast},
                         Field{"beta_slow", 1, &y.beta_slow},
                         Field{"mscale", 1, &y.mscale},
                         Field{"mscale_all_dim", 0, &y.mscale_all_dim}}) {
    absl::StatusOr<double> v = NonNegativeNumber(r, f.name, f.dflt);
    if (!v.ok()) {
      return FieldError(absl::StrCat("rope_scaling.", f.name),
                        "must be a number >= 0");
    }
    *f.out = *v;
  }
  if (!(y.beta_fast > 0) || !(y.beta_slow > 0)) {
    return FieldError("rope_scaling.beta_fast",
                      "and beta_slow must be positive");
  }
  return absl::OkStatus();
}

absl::Status ParseMla(const Json& j, ModelConfig& c) {
  MlaConfig& m = c.mla;
  auto q = j.find("q_lora_rank");
  if (q == j.end()) {
    return FieldError("q_lora_rank",
                      "is missing (null for a plain q_proj, as V2-Lite)");
  }
  if (!q->is_null()) {
    ASSIGN_OR_RETURN(m.q_lora_rank, RequiredInt(j, "q_lora_rank"));
  }
  ASSIGN_OR_RETURN(m.kv_lora_rank, RequiredInt(j, "kv_lora_rank"));
  ASSIGN_OR_RETURN(m.qk_nope_head_dim, RequiredInt(j, "qk_nope_head_dim"));
  ASSIGN_OR_RETURN(m.qk_rope_head_dim, RequiredInt(j, "qk_rope_head_dim"));
  ASSIGN_OR_RETURN(m.v_head_dim, RequiredInt(j, "v_head_dim"));
  // Bounded so that sums and products of these sizes stay far from
  // overflow (real models use at most 1536).
  constexpr int kMaxMlaSize = 1 << 16;
  for (const auto& [field, value] :
       {std::pair{"q_lora_rank", m.q_lora_rank},
        std::pair{"kv_lora_rank", m.kv_lora_rank},
        std::pair{"qk_nope_head_dim", m.qk_nope_head_dim},
        std::pair{"qk_rope_head_dim", m.qk_rope_head_dim},
        std::pair{"v_head_dim", m.v_head_dim}}) {
    if (value > kMaxMlaSize) {
      return FieldError(field, absl::StrCat("(", value, ") exceeds ",
                                            kMaxMlaSize));
    }
  }
  if (m.qk_rope_head_dim % 2 != 0) {
    return FieldError("qk_rope_head_dim",
                      "must be even (rotary embedding pairs)");
  }
  bool attention_bias;
  ASSIGN_OR_RETURN(attention_bias, OptionalBool(j, "attention_bias", false));
  if (attention_bias) {
    return FieldError("attention_bias", "true is not supported for MLA");
  }
  bool interleave;
  ASSIGN_OR_RETURN(interleave, OptionalBool(j, "rope_interleave", true));
  if (!interleave) {
    return FieldError("rope_interleave",
                      "false is not supported (DeepSeek checkpoints "
                      "interleave the rope dimensions)");
  }
  c.head_dim = m.qk_head_dim();
  c.num_kv_heads = c.num_heads;
  return ParseYarn(j, c.yarn);
}

absl::Status ParseRouting(const Json& j, ModelConfig& c) {
  // A DeepSeek config without routed experts is a dense model; this engine
  // serves MoE models only.
  ASSIGN_OR_RETURN(c.num_experts, RequiredInt(j, "n_routed_experts"));
  ASSIGN_OR_RETURN(c.num_experts_per_tok, RequiredInt(j, "num_experts_per_tok"));
  ASSIGN_OR_RETURN(c.expert_intermediate_size,
                   RequiredInt(j, "moe_intermediate_size"));
  int shared;
  ASSIGN_OR_RETURN(shared, OptionalInt(j, "n_shared_experts", 0));
  c.shared_expert_intermediate_size = shared * c.expert_intermediate_size;
  c.shared_expert_gated = false;
  ASSIGN_OR_RETURN(c.first_k_dense_replace,
                   OptionalInt(j, "first_k_dense_replace", 0));
  ASSIGN_OR_RETURN(c.moe_layer_freq, OptionalInt(j, "moe_layer_freq", 1, 1));
  ASSIGN_OR_RETURN(c.norm_topk_prob, OptionalBool(j, "norm_topk_prob", false));
  ASSIGN_OR_RETURN(c.routed_scaling_factor,
                   OptionalNumber(j, "routed_scaling_factor", 1.0));

  const bool v3 = c.family == ModelFamily::kDeepseekV3;
  std::string scoring;
  ASSIGN_OR_RETURN(scoring,
                   OptionalString(j, "scoring_func", v3 ? "sigmoid" : "softmax"));
  if (scoring == "softmax") {
    c.scoring_func = ScoringFunc::kSoftmax;
  } else if (scoring == "sigmoid") {
    c.scoring_func = ScoringFunc::kSigmoid;
  } else {
    return FieldError("scoring_func",
                      absl::StrCat("\"", scoring,
                                   "\" is not supported (softmax, sigmoid)"));
  }
  std::string method;
  ASSIGN_OR_RETURN(method,
                   OptionalString(j, "topk_method", v3 ? "noaux_tc" : "greedy"));
  if (method == "greedy") {
    c.topk_method = TopkMethod::kGreedy;
  } else if (method == "group_limited_greedy") {
    c.topk_method = TopkMethod::kGroupLimitedGreedy;
  } else if (method == "noaux_tc") {
    c.topk_method = TopkMethod::kNoauxTc;
  } else {
    return FieldError("topk_method",
                      absl::StrCat("\"", method,
                                   "\" is not supported (greedy, "
                                   "group_limited_greedy, noaux_tc)"));
  }
  ASSIGN_OR_RETURN(c.n_group, OptionalInt(j, "n_group", 1, 1));
  ASSIGN_OR_RETURN(c.topk_group, OptionalInt(j, "topk_group", 1, 1));
  if (c.num_experts % c.n_group != 0) {
    return FieldError("n_group",
                      absl::StrCat("(", c.n_group,
                                   ") must divide n_routed_experts (",
                                   c.num_experts, ")"));
  }
  if (c.topk_group > c.n_group) {
    return FieldError("topk_group",
                      absl::StrCat("(", c.topk_group, ") exceeds n_group (",
                                   c.n_group, ")"));
  }
  if (c.topk_method != TopkMethod::kGreedy) {
    const int per_group = c.num_experts / c.n_group;
    if (c.topk_method == TopkMethod::kNoauxTc && per_group < 2) {
      return FieldError("n_group",
                        absl::StrCat("leaves ", per_group,
                                     " expert per group; noaux_tc scores a "
                                     "group by its top 2"));
    }
    if (int64_t{c.topk_group} * per_group < c.num_experts_per_tok) {
      return FieldError(
          "topk_group",
          absl::StrCat("(", c.topk_group, " groups of ", per_group,
                       " experts) holds fewer experts than num_experts_per_tok (",
                       c.num_experts_per_tok, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view TopkMethodName(TopkMethod method) {
  switch (method) {
    case TopkMethod::kGreedy:
      return "greedy";
    case TopkMethod::kGroupLimitedGreedy:
      return "group_limited_greedy";
    case TopkMethod::kNoauxTc:
      return "noaux_tc";
  }
  return "?";
}

absl::string_view ScoringFuncName(ScoringFunc scoring) {
  return scoring == ScoringFunc::kSigmoid ? "sigmoid" : "softmax";
}

absl::Status ParseDeepseekFields(const Json& j, ModelConfig& c) {
  if (auto it = j.find("quantization_config"); it != j.end() && !it->is_null()) {
    return FieldError("quantization_config",
                      "is not supported (dequantize the checkpoint to bf16)");
  }
  RETURN_IF_ERROR(ParseMla(j, c));
  return ParseRouting(j, c);
}

void DeepseekFieldsToJson(const ModelConfig& c, Json& j) {
  const MlaConfig& m = c.mla;
  j["q_lora_rank"] = m.q_lora_rank > 0 ? Json(m.q_lora_rank) : Json(nullptr);
  j["kv_lora_rank"] = m.kv_lora_rank;
  j["qk_nope_head_dim"] = m.qk_nope_head_dim;
  j["qk_rope_head_dim"] = m.qk_rope_head_dim;
  j["v_head_dim"] = m.v_head_dim;
  j["attention_bias"] = false;
  j["n_routed_experts"] = c.num_experts;
  j["moe_intermediate_size"] = c.expert_intermediate_size;
  j["n_shared_experts"] =
      c.shared_expert_intermediate_size > 0
          ? Json(c.shared_expert_intermediate_size / c.expert_intermediate_size)
          : Json(nullptr);
  j["first_k_dense_replace"] = c.first_k_dense_replace;
  j["moe_layer_freq"] = c.moe_layer_freq;
  if (c.dense_intermediate_size > 0) {
    j["intermediate_size"] = c.dense_intermediate_size;
  }
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["routed_scaling_factor"] = c.routed_scaling_factor;
  j["scoring_func"] = std::string(ScoringFuncName(c.scoring_func));
  j["topk_method"] = std::string(TopkMethodName(c.topk_method));
  j["n_group"] = c.n_group;
  j["topk_group"] = c.topk_group;
  if (c.yarn.enabled()) {
    const YarnScaling& y = c.yarn;
    j["rope_scaling"] = {
        {"type", "yarn"},
        {"factor", y.factor},
        {"original_max_position_embeddings",
         y.original_max_position_embeddings},
        {"beta_fast", y.beta_fast},
        {"beta_slow", y.beta_slow},
        {"mscale", y.mscale},
        {"mscale_all_dim", y.mscale_all_dim},
    };
  } else {
    j["rope_scaling"] = nullptr;
  }
}

}  // namespace moe
