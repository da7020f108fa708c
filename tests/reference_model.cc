#include "tests/reference_model.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"
#include "core/status_macros.h"
#include "core/tensor.h"
#include "core/weight_names.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace moe::testing {
namespace {

absl::StatusOr<std::vector<float>> ReadTensor(
    Checkpoint& ckpt, const std::string& name,
    const std::vector<int64_t>& shape) {
  ASSIGN_OR_RETURN(TensorView view, ckpt.Get(name, shape));
  std::vector<float> values(view.NumElements());
  for (int64_t i = 0; i < view.NumElements(); ++i) values[i] = view.At(i);
  return values;
}

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

// Hugging Face rotate-half RoPE of one head vector `x` (length d) at
// position `pos`: pairs (i, i + d/2) rotated by pos * theta^(-2i/d).
void RotateHalf(double* x, int d, int pos, double theta) {
  const int half = d / 2;
  for (int i = 0; i < half; ++i) {
    const double inv_freq = std::pow(theta, -2.0 * i / d);
    const double angle = pos * inv_freq;
    const double c = std::cos(angle), s = std::sin(angle);
    const double a = x[i], b = x[i + half];
    x[i] = a * c - b * s;
    x[i + half] = b * c + a * s;
  }
}

std::vector<float> ToFloat(const std::vector<double>& x) {
  return std::vector<float>(x.begin(), x.end());
}

}  // namespace

absl::StatusOr<ReferenceModel> ReferenceModel::Load(
    const std::string& dir, const ReferenceAblation& ablation) {
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(dir));
  ReferenceModel m;
  m.config_ = ckpt->config();
  m.ablation_ = ablation;
  const ModelConfig& c = m.config_;
  const int64_t hidden = c.hidden_size;

  auto matrix = [&](const std::string& name, int rows,
                    int cols) -> absl::StatusOr<Matrix> {
    Matrix w;
    w.rows = rows;
    w.cols = cols;
    ASSIGN_OR_RETURN(w.data, ReadTensor(*ckpt, name, {rows, cols}));
    return w;
  };
  auto vec = [&](const std::string& name,
                 int n) -> absl::StatusOr<std::vector<float>> {
    return ReadTensor(*ckpt, name, {n});
  };
  auto ffn = [&](int layer, int expert, int inter, bool shared,
                 bool dense) -> absl::StatusOr<Ffn> {
    auto name = [&](FfnProj p) {
      if (dense) return DenseMlpTensorName(layer, p);
      if (shared) return SharedExpertTensorName(c, layer, p);
      return ExpertTensorName(c, layer, expert, p);
    };
    Ffn f;
    ASSIGN_OR_RETURN(f.gate, matrix(name(FfnProj::kGate), inter, hidden));
    ASSIGN_OR_RETURN(f.up, matrix(name(FfnProj::kUp), inter, hidden));
    ASSIGN_OR_RETURN(f.down, matrix(name(FfnProj::kDown), hidden, inter));
    return f;
  };

  ASSIGN_OR_RETURN(m.embed_, matrix(EmbedTokensName(), c.vocab_size, hidden));
  if (!c.tie_word_embeddings) {
    ASSIGN_OR_RETURN(m.lm_head_, matrix(LmHeadName(), c.vocab_size, hidden));
  }
  ASSIGN_OR_RETURN(m.final_norm_, vec(FinalNormName(), hidden));

  for (int l = 0; l < c.num_layers; ++l) {
    Layer layer;
    ASSIGN_OR_RETURN(layer.input_norm,
                     vec(LayerTensorName(l, "input_layernorm.weight"), hidden));
    ASSIGN_OR_RETURN(
        layer.post_attention_norm,
        vec(LayerTensorName(l, "post_attention_layernorm.weight"), hidden));
    ASSIGN_OR_RETURN(layer.q, matrix(AttentionTensorName(l, "q_proj", "weight"),
                                     c.q_dim(), hidden));
    ASSIGN_OR_RETURN(layer.k, matrix(AttentionTensorName(l, "k_proj", "weight"),
                                     c.kv_dim(), hidden));
    ASSIGN_OR_RETURN(layer.v, matrix(AttentionTensorName(l, "v_proj", "weight"),
                                     c.kv_dim(), hidden));
    ASSIGN_OR_RETURN(layer.o, matrix(AttentionTensorName(l, "o_proj", "weight"),
                                     hidden, c.q_dim()));
    if (c.qkv_bias) {
      ASSIGN_OR_RETURN(
          layer.q_bias,
          vec(AttentionTensorName(l, "q_proj", "bias"), c.q_dim()));
      ASSIGN_OR_RETURN(
          layer.k_bias,
          vec(AttentionTensorName(l, "k_proj", "bias"), c.kv_dim()));
      ASSIGN_OR_RETURN(
          layer.v_bias,
          vec(AttentionTensorName(l, "v_proj", "bias"), c.kv_dim()));
    }
    if (c.o_bias) {
      ASSIGN_OR_RETURN(layer.o_bias,
                       vec(AttentionTensorName(l, "o_proj", "bias"), hidden));
    }
    if (c.qk_norm == QkNorm::kPerHead) {
      ASSIGN_OR_RETURN(
          layer.q_norm,
          vec(AttentionTensorName(l, "q_norm", "weight"), c.head_dim));
      ASSIGN_OR_RETURN(
          layer.k_norm,
          vec(AttentionTensorName(l, "k_norm", "weight"), c.head_dim));
    } else if (c.qk_norm == QkNorm::kWholeProjection) {
      ASSIGN_OR_RETURN(
          layer.q_norm,
          vec(AttentionTensorName(l, "q_norm", "weight"), c.q_dim()));
      ASSIGN_OR_RETURN(
          layer.k_norm,
          vec(AttentionTensorName(l, "k_norm", "weight"), c.kv_dim()));
    }
    layer.moe = c.IsMoeLayer(l);
    if (!layer.moe) {
      ASSIGN_OR_RETURN(layer.dense, ffn(l, 0, c.dense_intermediate_size,
                                        /*shared=*/false, /*dense=*/true));
    } else {
      ASSIGN_OR_RETURN(layer.router,
                       matrix(RouterGateName(c, l), c.num_experts, hidden));
      for (int e = 0; e < c.num_experts; ++e) {
        ASSIGN_OR_RETURN(Ffn expert, ffn(l, e, c.expert_intermediate_size,
                                         /*shared=*/false, /*dense=*/false));
        layer.experts.push_back(std::move(expert));
      }
      if (c.has_shared_expert()) {
        layer.has_shared = true;
        ASSIGN_OR_RETURN(layer.shared,
                         ffn(l, 0, c.shared_expert_intermediate_size,
                             /*shared=*/true, /*dense=*/false));
        ASSIGN_OR_RETURN(layer.shared_gate,
                         matrix(SharedExpertGateName(l), 1, hidden));
      }
    }
    m.layers_.push_back(std::move(layer));
  }
  return m;
}

