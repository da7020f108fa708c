// Tests of the plain DeepSeek-V2/V3 reference (tests/reference_deepseek.h) on
// tiny checkpoints written here. Values are derived by hand, independently of
// the reference's code: one token through two heads and a dense MLP; two
// tokens through RoPE (plain and yarn, the de-interleave permutation, the
// softmax-scale correction, the q/kv LoRA norms); every routing method of the
// MoE gate read back from the logits. Then consistency of the entry points on
// a random model, each ablation mattering, and load errors.
#include "tests/reference_deepseek.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/dtype.h"
#include "core/safetensors_writer.h"
#include "core/status_macros.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::DeepseekAblation;
using ::moe::testing::DeepseekReference;
using ::moe::testing::TempDir;
using ::moe::testing::WriteFileOrDie;
using json = nlohmann::json;

constexpr char kV2[] = "DeepseekV2ForCausalLM";
constexpr char kV3[] = "DeepseekV3ForCausalLM";
// Hand-derived values against the reference (float32 weights and logits).
constexpr double kTolerance = 1e-5;

double Silu(double x) { return x / (1.0 + std::exp(-x)); }
double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

std::vector<double> Softmax(const std::vector<double>& x) {
  double sum = 0;
  for (double v : x) sum += std::exp(v);
  std::vector<double> p;
  for (double v : x) p.push_back(std::exp(v) / sum);
  return p;
}

// `v` scaled to unit RMS (weight 1), with `eps` as in RMSNorm.
std::vector<double> Normalised(const std::vector<double>& v, double eps) {
  double sum_sq = 0;
  for (double e : v) sum_sq += e * e;
  const double scale = 1.0 / std::sqrt(sum_sq / v.size() + eps);
  std::vector<double> out;
  for (double e : v) out.push_back(e * scale);
  return out;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return worst;
}

