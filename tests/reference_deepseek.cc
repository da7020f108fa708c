#include "tests/reference_deepseek.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/dtype.h"
#include "core/safetensors.h"
#include "core/status_macros.h"
#include "core/tensor.h"
#include "nlohmann/json.hpp"

namespace moe::testing {
namespace {

using json = nlohmann::json;

constexpr char kConfigFile[] = "config.json";
constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";
constexpr char kV2Architecture[] = "DeepseekV2ForCausalLM";
constexpr char kV3Architecture[] = "DeepseekV3ForCausalLM";

absl::StatusOr<json> ReadJson(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good())
    return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  std::stringstream text;
  text << in.rdbuf();
  json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a JSON object"));
  }
  return j;
}

// Typed access to the fields of one JSON object of config.json; a null field
// counts as absent (Hugging Face writes `"q_lora_rank": null`). Errors are
// INVALID_ARGUMENT naming the field with `prefix` (e.g. "rope_scaling.").
class Fields {
 public:
  Fields(const json& j, std::string prefix)
      : j_(j), prefix_(std::move(prefix)) {}

  bool Has(const char* name) const {
    auto it = j_.find(name);
    return it != j_.end() && !it->is_null();
  }
  absl::Status Error(const char* name, absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(kConfigFile, ": field \"", prefix_, name, "\" ", what));
  }

  absl::StatusOr<int> Int(const char* name) const {
    if (!Has(name)) return Error(name, "is missing");
    const json& v = j_.at(name);
    if (!v.is_number_integer()) return Error(name, "is not an integer");
    return v.get<int>();
  }
  absl::StatusOr<int> IntOr(const char* name, int fallback) const {
    if (!Has(name)) return fallback;
    return Int(name);
  }
  absl::StatusOr<double> DoubleOr(const char* name, double fallback) const {
    if (!Has(name)) return fallback;
    const json& v = j_.at(name);
    if (!v.is_number()) return Error(name, "is not a number");
    return v.get<double>();
  }
  absl::StatusOr<bool> BoolOr(const char* name, bool fallback) const {
    if (!Has(name)) return fallback;
    const json& v = j_.at(name);
    if (!v.is_boolean()) return Error(name, "is not a boolean");
    return v.get<bool>();
  }
  absl::StatusOr<std::string> StringOr(const char* name,
                                       const std::string& fallback) const {
    if (!Has(name)) return fallback;
    const json& v = j_.at(name);
    if (!v.is_string()) return Error(name, "is not a string");
    return v.get<std::string>();
  }

 private:
  const json& j_;
  std::string prefix_;
};