std::vector<double> ReferenceModel::Linear(const Matrix& w,
                                           const std::vector<float>& bias,
                                           const std::vector<double>& x) {
  std::vector<double> y(w.rows);
  for (int r = 0; r < w.rows; ++r) {
    const float* row = w.data.data() + static_cast<size_t>(r) * w.cols;
    double acc = 0;
    for (int i = 0; i < w.cols; ++i) acc += row[i] * x[i];
    if (!bias.empty()) acc += bias[r];
    y[r] = acc;
  }
  return y;
}

// Hugging Face RMSNorm: weight * (x * rsqrt(mean(x^2) + eps)).
std::vector<double> ReferenceModel::RmsNorm(
    const std::vector<double>& x, const std::vector<float>& weight) const {
  double sum_sq = 0;
  for (double v : x) sum_sq += v * v;
  const double scale =
      1.0 /
      std::sqrt(sum_sq / x.size() + static_cast<double>(config_.rms_norm_eps));
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = weight[i] * (x[i] * scale);
  return y;
}

// SwiGLU: down(silu(gate(x)) * up(x)).
std::vector<double> ReferenceModel::RunFfn(const Ffn& ffn,
                                           const std::vector<double>& x) {
  std::vector<double> g = Linear(ffn.gate, {}, x);
  const std::vector<double> u = Linear(ffn.up, {}, x);
  for (size_t i = 0; i < g.size(); ++i) g[i] = Silu(g[i]) * u[i];
  return Linear(ffn.down, {}, g);
}