::testing::AssertionResult Near(const std::vector<float>& actual,
                                const std::vector<double>& expected) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "size " << actual.size() << ", expected " << expected.size();
  }
  for (size_t i = 0; i < actual.size(); ++i) {
    if (!(std::abs(actual[i] - expected[i]) <= kTolerance)) {
      return ::testing::AssertionFailure()
             << "element " << i << " is " << actual[i] << ", expected "
             << expected[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// A checkpoint to write: config.json and row-major float tensors by name.
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};
struct Checkpoint {
  json config;
  std::map<std::string, Tensor> tensors;

  // Replaces the values of a tensor the config calls for.
  void Set(const std::string& name, const std::vector<double>& values) {
    auto it = tensors.find(name);
    ASSERT_NE(it, tensors.end()) << name;
    ASSERT_EQ(it->second.values.size(), values.size()) << name;
    it->second.values.assign(values.begin(), values.end());
  }
};

int IntOr(const json& c, const char* name, int fallback) {
  auto it = c.find(name);
  return it == c.end() || it->is_null() ? fallback : it->get<int>();
}

// Every tensor `c` calls for, with its shape: the Hugging Face layout, written
// out here independently of the reference.
std::map<std::string, std::vector<int64_t>> TensorShapes(const json& c) {
  const int64_t h = c.at("hidden_size");
  const int64_t vocab = c.at("vocab_size");
  const int64_t nh = c.at("num_attention_heads");
  const int64_t nope = c.at("qk_nope_head_dim");
  const int64_t rope = c.at("qk_rope_head_dim");
  const int64_t vd = c.at("v_head_dim");
  const int64_t kv_lora = c.at("kv_lora_rank");
  const int64_t q_lora = IntOr(c, "q_lora_rank", 0);
  const int experts = IntOr(c, "n_routed_experts", 0);
  const int shared = IntOr(c, "n_shared_experts", 0);
  std::map<std::string, std::vector<int64_t>> s;
  s["model.embed_tokens.weight"] = {vocab, h};
  s["model.norm.weight"] = {h};
  if (!c.value("tie_word_embeddings", false)) s["lm_head.weight"] = {vocab, h};
  auto ffn = [&](const std::string& prefix, int64_t inter) {
    s[prefix + "gate_proj.weight"] = {inter, h};
    s[prefix + "up_proj.weight"] = {inter, h};
    s[prefix + "down_proj.weight"] = {h, inter};
  };
  for (int l = 0; l < c.at("num_hidden_layers").get<int>(); ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const std::string a = p + "self_attn.";
    s[p + "input_layernorm.weight"] = {h};
    s[p + "post_attention_layernorm.weight"] = {h};
    if (q_lora == 0) {
      s[a + "q_proj.weight"] = {nh * (nope + rope), h};
    } else {
      s[a + "q_a_proj.weight"] = {q_lora, h};
      s[a + "q_a_layernorm.weight"] = {q_lora};
      s[a + "q_b_proj.weight"] = {nh * (nope + rope), q_lora};
    }
    s[a + "kv_a_proj_with_mqa.weight"] = {kv_lora + rope, h};
    s[a + "kv_a_layernorm.weight"] = {kv_lora};
    s[a + "kv_b_proj.weight"] = {nh * (nope + vd), kv_lora};
    s[a + "o_proj.weight"] = {h, nh * vd};
    const bool moe = experts > 0 && l >= IntOr(c, "first_k_dense_replace", 0) &&
                     l % IntOr(c, "moe_layer_freq", 1) == 0;
    if (!moe) {
      ffn(p + "mlp.", c.at("intermediate_size").get<int64_t>());
      continue;
    }
    const int64_t inter = c.at("moe_intermediate_size");
    s[p + "mlp.gate.weight"] = {experts, h};
    if (c.value("topk_method", "") == "noaux_tc") {
      s[p + "mlp.gate.e_score_correction_bias"] = {experts};
    }
    for (int e = 0; e < experts; ++e) {
      ffn(absl::StrCat(p, "mlp.experts.", e, "."), inter);
    }
    if (shared > 0) ffn(p + "mlp.shared_experts.", inter * shared);
  }
  return s;
}

bool IsNormWeight(const std::string& name) {
  return name == "model.norm.weight" ||
         (name.size() > 16 &&
          name.compare(name.size() - 16, 16, "layernorm.weight") == 0);
}

// Every tensor zero, every norm weight one.
Checkpoint Zeroed(const json& config) {
  Checkpoint ck{config, {}};
  for (const auto& [name, shape] : TensorShapes(config)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    ck.tensors[name] = {
        shape, std::vector<float>(n, IsNormWeight(name) ? 1.0f : 0.0f)};
  }
  return ck;
}

// Deterministic pseudo-random weights in [-0.5, 0.5], norm weights in
// [0.9, 1.1]; each value representable in BF16, so that a BF16 copy holds the
// same model.
Checkpoint Random(const json& config, uint32_t seed) {
  Checkpoint ck = Zeroed(config);
  uint32_t state = seed * 2654435761u + 12345u;
  for (auto& [name, tensor] : ck.tensors) {
    for (float& v : tensor.values) {
      state = state * 1664525u + 1013904223u;
      const float u = static_cast<float>((state >> 8) & 0xffff) / 65535.0f;
      v = BF16ToFloat(
          FloatToBF16(IsNormWeight(name) ? 0.9f + 0.2f * u : u - 0.5f));
    }
  }
  return ck;
}

// Writes config.json and the tensors as `shards` files of `dtype` (with a
// model.safetensors.index.json when more than one).
absl::Status WriteCheckpoint(const Checkpoint& ck, const std::string& dir,
                             int shards, DType dtype) {
  std::filesystem::create_directories(dir);
  WriteFileOrDie(dir + "/config.json", ck.config.dump());
  std::vector<std::string> files;
  for (int s = 0; s < shards; ++s) {
    files.push_back(shards == 1 ? "model.safetensors"
                                : absl::StrCat("model-", s + 1, "-of-", shards,
                                               ".safetensors"));
  }
  std::vector<std::vector<TensorToWrite>> contents(shards);
  json weight_map = json::object();
  int i = 0;
  for (const auto& [name, tensor] : ck.tensors) {
    const int s = i++ % shards;
    const std::vector<float>* values = &tensor.values;
    contents[s].push_back(
        {name, dtype, tensor.shape, [values, dtype](char* dst) {
           for (size_t k = 0; k < values->size(); ++k) {
             StoreFromFloat(dst, dtype, k, (*values)[k]);
           }
         }});
    weight_map[name] = files[s];
  }
  for (int s = 0; s < shards; ++s) {
    RETURN_IF_ERROR(WriteSafetensors(dir + "/" + files[s], contents[s]));
  }
  if (shards > 1) {
    WriteFileOrDie(
        dir + "/model.safetensors.index.json",
        json{{"metadata", json::object()}, {"weight_map", weight_map}}.dump());
  }
  return absl::OkStatus();
}

class DeepseekReferenceTest : public ::testing::Test {
 protected:
  // Writes `ck` to a fresh directory and returns it.
  std::string Write(const Checkpoint& ck, int shards = 1,
                    DType dtype = DType::kF32) {
    const std::string dir = dir_.Join(absl::StrCat("model", next_++));
    const absl::Status written = WriteCheckpoint(ck, dir, shards, dtype);
    EXPECT_TRUE(written.ok()) << written;
    return dir;
  }
  absl::StatusOr<DeepseekReference> Load(
      const Checkpoint& ck, const DeepseekAblation& ablation = {}) {
    return DeepseekReference::Load(Write(ck), ablation);
  }

  TempDir dir_;
  int next_ = 0;
};

// ---------------------------------------------------------------------------
// One token, two heads, a dense MLP: attention over one position is its own
// value, so the value path, the head layout and o_proj are checked by hand.

json OneTokenConfig() {
  return {{"architectures", json::array({kV2})},
          {"hidden_size", 4},
          {"num_hidden_layers", 1},
          {"num_attention_heads", 2},
          {"vocab_size", 3},
          {"intermediate_size", 2},
          {"kv_lora_rank", 2},
          {"qk_nope_head_dim", 1},
          {"qk_rope_head_dim", 2},
          {"v_head_dim", 2},
          {"q_lora_rank", nullptr},
          {"n_routed_experts", nullptr}};
}

Checkpoint OneTokenCheckpoint(const json& config) {
  Checkpoint ck = Zeroed(config);
  const std::string a = "model.layers.0.self_attn.";
  ck.Set("model.embed_tokens.weight", {1, 1, 1, 1, 2, 0, 0, 0, 0, 0, 0, 0.002});
  ck.Set(a + "q_proj.weight", std::vector<double>(24, 0.1));
  // compressed = [x0, 0.5 x0]; k_pe = [0.3 x0, 0].
  ck.Set(a + "kv_a_proj_with_mqa.weight",
         {1, 0, 0, 0, 0.5, 0, 0, 0, 0.3, 0, 0, 0, 0, 0, 0, 0});
  ck.Set(a + "kv_a_layernorm.weight", {1, 2});
  // Per head [k_nope (1 row) | value (2 rows)].
  ck.Set(a + "kv_b_proj.weight", {0.7, 0.2, 1, 0, 0, 1, 0.1, 0.1, 1, 1, -1, 0});
  ck.Set(a + "o_proj.weight", {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1});
  ck.Set("model.layers.0.mlp.gate_proj.weight", {1, 0, 0, 0, 0, 1, 0, 0});
  ck.Set("model.layers.0.mlp.up_proj.weight", {0, 0, 1, 0, 0, 0, 0, 1});
  ck.Set("model.layers.0.mlp.down_proj.weight", {1, 0, 0, 1, 0, 0, 0, 0});
  if (ck.tensors.count("lm_head.weight") > 0) {
    ck.Set("lm_head.weight", {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1});
  }
  return ck;
}

// The final normed hidden state of token 1 (embedding [2, 0, 0, 0]).
std::vector<double> OneTokenFinalHidden() {
  const double eps = 1e-6;  // rms_norm_eps is left to its default
  const double x0 = Normalised({2, 0, 0, 0}, eps)[0];
  // kv_a_layernorm of [x0, 0.5 x0] with weight [1, 2]: both entries equal.
  const double n = Normalised({x0, 0.5 * x0}, eps)[0];
  // Head 0's value [n, n], head 1's [n + n, -n], through an identity o_proj.
  std::vector<double> h = {2 + n, n, 2 * n, -n};
  const std::vector<double> y = Normalised(h, eps);
  h[0] += Silu(y[0]) * y[2];
  h[1] += Silu(y[1]) * y[3];
  return Normalised(h, eps);
}

TEST_F(DeepseekReferenceTest, OneTokenTwoHeadsByHand) {
  absl::StatusOr<DeepseekReference> ref =
      Load(OneTokenCheckpoint(OneTokenConfig()));
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(ref->vocab_size(), 3);
  const std::vector<double> z = OneTokenFinalHidden();
  EXPECT_TRUE(Near(ref->Logits({1}), {z[0], z[1], z[2] + z[3]}));
  // Token 2 embeds as [0, 0, 0, 0.002], mean square 1e-6: as large as the
  // default eps. Attention and MLP read other dimensions and add nothing.
  EXPECT_TRUE(Near(ref->Logits({2}), {0, 0, 0.002 / std::sqrt(2e-6)}));
  EXPECT_EQ(ref->RoutingOfLastToken({1}), std::vector<std::vector<int>>(1));
}

TEST_F(DeepseekReferenceTest, TiedEmbeddingsServeAsLmHead) {
  json config = OneTokenConfig();
  config["tie_word_embeddings"] = true;
  absl::StatusOr<DeepseekReference> ref = Load(OneTokenCheckpoint(config));
  ASSERT_TRUE(ref.ok()) << ref.status();
  const std::vector<double> z = OneTokenFinalHidden();
  EXPECT_TRUE(Near(ref->Logits({1}),
                   {z[0] + z[1] + z[2] + z[3], 2 * z[0], 0.002 * z[3]}));
}

// ---------------------------------------------------------------------------
// Two tokens through one head with qk_nope 1, qk_rope 4, v 1 and both LoRA
// norms, rope_theta 100 (plain frequencies 1 and 0.1). Token i embeds as
// 2 e_i; every token's q is [1 | 1, 0, 1, 0] and k_pe [0, 1, 1, 1]; token 0
// has k_nope = value = 1, token 1 has -1. o_proj writes the head's output to
// hidden dimension 2; the MLP is zero and lm_head the identity.

json RopeConfig() {
  return {{"architectures", json::array({kV3})},
          {"hidden_size", 4},
          {"num_hidden_layers", 1},
          {"num_attention_heads", 1},
          {"vocab_size", 4},
          {"intermediate_size", 1},
          {"q_lora_rank", 1},
          {"kv_lora_rank", 1},
          {"qk_nope_head_dim", 1},
          {"qk_rope_head_dim", 4},
          {"v_head_dim", 1},
          {"rope_theta", 100.0},
          {"rms_norm_eps", 1e-12}};
}

Checkpoint RopeCheckpoint(const json& config) {
  Checkpoint ck = Zeroed(config);
  const std::string a = "model.layers.0.self_attn.";
  ck.Set("model.embed_tokens.weight",
         {2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2});
  ck.Set(a + "q_a_proj.weight", {1, 1, 1, 1});  // 2, normed to 1
  ck.Set(a + "q_b_proj.weight", {1, 1, 0, 1, 0});
  // compressed = +-2 (normed to +-1); k_pe = [0, 1, 1, 1].
  ck.Set(a + "kv_a_proj_with_mqa.weight",
         {1,  -1, 0,  0,  0,  0,  0,  0,  .5, .5,
          .5, .5, .5, .5, .5, .5, .5, .5, .5, .5});
  ck.Set(a + "kv_b_proj.weight", {1, 1});
  ck.Set(a + "o_proj.weight", {0, 0, 1, 0});
  ck.Set("lm_head.weight", {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1});
  return ck;
}

struct RopeExpectation {
  std::vector<double> inv_freq = {1.0, 0.1};
  double rope_mscale = 1.0;  // on q_pe and k_pe (cos and sin)
  double softmax_scale = 1.0 / std::sqrt(5.0);
  // Pairs (2i, 2i + 1) of the stored vector rotate together (DeepSeek's
  // de-interleave, then rotate_half); else pairs (i, i + 2).
  bool deepseek_pairs = true;
  double q_scale = 1.0;   // 2 without q_a_layernorm
  double kv_scale = 1.0;  // 2 without kv_a_layernorm
};

// Logits of both positions of tokens {0, 1}.
std::vector<std::vector<double>> ExpectedRopeLogits(const RopeExpectation& e) {
  const double q_pe[4] = {e.q_scale, 0, e.q_scale, 0};
  const double k_pe[4] = {0, 1, 1, 1};
  auto rope_dot = [&](int q_pos, int k_pos) {
    double dot = 0;
    for (int i = 0; i < 2; ++i) {
      const int first = e.deepseek_pairs ? 2 * i : i;
      const int second = e.deepseek_pairs ? 2 * i + 1 : i + 2;
      auto rotate = [&](const double* v, int pos, double* out) {
        const double angle = pos * e.inv_freq[i];
        out[0] = e.rope_mscale *
                 (v[first] * std::cos(angle) - v[second] * std::sin(angle));
        out[1] = e.rope_mscale *
                 (v[second] * std::cos(angle) + v[first] * std::sin(angle));
      };
      double q[2], k[2];
      rotate(q_pe, q_pos, q);
      rotate(k_pe, k_pos, k);
      dot += q[0] * k[0] + q[1] * k[1];
    }
    return dot;
  };
  const double kv[2] = {e.kv_scale, -e.kv_scale};  // k_nope = value
  const double s0 = (e.q_scale * kv[0] + rope_dot(1, 0)) * e.softmax_scale;
  const double s1 = (e.q_scale * kv[1] + rope_dot(1, 1)) * e.softmax_scale;
  const double p0 = std::exp(s0) / (std::exp(s0) + std::exp(s1));
  const double out1 = p0 * kv[0] + (1 - p0) * kv[1];
  return {Normalised({2, 0, kv[0], 0}, 1e-12),
          Normalised({0, 2, out1, 0}, 1e-12)};
}

void ExpectRopeLogits(const DeepseekReference& ref, const RopeExpectation& e) {
  const std::vector<std::vector<float>> all = ref.AllLogits({0, 1});
  const std::vector<std::vector<double>> want = ExpectedRopeLogits(e);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_TRUE(Near(all[0], want[0])) << "position 0";
  EXPECT_TRUE(Near(all[1], want[1])) << "position 1";
}

// yarn with factor 4 and original_max_position_embeddings 64 on d = 4,
// theta = 100: correction_dim(32) = -0.497 and correction_dim(1) = 1.008, so
// low = 0, high = 2, ramp = [0, 0.5]: the first frequency stays 1, the second
// is 0.5 * 0.1 / 4 + 0.5 * 0.1 = 0.0625.
constexpr double kYarnSecondFreq = 0.0625;
// yarn_get_mscale(4, 1).
double MscaleOfFactor4() { return 0.1 * std::log(4.0) + 1; }

json Yarn(double mscale, double mscale_all_dim) {
  return {{"type", "yarn"},
          {"factor", 4.0},
          {"original_max_position_embeddings", 64},
          {"mscale", mscale},
          {"mscale_all_dim", mscale_all_dim}};
}

TEST_F(DeepseekReferenceTest, RopeByHandUsesDeinterleavedPairs) {
  const Checkpoint ck = RopeCheckpoint(RopeConfig());
  absl::StatusOr<DeepseekReference> ref = Load(ck);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ExpectRopeLogits(*ref, {});

  DeepseekAblation no_interleave;
  no_interleave.skip_rope_interleave = true;
  absl::StatusOr<DeepseekReference> ablated = Load(ck, no_interleave);
  ASSERT_TRUE(ablated.ok()) << ablated.status();
  RopeExpectation e;
  e.deepseek_pairs = false;
  ExpectRopeLogits(*ablated, e);
  EXPECT_GT(MaxAbsDiff(ref->Logits({0, 1}), ablated->Logits({0, 1})), 1e-2);
}

TEST_F(DeepseekReferenceTest, LoraNormsByHand) {
  const Checkpoint ck = RopeCheckpoint(RopeConfig());
  DeepseekAblation no_q_norm;
  no_q_norm.skip_q_a_layernorm = true;
  absl::StatusOr<DeepseekReference> ref = Load(ck, no_q_norm);
  ASSERT_TRUE(ref.ok()) << ref.status();
  RopeExpectation e;
  e.q_scale = 2;
  ExpectRopeLogits(*ref, e);

  DeepseekAblation no_kv_norm;
  no_kv_norm.skip_kv_a_layernorm = true;
  ref = Load(ck, no_kv_norm);
  ASSERT_TRUE(ref.ok()) << ref.status();
  e = {};
  e.kv_scale = 2;
  ExpectRopeLogits(*ref, e);
}

TEST_F(DeepseekReferenceTest, YarnFrequenciesAndRopeMscaleByHand) {
  json config = RopeConfig();
  config["rope_scaling"] = Yarn(/*mscale=*/1, /*mscale_all_dim=*/0);
  const Checkpoint ck = RopeCheckpoint(config);
  absl::StatusOr<DeepseekReference> ref = Load(ck);
  ASSERT_TRUE(ref.ok()) << ref.status();
  RopeExpectation e;
  e.inv_freq = {1.0, kYarnSecondFreq};
  e.rope_mscale = MscaleOfFactor4();  // mscale_all_dim 0 divides by 1
  ExpectRopeLogits(*ref, e);

  DeepseekAblation no_yarn;
  no_yarn.skip_yarn = true;
  ref = Load(ck, no_yarn);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ExpectRopeLogits(*ref, {});
}

TEST_F(DeepseekReferenceTest, YarnSoftmaxScaleByHand) {
  // DeepSeek-V3's setting: mscale == mscale_all_dim, so cos and sin are
  // unscaled and the softmax scale carries mscale^2.
  json config = RopeConfig();
  config["rope_scaling"] = Yarn(/*mscale=*/1, /*mscale_all_dim=*/1);
  config["rope_scaling"].erase("type");
  config["rope_scaling"]["rope_type"] = "yarn";
  const Checkpoint ck = RopeCheckpoint(config);
  absl::StatusOr<DeepseekReference> ref = Load(ck);
  ASSERT_TRUE(ref.ok()) << ref.status();
  RopeExpectation e;
  e.inv_freq = {1.0, kYarnSecondFreq};
  e.softmax_scale *= MscaleOfFactor4() * MscaleOfFactor4();
  ExpectRopeLogits(*ref, e);

  DeepseekAblation no_scale;
  no_scale.skip_yarn_softmax_scale = true;
  ref = Load(ck, no_scale);
  ASSERT_TRUE(ref.ok()) << ref.status();
  e.softmax_scale = 1.0 / std::sqrt(5.0);
  ExpectRopeLogits(*ref, e);
}

// ---------------------------------------------------------------------------
// Routing read off the logits. One MoE layer with E routed experts and
// hidden size E + 2: attention adds nothing (o_proj is zero), the gate sees
// x = e_0 (so its logits are the gate weights' first column), expert e adds
// weight_e * silu(1) to hidden dimension 1 + e, each shared expert adds
// silu(1) to the last one, and h[0] = 2 is the yardstick the final norm keeps
// in proportion.

json RoutingConfig(const char* architecture, int experts, int k) {
  return {{"architectures", json::array({architecture})},
          {"hidden_size", experts + 2},
          {"num_hidden_layers", 1},
          {"num_attention_heads", 1},
          {"vocab_size", experts + 2},
          {"kv_lora_rank", 1},
          {"qk_nope_head_dim", 1},
          {"qk_rope_head_dim", 2},
          {"v_head_dim", 1},
          {"moe_intermediate_size", 1},
          {"n_routed_experts", experts},
          {"num_experts_per_tok", k},
          {"rms_norm_eps", 1e-12}};
}

Checkpoint RoutingCheckpoint(const json& config,
                             const std::vector<double>& gate_logits,
                             const std::vector<double>& bias = {}) {
  Checkpoint ck = Zeroed(config);
  const int experts = config.at("n_routed_experts");
  const int h = experts + 2;
  const std::string p = "model.layers.0.";
  auto column = [&](int rows, int cols, int col, double v) {
    std::vector<double> m(rows * cols, 0.0);
    for (int r = 0; r < rows; ++r) m[r * cols + col] = v;
    return m;
  };
  std::vector<double> embed(h * h, 0.0);
  embed[0] = 2;
  ck.Set("model.embed_tokens.weight", embed);
  // post_attention_layernorm of [2, 0, ...] is [sqrt(h), 0, ...] times this.
  std::vector<double> post_norm(h, 1.0);
  post_norm[0] = 1.0 / std::sqrt(h);
  ck.Set(p + "post_attention_layernorm.weight", post_norm);
  std::vector<double> gate(experts * h, 0.0);
  for (int e = 0; e < experts; ++e) gate[e * h] = gate_logits[e];
  ck.Set(p + "mlp.gate.weight", gate);
  if (!bias.empty()) ck.Set(p + "mlp.gate.e_score_correction_bias", bias);
  for (int e = 0; e < experts; ++e) {
    const std::string x = absl::StrCat(p, "mlp.experts.", e, ".");
    ck.Set(x + "gate_proj.weight", column(1, h, 0, 1));
    ck.Set(x + "up_proj.weight", column(1, h, 0, 1));
    std::vector<double> down(h, 0.0);
    down[1 + e] = 1;
    ck.Set(x + "down_proj.weight", down);
  }
  const int shared = IntOr(config, "n_shared_experts", 0);
  if (shared > 0) {
    const std::string x = p + "mlp.shared_experts.";
    ck.Set(x + "gate_proj.weight", column(shared, h, 0, 1));
    ck.Set(x + "up_proj.weight", column(shared, h, 0, 1));
    std::vector<double> down(h * shared, 0.0);
    for (int j = 0; j < shared; ++j) down[(h - 1) * shared + j] = 1;
    ck.Set(x + "down_proj.weight", down);
  }
  std::vector<double> identity(h * h, 0.0);
  for (int i = 0; i < h; ++i) identity[i * h + i] = 1;
  ck.Set("lm_head.weight", identity);
  return ck;
}

// Every routed expert's weight for token 0 (0 when not chosen), and the
// shared experts' total weight.
struct RoutingWeights {
  std::vector<double> routed;
  double shared = 0;
};
RoutingWeights ReadRoutingWeights(const DeepseekReference& ref) {
  const std::vector<float> logits = ref.Logits({0});
  const int experts = static_cast<int>(logits.size()) - 2;
  const double unit = logits[0] / 2 * Silu(1.0);  // one expert at weight 1
  RoutingWeights w;
  for (int e = 0; e < experts; ++e) w.routed.push_back(logits[1 + e] / unit);
  w.shared = logits[experts + 1] / unit;
  return w;
}

void ExpectRouting(const DeepseekReference& ref, std::vector<int> chosen,
                   const std::vector<double>& weights, double shared = 0) {
  EXPECT_EQ(ref.RoutingOfLastToken({0}),
            std::vector<std::vector<int>>{std::move(chosen)});
  const RoutingWeights w = ReadRoutingWeights(ref);
  ASSERT_EQ(w.routed.size(), weights.size());
  for (size_t e = 0; e < weights.size(); ++e) {
    EXPECT_NEAR(w.routed[e], weights[e], kTolerance) << "expert " << e;
  }
  EXPECT_NEAR(w.shared, shared, kTolerance) << "shared experts";
}

TEST_F(DeepseekReferenceTest, GreedySoftmaxTakesTopScoresLowerIdOnTies) {
  json config = RoutingConfig(kV2, 4, 2);
  config["topk_method"] = "greedy";
  config["scoring_func"] = "softmax";
  const std::vector<double> logits = {1, 2, 2, 2};
  absl::StatusOr<DeepseekReference> ref =
      Load(RoutingCheckpoint(config, logits));
  ASSERT_TRUE(ref.ok()) << ref.status();
  const std::vector<double> p = Softmax(logits);
  ExpectRouting(*ref, {1, 2}, {0, p[1], p[2], 0});
}

TEST_F(DeepseekReferenceTest,
       GroupLimitedGreedyExcludesExpertsOutsideBestGroups) {
  // Groups {0..3} (max 5) and {4..7} (max 4.9); topk_group 1 keeps only the
  // first, so expert 4, second overall, is not chosen.
  json config = RoutingConfig(kV2, 8, 2);
  config["topk_method"] = "group_limited_greedy";
  config["scoring_func"] = "softmax";
  config["n_group"] = 2;
  config["topk_group"] = 1;
  const std::vector<double> logits = {5, 1, 2, 1.5, 4.9, 0, 0, 0};
  const Checkpoint ck = RoutingCheckpoint(config, logits);
  absl::StatusOr<DeepseekReference> ref = Load(ck);
  ASSERT_TRUE(ref.ok()) << ref.status();
  const std::vector<double> p = Softmax(logits);
  ExpectRouting(*ref, {0, 2}, {p[0], 0, p[2], 0, 0, 0, 0, 0});

  DeepseekAblation no_groups;
  no_groups.skip_group_limit = true;
  ref = Load(ck, no_groups);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ExpectRouting(*ref, {0, 4}, {p[0], 0, 0, 0, p[4], 0, 0, 0});

  config["topk_method"] = "greedy";
  ref = Load(RoutingCheckpoint(config, logits));
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(ref->RoutingOfLastToken({0}),
            (std::vector<std::vector<int>>{{0, 4}}));
}

TEST_F(DeepseekReferenceTest, GroupTiesGoToTheLowerGroup) {
  json config = RoutingConfig(kV2, 4, 2);
  config["topk_method"] = "group_limited_greedy";
  config["scoring_func"] = "softmax";
  config["n_group"] = 2;
  config["topk_group"] = 1;
  const std::vector<double> logits = {3, 0, 3, 2.9};  // both groups' max 3
  absl::StatusOr<DeepseekReference> ref =
      Load(RoutingCheckpoint(config, logits));
  ASSERT_TRUE(ref.ok()) << ref.status();
  const std::vector<double> p = Softmax(logits);
  ExpectRouting(*ref, {0, 1}, {p[0], p[1], 0, 0});
}

TEST_F(DeepseekReferenceTest, CorrectionBiasChoosesButUnbiasedScoresWeigh) {
  // Sigmoid scores 0.88, 0.73, 0.5, ...; the bias lifts expert 2 above
  // expert 1 for the choice, and its weight stays sigmoid(0).
  json config = RoutingConfig(kV3, 8, 2);
  config["topk_method"] = "noaux_tc";
  config["scoring_func"] = "sigmoid";
  config["norm_topk_prob"] = true;
  config["routed_scaling_factor"] = 2.5;
  const std::vector<double> logits = {2, 1, 0, -1, -1, -1, -1, -1};
  const Checkpoint ck =
      RoutingCheckpoint(config, logits, {0, 0, 1, 0, 0, 0, 0, 0});
  absl::StatusOr<DeepseekReference> ref = Load(ck);
  ASSERT_TRUE(ref.ok()) << ref.status();
  const double s0 = Sigmoid(2), s1 = Sigmoid(1), s2 = Sigmoid(0);
  ExpectRouting(*ref, {0, 2},
                {2.5 * s0 / (s0 + s2), 0, 2.5 * s2 / (s0 + s2), 0, 0, 0, 0, 0});

  DeepseekAblation no_bias;
  no_bias.skip_correction_bias = true;
  ref = Load(ck, no_bias);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ExpectRouting(*ref, {0, 1},
                {2.5 * s0 / (s0 + s1), 2.5 * s1 / (s0 + s1), 0, 0, 0, 0, 0, 0});

  DeepseekAblation no_scaling;
  no_scaling.skip_routed_scaling = true;
  ref = Load(ck, no_scaling);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ExpectRouting(*ref, {0, 2},
                {s0 / (s0 + s2), 0, s2 / (s0 + s2), 0, 0, 0, 0, 0});
}

TEST_F(DeepseekReferenceTest, NoauxTcRanksGroupsBySumOfTwoBest) {
  // Group {0..3}: 0.95 + 0.05 = 1.0; group {4..7}: 0.88 + 0.82 = 1.70. The
  // sum keeps the second group, the max (group_limited_greedy) the first,
  // plain top-k takes one from each.
  json config = RoutingConfig(kV3, 8, 2);
  config["topk_method"] = "noaux_tc";
  config["scoring_func"] = "sigmoid";
  config["n_group"] = 2;
  config["topk_group"] = 1;
  const std::vector<double> logits = {3, -3, -3, -3, 2, 1.5, -3, -3};
  const Checkpoint ck =
      RoutingCheckpoint(config, logits, std::vector<double>(8, 0.0));
  absl::StatusOr<DeepseekReference> ref = Load(ck);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ExpectRouting(*ref, {4, 5}, {0, 0, 0, 0, Sigmoid(2), Sigmoid(1.5), 0, 0});

  DeepseekAblation no_groups;
  no_groups.skip_group_limit = true;
  ref = Load(ck, no_groups);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ExpectRouting(*ref, {0, 4}, {Sigmoid(3), 0, 0, 0, Sigmoid(2), 0, 0, 0});

  config["topk_method"] = "group_limited_greedy";
  ref = Load(RoutingCheckpoint(config, logits));
  ASSERT_TRUE(ref.ok()) << ref.status();
  // Experts 1, 2 and 3 tie: the lowest id wins.
  ExpectRouting(*ref, {0, 1}, {Sigmoid(3), Sigmoid(-3), 0, 0, 0, 0, 0, 0});
}

TEST_F(DeepseekReferenceTest, RoutedScalingV2OnlyWithoutNormalisationV3Always) {
  const std::vector<double> logits = {1, 2, 3, 0};
  const std::vector<double> p = Softmax(logits);
  const double pair = p[1] + p[2];
  struct Case {
    const char* architecture;
    int k;
    bool norm_topk_prob;
    std::vector<double> weights;
  };
  const std::vector<Case> cases = {
      {kV2, 2, true, {0, p[1] / pair, p[2] / pair, 0}},
      {kV3, 2, true, {0, 2 * p[1] / pair, 2 * p[2] / pair, 0}},
      {kV2, 2, false, {0, 2 * p[1], 2 * p[2], 0}},
      {kV3, 2, false, {0, 2 * p[1], 2 * p[2], 0}},
      // One expert is never renormalised, so V2 takes its `else` branch.
      {kV2, 1, true, {0, 0, 2 * p[2], 0}},
      {kV3, 1, true, {0, 0, 2 * p[2], 0}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.architecture << " k=" << c.k
                                      << " norm=" << c.norm_topk_prob);
    json config = RoutingConfig(c.architecture, 4, c.k);
    config["topk_method"] = "greedy";
    config["scoring_func"] = "softmax";
    config["norm_topk_prob"] = c.norm_topk_prob;
    config["routed_scaling_factor"] = 2.0;
    absl::StatusOr<DeepseekReference> ref =
        Load(RoutingCheckpoint(config, logits));
    ASSERT_TRUE(ref.ok()) << ref.status();
    ExpectRouting(*ref, c.k == 1 ? std::vector<int>{2} : std::vector<int>{1, 2},
                  c.weights);
  }
}

TEST_F(DeepseekReferenceTest, SharedExpertsAddUnweighted) {
  json config = RoutingConfig(kV2, 4, 1);
  config["topk_method"] = "greedy";
  config["scoring_func"] = "softmax";
  config["n_shared_experts"] = 2;
  const std::vector<double> logits = {0, 1, 0, 0};
  const Checkpoint ck = RoutingCheckpoint(config, logits);
  absl::StatusOr<DeepseekReference> ref = Load(ck);
  ASSERT_TRUE(ref.ok()) << ref.status();
  const std::vector<double> p = Softmax(logits);
  ExpectRouting(*ref, {1}, {0, p[1], 0, 0}, /*shared=*/2);

  DeepseekAblation no_shared;
  no_shared.skip_shared_experts = true;
  ref = Load(ck, no_shared);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ExpectRouting(*ref, {1}, {0, p[1], 0, 0}, /*shared=*/0);
}

// ---------------------------------------------------------------------------
// A random model with every piece: q LoRA, yarn with both mscales, noaux_tc
// groups, a shared expert, routed scaling, dense and MoE layers.

json RandomConfig() {
  return {{"architectures", json::array({kV3})},
          {"hidden_size", 16},
          {"num_hidden_layers", 4},
          {"num_attention_heads", 2},
          {"vocab_size", 24},
          {"intermediate_size", 20},
          {"moe_intermediate_size", 6},
          {"n_routed_experts", 8},
          {"n_shared_experts", 1},
          {"num_experts_per_tok", 2},
          {"first_k_dense_replace", 1},
          {"moe_layer_freq", 2},
          {"n_group", 4},
          {"topk_group", 2},
          {"topk_method", "noaux_tc"},
          {"scoring_func", "sigmoid"},
          {"norm_topk_prob", true},
          {"routed_scaling_factor", 2.5},
          {"q_lora_rank", 8},
          {"kv_lora_rank", 6},
          {"qk_nope_head_dim", 4},
          {"qk_rope_head_dim", 8},
          {"v_head_dim", 4},
          {"max_position_embeddings", 256},
          {"rope_scaling",
           {{"type", "yarn"},
            {"factor", 4.0},
            {"original_max_position_embeddings", 64},
            {"beta_fast", 32},
            {"beta_slow", 1},
            {"mscale", 1.0},
            {"mscale_all_dim", 0.5}}}};
}

std::vector<int32_t> Tokens() { return {3, 17, 5, 9, 22, 1}; }

TEST_F(DeepseekReferenceTest, EntryPointsAgree) {
  const std::vector<int32_t> tokens = Tokens();
  absl::StatusOr<DeepseekReference> ref = Load(Random(RandomConfig(), 1));
  ASSERT_TRUE(ref.ok()) << ref.status();
  const std::vector<std::vector<float>> all = ref->AllLogits(tokens);
  ASSERT_EQ(all.size(), tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::vector<int32_t> prefix(tokens.begin(), tokens.begin() + i + 1);
    EXPECT_LE(MaxAbsDiff(all[i], ref->Logits(prefix)), 1e-6) << "row " << i;
  }
  // Layer 0 is below first_k_dense_replace, 1 and 3 are off moe_layer_freq.
  const std::vector<std::vector<int>> routing = ref->RoutingOfLastToken(tokens);
  ASSERT_EQ(routing.size(), 4u);
  EXPECT_TRUE(routing[0].empty());
  EXPECT_TRUE(routing[1].empty());
  EXPECT_TRUE(routing[3].empty());
  ASSERT_EQ(routing[2].size(), 2u);
  EXPECT_LT(routing[2][0], routing[2][1]);

  std::vector<int32_t> seq = {4, 2};
  std::vector<int32_t> want;
  for (int s = 0; s < 3; ++s) {
    const std::vector<float> logits = ref->Logits(seq);
    want.push_back(static_cast<int32_t>(
        std::max_element(logits.begin(), logits.end()) - logits.begin()));
    seq.push_back(want.back());
  }
  EXPECT_EQ(ref->Greedy({4, 2}, 3), want);
}

TEST_F(DeepseekReferenceTest, GreedyTiesGoToTheLowestId) {
  // All-zero weights: every logit is 0.
  absl::StatusOr<DeepseekReference> ref = Load(Zeroed(RandomConfig()));
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(ref->Greedy({7, 3}, 3), (std::vector<int32_t>{0, 0, 0}));
}

TEST_F(DeepseekReferenceTest, ShardedBf16CheckpointHoldsTheSameModel) {
  const std::vector<int32_t> tokens = Tokens();
  const Checkpoint ck = Random(RandomConfig(), 2);
  absl::StatusOr<DeepseekReference> single = DeepseekReference::Load(Write(ck));
  ASSERT_TRUE(single.ok()) << single.status();
  absl::StatusOr<DeepseekReference> sharded =
      DeepseekReference::Load(Write(ck, /*shards=*/3, DType::kBF16));
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  EXPECT_EQ(single->Logits(tokens), sharded->Logits(tokens));
}

TEST_F(DeepseekReferenceTest, YarnAndPlainRopeDiffer) {
  const std::vector<int32_t> tokens = Tokens();
  const Checkpoint yarn = Random(RandomConfig(), 3);
  Checkpoint plain = yarn;
  plain.config.erase("rope_scaling");
  absl::StatusOr<DeepseekReference> yarn_ref = Load(yarn);
  ASSERT_TRUE(yarn_ref.ok()) << yarn_ref.status();
  absl::StatusOr<DeepseekReference> plain_ref = Load(plain);
  ASSERT_TRUE(plain_ref.ok()) << plain_ref.status();
  EXPECT_GT(MaxAbsDiff(yarn_ref->Logits(tokens), plain_ref->Logits(tokens)),
            1e-3);
  // With both yarn pieces left out, yarn is plain RoPE.
  DeepseekAblation no_yarn;
  no_yarn.skip_yarn = true;
  no_yarn.skip_yarn_softmax_scale = true;
  absl::StatusOr<DeepseekReference> ablated = Load(yarn, no_yarn);
  ASSERT_TRUE(ablated.ok()) << ablated.status();
  EXPECT_EQ(ablated->Logits(tokens), plain_ref->Logits(tokens));
}

TEST_F(DeepseekReferenceTest, EachAblationChangesTheLogits) {
  const std::vector<int32_t> tokens = Tokens();
  const Checkpoint ck = Random(RandomConfig(), 4);
  const std::string dir = Write(ck);
  absl::StatusOr<DeepseekReference> ref = DeepseekReference::Load(dir);
  ASSERT_TRUE(ref.ok()) << ref.status();
  const std::vector<float> want = ref->Logits(tokens);
  const std::vector<std::pair<const char*, bool DeepseekAblation::*>> pieces = {
      {"yarn", &DeepseekAblation::skip_yarn},
      {"yarn softmax scale", &DeepseekAblation::skip_yarn_softmax_scale},
      {"rope interleave", &DeepseekAblation::skip_rope_interleave},
      {"routed scaling", &DeepseekAblation::skip_routed_scaling},
      {"shared experts", &DeepseekAblation::skip_shared_experts},
      {"kv_a_layernorm", &DeepseekAblation::skip_kv_a_layernorm},
      {"q_a_layernorm", &DeepseekAblation::skip_q_a_layernorm}};
  for (const auto& [what, field] : pieces) {
    DeepseekAblation ablation;
    ablation.*field = true;
    absl::StatusOr<DeepseekReference> ablated =
        DeepseekReference::Load(dir, ablation);
    ASSERT_TRUE(ablated.ok()) << ablated.status();
    EXPECT_GT(MaxAbsDiff(ablated->Logits(tokens), want), 1e-3) << what;
  }
}

// ---------------------------------------------------------------------------
// Load errors.

TEST_F(DeepseekReferenceTest, MissingTensorIsNotFoundNamingIt) {
  const std::string name = "model.layers.2.mlp.experts.5.up_proj.weight";
  Checkpoint ck = Zeroed(RandomConfig());
  ASSERT_EQ(ck.tensors.erase(name), 1u);
  absl::StatusOr<DeepseekReference> ref = Load(ck);
  EXPECT_EQ(ref.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(ref.status().message().find(name), std::string::npos)
      << ref.status();

  const std::string bias = "model.layers.2.mlp.gate.e_score_correction_bias";
  ck = Zeroed(RandomConfig());
  ASSERT_EQ(ck.tensors.erase(bias), 1u);
  ref = DeepseekReference::Load(Write(ck, /*shards=*/2));
  EXPECT_EQ(ref.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(ref.status().message().find(bias), std::string::npos)
      << ref.status();
}

TEST_F(DeepseekReferenceTest, WrongShapeIsInvalidArgumentNamingIt) {
  const std::string name = "model.layers.1.self_attn.kv_b_proj.weight";
  Checkpoint ck = Zeroed(RandomConfig());
  ck.tensors[name] = {{2 * (4 + 4), 5}, std::vector<float>(80, 0.0f)};
  absl::StatusOr<DeepseekReference> ref = Load(ck);
  EXPECT_EQ(ref.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ref.status().message().find(name), std::string::npos)
      << ref.status();
}

TEST_F(DeepseekReferenceTest, BadConfigIsInvalidArgumentNamingTheField) {
  struct Case {
    const char* field;
    json value;  // null: removed
  };
  const std::vector<Case> cases = {
      {"architectures", json::array({"LlamaForCausalLM"})},
      {"kv_lora_rank", nullptr},
      {"qk_rope_head_dim", 3},
      {"n_group", 3},
      {"topk_method", "random"},
      {"scoring_func", "relu"},
      {"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    Checkpoint ck = Zeroed(RandomConfig());
    if (c.value.is_null()) {
      ck.config.erase(c.field);
    } else {
      ck.config[c.field] = c.value;
    }
    absl::StatusOr<DeepseekReference> ref = Load(ck);
    EXPECT_EQ(ref.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(ref.status().message().find(c.field), std::string::npos)
        << ref.status();
  }
}

}  // namespace
}  // namespace moe