// yarn_get_mscale of modeling_deepseek.py.
double YarnGetMscale(double scale, double mscale) {
  if (scale <= 1) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

absl::StatusOr<DeepseekReferenceConfig> ParseConfig(const json& j) {
  DeepseekReferenceConfig c;
  const Fields f(j, "");
  {
    auto it = j.find("architectures");
    if (it == j.end() || !it->is_array() || it->empty() ||
        !(*it)[0].is_string()) {
      return f.Error("architectures", "is missing or not a list of names");
    }
    const std::string arch = (*it)[0].get<std::string>();
    if (arch != kV2Architecture && arch != kV3Architecture) {
      return f.Error("architectures",
                     absl::StrCat("names \"", arch, "\", expected ",
                                  kV2Architecture, " or ", kV3Architecture));
    }
    c.v3 = arch == kV3Architecture;
  }
  auto positive = [&](const char* name) -> absl::StatusOr<int> {
    ASSIGN_OR_RETURN(int v, f.Int(name));
    if (v <= 0) return f.Error(name, "must be positive");
    return v;
  };
  ASSIGN_OR_RETURN(c.hidden_size, positive("hidden_size"));
  ASSIGN_OR_RETURN(c.num_layers, positive("num_hidden_layers"));
  ASSIGN_OR_RETURN(c.num_heads, positive("num_attention_heads"));
  ASSIGN_OR_RETURN(c.vocab_size, positive("vocab_size"));
  ASSIGN_OR_RETURN(c.rms_norm_eps, f.DoubleOr("rms_norm_eps", 1e-6));
  ASSIGN_OR_RETURN(c.rope_theta, f.DoubleOr("rope_theta", 10000.0));
  if (c.rope_theta <= 1) return f.Error("rope_theta", "must exceed 1");
  ASSIGN_OR_RETURN(c.tie_word_embeddings,
                   f.BoolOr("tie_word_embeddings", false));

  ASSIGN_OR_RETURN(c.kv_lora_rank, positive("kv_lora_rank"));
  ASSIGN_OR_RETURN(c.qk_nope_head_dim, f.Int("qk_nope_head_dim"));
  if (c.qk_nope_head_dim < 0) {
    return f.Error("qk_nope_head_dim", "must not be negative");
  }
  ASSIGN_OR_RETURN(c.qk_rope_head_dim, positive("qk_rope_head_dim"));
  if (c.qk_rope_head_dim % 2 != 0) {
    return f.Error("qk_rope_head_dim", "must be even");
  }
  ASSIGN_OR_RETURN(c.v_head_dim, positive("v_head_dim"));
  if (f.Has("q_lora_rank")) {
    ASSIGN_OR_RETURN(c.q_lora_rank, positive("q_lora_rank"));
  }

  ASSIGN_OR_RETURN(c.n_routed_experts, f.IntOr("n_routed_experts", 0));
  if (c.n_routed_experts < 0) {
    return f.Error("n_routed_experts", "must not be negative");
  }
  ASSIGN_OR_RETURN(c.first_k_dense_replace,
                   f.IntOr("first_k_dense_replace", 0));
  ASSIGN_OR_RETURN(c.moe_layer_freq, f.IntOr("moe_layer_freq", 1));
  if (c.moe_layer_freq <= 0) {
    return f.Error("moe_layer_freq", "must be positive");
  }
  bool any_dense = false;
  for (int l = 0; l < c.num_layers; ++l) any_dense |= !c.IsMoeLayer(l);
  if (any_dense) {
    ASSIGN_OR_RETURN(c.intermediate_size, positive("intermediate_size"));
  }

  if (c.n_routed_experts > 0) {
    const int e = c.n_routed_experts;
    ASSIGN_OR_RETURN(c.moe_intermediate_size,
                     positive("moe_intermediate_size"));
    ASSIGN_OR_RETURN(c.n_shared_experts, f.IntOr("n_shared_experts", 0));
    if (c.n_shared_experts < 0) {
      return f.Error("n_shared_experts", "must not be negative");
    }
    ASSIGN_OR_RETURN(c.num_experts_per_tok, positive("num_experts_per_tok"));
    if (c.num_experts_per_tok > e) {
      return f.Error("num_experts_per_tok", "exceeds n_routed_experts");
    }
    ASSIGN_OR_RETURN(c.n_group, f.IntOr("n_group", 1));
    if (c.n_group <= 0 || e % c.n_group != 0) {
      return f.Error("n_group", "must be positive and divide n_routed_experts");
    }
    ASSIGN_OR_RETURN(c.topk_group, f.IntOr("topk_group", 1));
    if (c.topk_group <= 0 || c.topk_group > c.n_group) {
      return f.Error("topk_group", "must be in [1, n_group]");
    }
    // Each config class's own default ("gready", a typo, for V2: the V2
    // remote code then fails, so greedy stands in).
    ASSIGN_OR_RETURN(c.topk_method,
                     f.StringOr("topk_method", c.v3 ? "noaux_tc" : "greedy"));
    if (c.topk_method != "greedy" && c.topk_method != "group_limited_greedy" &&
        c.topk_method != "noaux_tc") {
      return f.Error("topk_method",
                     absl::StrCat("is \"", c.topk_method,
                                  "\", expected greedy, group_limited_greedy "
                                  "or noaux_tc"));
    }
    if (c.topk_method == "noaux_tc" && e / c.n_group < 2) {
      return f.Error("n_group",
                     "leaves fewer than 2 experts per group, which noaux_tc "
                     "needs");
    }
    ASSIGN_OR_RETURN(c.scoring_func,
                     f.StringOr("scoring_func", c.v3 ? "sigmoid" : "softmax"));
    if (c.scoring_func != "softmax" && c.scoring_func != "sigmoid") {
      return f.Error("scoring_func",
                     absl::StrCat("is \"", c.scoring_func,
                                  "\", expected softmax or sigmoid"));
    }
    ASSIGN_OR_RETURN(c.norm_topk_prob, f.BoolOr("norm_topk_prob", false));
    ASSIGN_OR_RETURN(c.routed_scaling_factor,
                     f.DoubleOr("routed_scaling_factor", 1.0));
  }

  if (f.Has("rope_scaling")) {
    const json& rs = j.at("rope_scaling");
    if (!rs.is_object()) return f.Error("rope_scaling", "is not an object");
    const Fields r(rs, "rope_scaling.");
    const char* type_key = r.Has("type") ? "type" : "rope_type";
    ASSIGN_OR_RETURN(const std::string type, r.StringOr(type_key, ""));
    if (type != "yarn") {
      return r.Error(type_key,
                     absl::StrCat("is \"", type, "\", only yarn is supported"));
    }
    c.yarn = true;
    if (!r.Has("factor")) return r.Error("factor", "is missing");
    ASSIGN_OR_RETURN(c.yarn_factor, r.DoubleOr("factor", 1.0));
    if (c.yarn_factor <= 0) return r.Error("factor", "must be positive");
    ASSIGN_OR_RETURN(c.yarn_original_max_position_embeddings,
                     r.IntOr("original_max_position_embeddings", 4096));
    if (c.yarn_original_max_position_embeddings <= 0) {
      return r.Error("original_max_position_embeddings", "must be positive");
    }
    ASSIGN_OR_RETURN(c.yarn_beta_fast, r.DoubleOr("beta_fast", 32.0));
    ASSIGN_OR_RETURN(c.yarn_beta_slow, r.DoubleOr("beta_slow", 1.0));
    ASSIGN_OR_RETURN(c.yarn_mscale, r.DoubleOr("mscale", 1.0));
    ASSIGN_OR_RETURN(c.yarn_mscale_all_dim, r.DoubleOr("mscale_all_dim", 0.0));
  }
  return c;
}

// The tensors of a checkpoint directory: model.safetensors, or the shards
// named by model.safetensors.index.json, opened as first needed.
class TensorReader {
 public:
  static absl::StatusOr<TensorReader> Open(const std::string& dir) {
    TensorReader reader;
    reader.dir_ = dir;
    const std::string index_path = dir + "/" + kIndexFile;
    if (std::filesystem::exists(index_path)) {
      ASSIGN_OR_RETURN(const json index, ReadJson(index_path));
      auto map = index.find("weight_map");
      if (map == index.end() || !map->is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path, ": field \"weight_map\" is missing or not an object"));
      }
      for (auto it = map->begin(); it != map->end(); ++it) {
        if (!it->is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat(index_path, ": weight_map entry for tensor \"",
                           it.key(), "\" is not a file name"));
        }
        reader.file_of_[it.key()] = it->get<std::string>();
      }
    } else if (!std::filesystem::exists(dir + "/" + kSingleFile)) {
      return absl::NotFoundError(absl::StrCat(dir, ": neither ", kSingleFile,
                                              " nor ", kIndexFile, " exists"));
    }
    return reader;
  }

  // Tensor `name` widened to float32, which must have shape `shape`.
  absl::StatusOr<std::vector<float>> Read(const std::string& name,
                                          const std::vector<int64_t>& shape) {
    std::string file = kSingleFile;
    if (!file_of_.empty()) {
      auto it = file_of_.find(name);
      if (it == file_of_.end()) {
        return absl::NotFoundError(absl::StrCat(
            "tensor \"", name, "\" is not in ", dir_, "/", kIndexFile));
      }
      file = it->second;
    }
    std::unique_ptr<SafetensorsFile>& st = files_[file];
    if (st == nullptr) {
      ASSIGN_OR_RETURN(st, SafetensorsFile::Open(dir_ + "/" + file));
    }
    if (!st->Has(name)) {
      return absl::NotFoundError(
          absl::StrCat("tensor \"", name, "\" is not in ", st->path()));
    }
    ASSIGN_OR_RETURN(const TensorView view, st->Get(name));
    if (view.shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor \"", name, "\" has shape ", ShapeString(view.shape),
          ", expected ", ShapeString(shape)));
    }
    std::vector<float> values(view.NumElements());
    for (size_t i = 0; i < values.size(); ++i) {
      values[i] = LoadAsFloat(view.data, view.dtype, i);
    }
    return values;
  }

 private:
  std::string dir_;
  std::map<std::string, std::string> file_of_;  // empty: single file
  std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;
};

