#include "core/weight_names.h"

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

const char* HfProjName(FfnProj proj) {
  switch (proj) {
    case FfnProj::kGate:
      return "gate_proj";
    case FfnProj::kUp:
      return "up_proj";
    case FfnProj::kDown:
      return "down_proj";
  }
  return "";
}

// Mixtral: w1 = gate, w3 = up, w2 = down.
const char* MixtralProjName(FfnProj proj) {
  switch (proj) {
    case FfnProj::kGate:
      return "w1";
    case FfnProj::kUp:
      return "w3";
    case FfnProj::kDown:
      return "w2";
  }
  return "";
}

}  // namespace

std::string EmbedTokensName() { return "model.embed_tokens.weight"; }
std::string FinalNormName() { return "model.norm.weight"; }
std::string LmHeadName() { return "lm_head.weight"; }

std::string LayerTensorName(int layer, const std::string& suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}

std::string AttentionTensorName(int layer, const std::string& proj,
                                const std::string& kind) {
  return LayerTensorName(layer, absl::StrCat("self_attn.", proj, ".", kind));
}

std::string RouterGateName(const ModelConfig& config, int layer) {
  if (config.family == ModelFamily::kMixtral) {
    return LayerTensorName(layer, "block_sparse_moe.gate.weight");
  }
  return LayerTensorName(layer, "mlp.gate.weight");
}

std::string ExpertTensorName(const ModelConfig& config, int layer, int expert,
                             FfnProj proj) {
  if (config.family == ModelFamily::kMixtral) {
    return LayerTensorName(layer,
                           absl::StrCat("block_sparse_moe.experts.", expert, ".",
                                        MixtralProjName(proj), ".weight"));
  }
  return LayerTensorName(
      layer, absl::StrCat("mlp.experts.", expert, ".", HfProjName(proj), ".weight"));
}

std::string DenseMlpTensorName(int layer, FfnProj proj) {
  return LayerTensorName(layer, absl::StrCat("mlp.", HfProjName(proj), ".weight"));
}

std::string SharedExpertTensorName(const ModelConfig& config, int layer,
                                   FfnProj proj) {
  const char* module =
      config.is_deepseek() ? "mlp.shared_experts." : "mlp.shared_expert.";
  return LayerTensorName(layer,
                         absl::StrCat(module, HfProjName(proj), ".weight"));
}

std::string RouterCorrectionBiasName(int layer) {
  return LayerTensorName(layer, "mlp.gate.e_score_correction_bias");
}

std::string SharedExpertGateName(int layer) {
  return LayerTensorName(layer, "mlp.shared_expert_gate.weight");
}

}  // namespace moe