std::vector<std::vector<double>> ReferenceModel::Attention(
    const Layer& layer, const std::vector<std::vector<double>>& x) const {
  const ModelConfig& c = config_;
  const int n = static_cast<int>(x.size());
  const int d = c.head_dim;
  std::vector<std::vector<double>> q(n), k(n), v(n);
  for (int t = 0; t < n; ++t) {
    q[t] = Linear(layer.q, layer.q_bias, x[t]);
    k[t] = Linear(layer.k, layer.k_bias, x[t]);
    v[t] = Linear(layer.v, layer.v_bias, x[t]);
    if (!ablation_.skip_qk_norm) {
      if (c.qk_norm == QkNorm::kWholeProjection) {
        q[t] = RmsNorm(q[t], layer.q_norm);
        k[t] = RmsNorm(k[t], layer.k_norm);
      } else if (c.qk_norm == QkNorm::kPerHead) {
        auto per_head = [&](std::vector<double>& proj, int heads,
                            const std::vector<float>& w) {
          for (int h = 0; h < heads; ++h) {
            std::vector<double> head(proj.begin() + h * d,
                                     proj.begin() + (h + 1) * d);
            head = RmsNorm(head, w);
            std::copy(head.begin(), head.end(), proj.begin() + h * d);
          }
        };
        per_head(q[t], c.num_heads, layer.q_norm);
        per_head(k[t], c.num_kv_heads, layer.k_norm);
      }
    }
    if (c.clip_qkv > 0 && !ablation_.skip_clip_qkv) {
      const double lim = c.clip_qkv;
      for (auto* proj : {&q[t], &k[t], &v[t]}) {
        for (double& e : *proj) e = std::clamp(e, -lim, lim);
      }
    }
    for (int h = 0; h < c.num_heads; ++h) {
      RotateHalf(q[t].data() + h * d, d, t, c.rope_theta);
    }
    for (int h = 0; h < c.num_kv_heads; ++h) {
      RotateHalf(k[t].data() + h * d, d, t, c.rope_theta);
    }
  }

  const int group = c.num_heads / c.num_kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const int window = ablation_.ignore_sliding_window ? 0 : c.sliding_window;
  std::vector<std::vector<double>> out(n);
  for (int t = 0; t < n; ++t) {
    std::vector<double> heads_out(c.q_dim(), 0.0);
    const int first = window > 0 ? std::max(0, t - window + 1) : 0;
    for (int h = 0; h < c.num_heads; ++h) {
      const int kvh = h / group;
      std::vector<double> p;
      for (int j = first; j <= t; ++j) {
        double s = 0;
        for (int i = 0; i < d; ++i) s += q[t][h * d + i] * k[j][kvh * d + i];
        p.push_back(s * scale);
      }
      SoftmaxInPlace(p);
      for (int j = first; j <= t; ++j) {
        for (int i = 0; i < d; ++i) {
          heads_out[h * d + i] += p[j - first] * v[j][kvh * d + i];
        }
      }
    }
    out[t] = Linear(layer.o, layer.o_bias, heads_out);
  }
  return out;
}

ReferenceModel::MoeOutput ReferenceModel::Moe(
    const Layer& layer, const std::vector<double>& x) const {
  const ModelConfig& c = config_;
  // Router logits in float32 as the model computes them, softmax over all
  // experts.
  std::vector<double> probs(c.num_experts);
  const std::vector<double> logits = Linear(layer.router, {}, x);
  for (int e = 0; e < c.num_experts; ++e) {
    probs[e] = static_cast<float>(logits[e]);
  }
  SoftmaxInPlace(probs);
  std::vector<int> order(c.num_experts);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return probs[a] > probs[b]; });
  MoeOutput result;
  result.experts.assign(order.begin(), order.begin() + c.num_experts_per_tok);
  std::vector<double> weights;
  double sum = 0;
  for (int e : result.experts) {
    weights.push_back(probs[e]);
    sum += probs[e];
  }
  const bool renormalise = c.norm_topk_prob != ablation_.flip_norm_topk_prob;
  if (renormalise) {
    for (double& w : weights) w /= sum;
  }
  result.out.assign(c.hidden_size, 0.0);
  for (size_t j = 0; j < result.experts.size(); ++j) {
    const std::vector<double> y = RunFfn(layer.experts[result.experts[j]], x);
    for (int i = 0; i < c.hidden_size; ++i) result.out[i] += weights[j] * y[i];
  }
  if (layer.has_shared) {
    const std::vector<double> y = RunFfn(layer.shared, x);
    const double gate = ablation_.skip_shared_expert_gate
                            ? 1.0
                            : Sigmoid(Linear(layer.shared_gate, {}, x)[0]);
    for (int i = 0; i < c.hidden_size; ++i) result.out[i] += gate * y[i];
  }
  return result;
}