double Silu(double x) { return x / (1.0 + std::exp(-x)); }

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Softmax of `x` in place (max-subtracted).
void SoftmaxInPlace(std::vector<double>& x) {
  const double max = *std::max_element(x.begin(), x.end());
  double sum = 0;
  for (double& v : x) {
    v = std::exp(v - max);
    sum += v;
  }
  for (double& v : x) v /= sum;
}

// Indices of the `k` largest `values`, largest first, the lower index first
// among equal values.
std::vector<int> TopK(const std::vector<double>& values, int k) {
  std::vector<int> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return values[a] > values[b]; });
  order.resize(k);
  return order;
}

std::vector<float> ToFloat(const std::vector<double>& x) {
  return std::vector<float>(x.begin(), x.end());
}

}  // namespace

absl::StatusOr<DeepseekReference> DeepseekReference::Load(
    const std::string& dir, const DeepseekAblation& ablation) {
  ASSIGN_OR_RETURN(const json config_json, ReadJson(dir + "/" + kConfigFile));
  DeepseekReference m;
  ASSIGN_OR_RETURN(m.config_, ParseConfig(config_json));
  m.ablation_ = ablation;
  const DeepseekReferenceConfig& c = m.config_;
  ASSIGN_OR_RETURN(TensorReader reader, TensorReader::Open(dir));

  // RoPE: DeepseekV2RotaryEmbedding / DeepseekV2YarnRotaryEmbedding.
  const int d = c.qk_rope_head_dim;
  const bool yarn_rope = c.yarn && !ablation.skip_yarn;
  std::vector<double> freq_extra(d / 2);
  for (int i = 0; i < d / 2; ++i) {
    freq_extra[i] = 1.0 / std::pow(c.rope_theta, 2.0 * i / d);
  }
  m.inv_freq_ = freq_extra;
  if (yarn_rope) {
    const double factor = c.yarn_factor;
    auto correction_dim = [&](double rotations) {
      return d *
             std::log(c.yarn_original_max_position_embeddings /
                      (rotations * 2 * M_PI)) /
             (2 * std::log(c.rope_theta));
    };
    const double low =
        std::max(std::floor(correction_dim(c.yarn_beta_fast)), 0.0);
    double high =
        std::min(std::ceil(correction_dim(c.yarn_beta_slow)), d - 1.0);
    if (low == high) high += 0.001;
    for (int i = 0; i < d / 2; ++i) {
      const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
      const double mask = 1.0 - ramp;  // 1: keep the original frequency
      const double freq_inter = freq_extra[i] / factor;
      m.inv_freq_[i] = freq_inter * (1 - mask) + freq_extra[i] * mask;
    }
    m.rope_mscale_ = YarnGetMscale(factor, c.yarn_mscale) /
                     YarnGetMscale(factor, c.yarn_mscale_all_dim);
  }
  m.softmax_scale_ = 1.0 / std::sqrt(static_cast<double>(c.q_head_dim()));
  if (c.yarn && c.yarn_mscale_all_dim != 0 &&
      !ablation.skip_yarn_softmax_scale) {
    const double mscale = YarnGetMscale(c.yarn_factor, c.yarn_mscale_all_dim);
    m.softmax_scale_ *= mscale * mscale;
  }

  const int hidden = c.hidden_size;
  auto matrix = [&](const std::string& name, int rows,
                    int cols) -> absl::StatusOr<Matrix> {
    Matrix w;
    w.rows = rows;
    w.cols = cols;
    ASSIGN_OR_RETURN(w.data, reader.Read(name, {rows, cols}));
    return w;
  };
  auto vec = [&](const std::string& name,
                 int n) -> absl::StatusOr<std::vector<float>> {
    return reader.Read(name, {n});
  };
  auto ffn = [&](const std::string& prefix, int inter) -> absl::StatusOr<Ffn> {
    Ffn f;
    ASSIGN_OR_RETURN(f.gate,
                     matrix(prefix + "gate_proj.weight", inter, hidden));
    ASSIGN_OR_RETURN(f.up, matrix(prefix + "up_proj.weight", inter, hidden));
    ASSIGN_OR_RETURN(f.down,
                     matrix(prefix + "down_proj.weight", hidden, inter));
    return f;
  };

  ASSIGN_OR_RETURN(m.embed_,
                   matrix("model.embed_tokens.weight", c.vocab_size, hidden));
  if (!c.tie_word_embeddings) {
    ASSIGN_OR_RETURN(m.lm_head_,
                     matrix("lm_head.weight", c.vocab_size, hidden));
  }
  ASSIGN_OR_RETURN(m.final_norm_, vec("model.norm.weight", hidden));

  const int nh = c.num_heads;
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const std::string attn = p + "self_attn.";
    Layer layer;
    ASSIGN_OR_RETURN(layer.input_norm,
                     vec(p + "input_layernorm.weight", hidden));
    ASSIGN_OR_RETURN(layer.post_attention_norm,
                     vec(p + "post_attention_layernorm.weight", hidden));
    if (c.q_lora_rank == 0) {
      ASSIGN_OR_RETURN(layer.q_proj, matrix(attn + "q_proj.weight",
                                            nh * c.q_head_dim(), hidden));
    } else {
      ASSIGN_OR_RETURN(layer.q_a_proj,
                       matrix(attn + "q_a_proj.weight", c.q_lora_rank, hidden));
      ASSIGN_OR_RETURN(layer.q_a_norm,
                       vec(attn + "q_a_layernorm.weight", c.q_lora_rank));
      ASSIGN_OR_RETURN(
          layer.q_b_proj,
          matrix(attn + "q_b_proj.weight", nh * c.q_head_dim(), c.q_lora_rank));
    }
    ASSIGN_OR_RETURN(layer.kv_a_proj,
                     matrix(attn + "kv_a_proj_with_mqa.weight",
                            c.kv_lora_rank + c.qk_rope_head_dim, hidden));
    ASSIGN_OR_RETURN(layer.kv_a_norm,
                     vec(attn + "kv_a_layernorm.weight", c.kv_lora_rank));
    ASSIGN_OR_RETURN(
        layer.kv_b_proj,
        matrix(attn + "kv_b_proj.weight",
               nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank));
    ASSIGN_OR_RETURN(layer.o_proj,
                     matrix(attn + "o_proj.weight", hidden, nh * c.v_head_dim));
    layer.moe = c.IsMoeLayer(l);
    if (!layer.moe) {
      ASSIGN_OR_RETURN(layer.dense, ffn(p + "mlp.", c.intermediate_size));
    } else {
      const int e = c.n_routed_experts;
      ASSIGN_OR_RETURN(layer.router, matrix(p + "mlp.gate.weight", e, hidden));
      if (c.topk_method == "noaux_tc") {
        ASSIGN_OR_RETURN(layer.correction_bias,
                         vec(p + "mlp.gate.e_score_correction_bias", e));
      }
      for (int x = 0; x < e; ++x) {
        ASSIGN_OR_RETURN(Ffn expert,
                         ffn(absl::StrCat(p, "mlp.experts.", x, "."),
                             c.moe_intermediate_size));
        layer.experts.push_back(std::move(expert));
      }
      if (c.n_shared_experts > 0) {
        layer.has_shared = true;
        ASSIGN_OR_RETURN(layer.shared,
                         ffn(p + "mlp.shared_experts.",
                             c.moe_intermediate_size * c.n_shared_experts));
      }
    }
    m.layers_.push_back(std::move(layer));
  }
  return m;
}

std::vector<double> DeepseekReference::Linear(const Matrix& w,
                                              const std::vector<double>& x) {
  std::vector<double> y(w.rows);
  for (int r = 0; r < w.rows; ++r) {
    const float* row = w.data.data() + static_cast<size_t>(r) * w.cols;
    double acc = 0;
    for (int i = 0; i < w.cols; ++i) acc += row[i] * x[i];
    y[r] = acc;
  }
  return y;
}

// DeepseekV2RMSNorm: weight * (x * rsqrt(mean(x^2) + eps)).
std::vector<double> DeepseekReference::RmsNorm(
    const std::vector<double>& x, const std::vector<float>& weight) const {
  double sum_sq = 0;
  for (double v : x) sum_sq += v * v;
  const double scale =
      1.0 / std::sqrt(sum_sq / x.size() + config_.rms_norm_eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = weight[i] * (x[i] * scale);
  return y;
}

// SwiGLU: down(silu(gate(x)) * up(x)).
std::vector<double> DeepseekReference::RunFfn(const Ffn& ffn,
                                              const std::vector<double>& x) {
  std::vector<double> g = Linear(ffn.gate, x);
  const std::vector<double> u = Linear(ffn.up, x);
  for (size_t i = 0; i < g.size(); ++i) g[i] = Silu(g[i]) * u[i];
  return Linear(ffn.down, g);
}

// apply_rotary_pos_emb of modeling_deepseek.py: the stored vector is first
// de-interleaved (view(d/2, 2).transpose.reshape: y[i] = x[2i],
// y[d/2 + i] = x[2i + 1]), then rotated the rotate_half way, pairs
// (i, i + d/2) by pos * inv_freq[i], cos and sin both times the yarn mscale.
// The result stays in the de-interleaved order, which q and k share.
void DeepseekReference::ApplyRope(double* x, int pos) const {
  const int d = config_.qk_rope_head_dim;
  const int half = d / 2;
  std::vector<double> y(x, x + d);
  if (!ablation_.skip_rope_interleave) {
    for (int i = 0; i < half; ++i) {
      y[i] = x[2 * i];
      y[half + i] = x[2 * i + 1];
    }
  }
  for (int i = 0; i < half; ++i) {
    const double angle = pos * inv_freq_[i];
    const double c = std::cos(angle) * rope_mscale_;
    const double s = std::sin(angle) * rope_mscale_;
    x[i] = y[i] * c - y[half + i] * s;
    x[half + i] = y[half + i] * c + y[i] * s;
  }
}

// DeepseekV2Attention in its expanded form.
std::vector<std::vector<double>> DeepseekReference::Attention(
    const Layer& layer, const std::vector<std::vector<double>>& x) const {
  const DeepseekReferenceConfig& c = config_;
  const int n = static_cast<int>(x.size());
  const int nh = c.num_heads;
  const int nope = c.qk_nope_head_dim;
  const int qhd = c.q_head_dim();
  const int vd = c.v_head_dim;
  // Per position: query and key [nh * qhd] (each head [nope | rope]) and
  // value [nh * vd].
  std::vector<std::vector<double>> query(n), key(n), value(n);
  for (int t = 0; t < n; ++t) {
    if (c.q_lora_rank == 0) {
      query[t] = Linear(layer.q_proj, x[t]);
    } else {
      std::vector<double> qa = Linear(layer.q_a_proj, x[t]);
      if (!ablation_.skip_q_a_layernorm) qa = RmsNorm(qa, layer.q_a_norm);
      query[t] = Linear(layer.q_b_proj, qa);
    }
    const std::vector<double> ckv = Linear(layer.kv_a_proj, x[t]);
    std::vector<double> compressed(ckv.begin(), ckv.begin() + c.kv_lora_rank);
    std::vector<double> k_pe(ckv.begin() + c.kv_lora_rank, ckv.end());
    if (!ablation_.skip_kv_a_layernorm) {
      compressed = RmsNorm(compressed, layer.kv_a_norm);
    }
    const std::vector<double> kv = Linear(layer.kv_b_proj, compressed);
    ApplyRope(k_pe.data(), t);
    key[t].resize(nh * qhd);
    value[t].resize(nh * vd);
    for (int h = 0; h < nh; ++h) {
      ApplyRope(query[t].data() + h * qhd + nope, t);
      const double* kv_head = kv.data() + h * (nope + vd);
      std::copy(kv_head, kv_head + nope, key[t].begin() + h * qhd);
      std::copy(k_pe.begin(), k_pe.end(), key[t].begin() + h * qhd + nope);
      std::copy(kv_head + nope, kv_head + nope + vd, value[t].begin() + h * vd);
    }
  }

  std::vector<std::vector<double>> out(n);
  for (int t = 0; t < n; ++t) {
    std::vector<double> heads_out(nh * vd, 0.0);
    for (int h = 0; h < nh; ++h) {
      std::vector<double> p(t + 1);
      for (int j = 0; j <= t; ++j) {
        double s = 0;
        for (int i = 0; i < qhd; ++i) {
          s += query[t][h * qhd + i] * key[j][h * qhd + i];
        }
        p[j] = s * softmax_scale_;
      }
      SoftmaxInPlace(p);
      for (int j = 0; j <= t; ++j) {
        for (int i = 0; i < vd; ++i) {
          heads_out[h * vd + i] += p[j] * value[j][h * vd + i];
        }
      }
    }
    out[t] = Linear(layer.o_proj, heads_out);
  }
  return out;
}

// MoEGate of modeling_deepseek.py (V2's greedy and group_limited_greedy,
// V3's noaux_tc), ties to the lower group and expert id.
DeepseekReference::Routing DeepseekReference::Route(
    const Layer& layer, const std::vector<double>& x) const {
  const DeepseekReferenceConfig& c = config_;
  const int e = c.n_routed_experts;
  const int k = c.num_experts_per_tok;
  // The gate computes its logits in float32.
  std::vector<double> scores = Linear(layer.router, x);
  for (double& s : scores) s = static_cast<float>(s);
  if (c.scoring_func == "softmax") {
    SoftmaxInPlace(scores);
  } else {
    for (double& s : scores) s = Sigmoid(s);
  }
  std::vector<double> choice = scores;
  if (!layer.correction_bias.empty() && !ablation_.skip_correction_bias) {
    for (int i = 0; i < e; ++i) choice[i] += layer.correction_bias[i];
  }

  const std::string method =
      ablation_.skip_group_limit ? std::string("greedy") : c.topk_method;
  std::vector<bool> kept(e, true);
  if (method != "greedy") {
    const int per_group = e / c.n_group;
    std::vector<double> group_scores(c.n_group);
    for (int g = 0; g < c.n_group; ++g) {
      const std::vector<double> members(choice.begin() + g * per_group,
                                        choice.begin() + (g + 1) * per_group);
      const std::vector<int> best = TopK(members, std::min(2, per_group));
      group_scores[g] = method == "noaux_tc"
                            ? members[best[0]] + members[best[1]]
                            : members[best[0]];
    }
    std::fill(kept.begin(), kept.end(), false);
    for (int g : TopK(group_scores, c.topk_group)) {
      std::fill(kept.begin() + g * per_group,
                kept.begin() + (g + 1) * per_group, true);
    }
    for (int i = 0; i < e; ++i) {
      if (!kept[i]) choice[i] = 0.0;
    }
  }

  Routing r;
  r.experts = TopK(choice, k);
  for (int i : r.experts) {
    // V2's group_limited_greedy takes the weights from the masked scores
    // (torch.topk(tmp_scores)), so an expert outside the kept groups, chosen
    // only when they hold fewer than k, weighs 0; noaux_tc gathers the
    // unbiased scores.
    const bool masked_out = method == "group_limited_greedy" && !kept[i];
    r.weights.push_back(masked_out ? 0.0 : scores[i]);
  }
  const bool normalised = k > 1 && c.norm_topk_prob;
  if (normalised) {
    double sum = 0;
    for (double w : r.weights) sum += w;
    for (double& w : r.weights) w /= sum + 1e-20;
  }
  // V3 always scales; V2 only in the `else` of its normalisation.
  if ((c.v3 || !normalised) && !ablation_.skip_routed_scaling) {
    for (double& w : r.weights) w *= c.routed_scaling_factor;
  }
  return r;
}

DeepseekReference::ForwardResult DeepseekReference::Forward(
    const std::vector<int32_t>& tokens, bool all_logits) const {
  const DeepseekReferenceConfig& c = config_;
  const int n = static_cast<int>(tokens.size());
  const int hidden = c.hidden_size;
  ForwardResult result;

  std::vector<std::vector<double>> h(n, std::vector<double>(hidden));
  for (int t = 0; t < n; ++t) {
    const float* row =
        embed_.data.data() + static_cast<size_t>(tokens[t]) * hidden;
    for (int i = 0; i < hidden; ++i) h[t][i] = row[i];
  }

  for (const Layer& layer : layers_) {
    std::vector<std::vector<double>> x(n);
    for (int t = 0; t < n; ++t) x[t] = RmsNorm(h[t], layer.input_norm);
    const std::vector<std::vector<double>> attn = Attention(layer, x);
    for (int t = 0; t < n; ++t) {
      for (int i = 0; i < hidden; ++i) h[t][i] += attn[t][i];
    }
    std::vector<int> last_experts;
    for (int t = 0; t < n; ++t) {
      const std::vector<double> y = RmsNorm(h[t], layer.post_attention_norm);
      std::vector<double> mlp_out;
      if (!layer.moe) {
        mlp_out = RunFfn(layer.dense, y);
      } else {
        const Routing routing = Route(layer, y);
        mlp_out.assign(hidden, 0.0);
        for (size_t j = 0; j < routing.experts.size(); ++j) {
          const std::vector<double> out =
              RunFfn(layer.experts[routing.experts[j]], y);
          for (int i = 0; i < hidden; ++i) {
            mlp_out[i] += routing.weights[j] * out[i];
          }
        }
        if (layer.has_shared && !ablation_.skip_shared_experts) {
          const std::vector<double> out = RunFfn(layer.shared, y);
          for (int i = 0; i < hidden; ++i) mlp_out[i] += out[i];
        }
        if (t == n - 1) {
          last_experts = routing.experts;
          std::sort(last_experts.begin(), last_experts.end());
        }
      }
      for (int i = 0; i < hidden; ++i) h[t][i] += mlp_out[i];
    }
    result.last_routing.push_back(std::move(last_experts));
  }

  const Matrix& head = c.tie_word_embeddings ? embed_ : lm_head_;
  for (int t = all_logits ? 0 : n - 1; t < n; ++t) {
    result.logits.push_back(ToFloat(Linear(head, RmsNorm(h[t], final_norm_))));
  }
  return result;
}

std::vector<float> DeepseekReference::Logits(
    const std::vector<int32_t>& tokens) const {
  return std::move(Forward(tokens, /*all_logits=*/false).logits.back());
}

std::vector<std::vector<float>> DeepseekReference::AllLogits(
    const std::vector<int32_t>& tokens) const {
  return Forward(tokens, /*all_logits=*/true).logits;
}

std::vector<std::vector<int>> DeepseekReference::RoutingOfLastToken(
    const std::vector<int32_t>& tokens) const {
  return Forward(tokens, /*all_logits=*/false).last_routing;
}

std::vector<int32_t> DeepseekReference::Greedy(
    const std::vector<int32_t>& prompt, int n) const {
  std::vector<int32_t> seq = prompt;
  std::vector<int32_t> out;
  for (int step = 0; step < n; ++step) {
    const std::vector<float> logits = Logits(seq);
    // max_element returns the first maximum: the lowest id among ties.
    const int32_t next = static_cast<int32_t>(
        std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(next);
    seq.push_back(next);
  }
  return out;
}

}  // namespace moe::testing