ReferenceModel::ForwardResult ReferenceModel::Forward(
    const std::vector<int32_t>& tokens, bool all_logits) const {
  const ModelConfig& c = config_;
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
      std::vector<double> ffn_out;
      if (layer.moe) {
        MoeOutput moe = Moe(layer, y);
        ffn_out = std::move(moe.out);
        if (t == n - 1) last_experts = std::move(moe.experts);
      } else {
        ffn_out = RunFfn(layer.dense, y);
      }
      for (int i = 0; i < hidden; ++i) h[t][i] += ffn_out[i];
    }
    result.last_routing.push_back(std::move(last_experts));
  }

  const Matrix& head = c.tie_word_embeddings ? embed_ : lm_head_;
  for (int t = all_logits ? 0 : n - 1; t < n; ++t) {
    result.logits.push_back(
        ToFloat(Linear(head, {}, RmsNorm(h[t], final_norm_))));
  }
  return result;
}

std::vector<float> ReferenceModel::Logits(
    const std::vector<int32_t>& tokens) const {
  return std::move(Forward(tokens, /*all_logits=*/false).logits.back());
}

std::vector<std::vector<float>> ReferenceModel::AllLogits(
    const std::vector<int32_t>& tokens) const {
  return Forward(tokens, /*all_logits=*/true).logits;
}

std::vector<std::vector<int>> ReferenceModel::RoutingOfLastToken(
    const std::vector<int32_t>& tokens) const {
  return Forward(tokens, /*all_logits=*/false).last_routing;
}

std::vector<int32_t> ReferenceModel::Greedy(const std::vector<int32_t>& prompt,
                                            int n) const {
  std::vector<int32_t> seq = prompt;
  std::vector<int32_t> out;
  for (int step = 0; step < n; ++step) {
    const std::vector<float> logits = Logits(seq);
    // First maximum: the lowest id among equal logits.
    const int32_t next = ArgMax(logits);
    out.push_back(next);
    seq.push_back(next);
  }
  return out;
}

std::vector<int32_t> FixtureCase::Tokens() const {
  std::vector<int32_t> tokens;
  for (const FixtureStep& step : steps) tokens.push_back(step.token);
  return tokens;
}

std::vector<int32_t> FixtureCase::TeacherForcedSequence() const {
  std::vector<int32_t> seq = prompt;
  for (size_t s = 0; s + 1 < steps.size(); ++s) seq.push_back(steps[s].token);
  return seq;
}

absl::StatusOr<std::vector<FixtureCase>> LoadFixtureCases(
    const std::string& fixture_dir) {
  const std::string path = fixture_dir + "/expected.json";
  const std::string text = ReadFileOrDie(path);
  const nlohmann::json j =
      nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.contains("cases") || !j["cases"].is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not JSON with a \"cases\" array"));
  }
  std::vector<FixtureCase> cases;
  for (const nlohmann::json& jc : j["cases"]) {
    FixtureCase fc;
    for (const auto& t : jc.at("prompt")) fc.prompt.push_back(t.get<int32_t>());
    for (const auto& js : jc.at("steps")) {
      FixtureStep step;
      step.token = js.at("token").get<int32_t>();
      for (const auto& v : js.at("logits"))
        step.logits.push_back(v.get<float>());
      fc.steps.push_back(std::move(step));
    }
    for (const auto& layer : jc.at("prompt_routing_last_token")) {
      std::vector<int> experts;
      if (!layer.is_null()) {
        for (const auto& e : layer) experts.push_back(e.get<int>());
      }
      fc.prompt_routing_last_token.push_back(std::move(experts));
    }
    cases.push_back(std::move(fc));
  }
  return cases;
}

::testing::AssertionResult LogitsNear(const std::vector<float>& actual,
                                      const std::vector<float>& expected,
                                      double tolerance) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "size " << actual.size() << ", expected " << expected.size();
  }
  size_t worst = 0;
  double worst_diff = -1;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double diff = std::abs(static_cast<double>(actual[i]) - expected[i]);
    // NaN compares false: treat it as the worst possible.
    if (!(diff <= worst_diff) || std::isnan(diff)) {
      worst_diff = std::isnan(diff) ? INFINITY : diff;
      worst = i;
    }
  }
  if (actual.empty() || worst_diff <= tolerance) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "logit " << worst << " is " << actual[worst] << ", expected "
         << expected[worst] << " (|diff| " << worst_diff << " > " << tolerance
         << ")";
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double diff = std::abs(static_cast<double>(a[i]) - b[i]);
    if (std::isnan(diff)) return INFINITY;
    worst = std::max(worst, diff);
  }
  return worst;
}

int32_t ArgMax(const std::vector<float>& logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) -
                              logits.begin());
}

double TopTwoMargin(const std::vector<float>& logits) {
  double best = -INFINITY, second = -INFINITY;
  for (float v : logits) {
    if (v > best) {
      second = best;
      best = v;
    } else if (v > second) {
      second = v;
    }
  }
  return best - second;
}

}  // namespace moe::testing
