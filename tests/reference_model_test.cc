// Validates the plain reference model (tests/reference_model.h) against the
// reference fixtures, which are ground truth (tests/data/fixtures/README.md),
// before it is trusted to check the engine on generated models.
#include "tests/reference_model.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace moe::testing {
namespace {

constexpr double kLogitTolerance = 2e-3;

class ReferenceFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceFixtureTest, TeacherForcedLogitsAndTokensMatch) {
  const std::string dir = FixtureDir(GetParam());
  absl::StatusOr<ReferenceModel> model = ReferenceModel::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<std::vector<FixtureCase>> cases = LoadFixtureCases(dir);
  ASSERT_TRUE(cases.ok()) << cases.status();
  ASSERT_FALSE(cases->empty());

  for (size_t c = 0; c < cases->size(); ++c) {
    const FixtureCase& fc = (*cases)[c];
    ASSERT_FALSE(fc.steps.empty());
    // One causal forward over the prompt and the generated tokens gives the
    // teacher-forced logits of every step.
    const std::vector<std::vector<float>> all =
        model->AllLogits(fc.TeacherForcedSequence());
    for (size_t s = 0; s < fc.steps.size(); ++s) {
      SCOPED_TRACE(::testing::Message() << "case " << c << " step " << s);
      const std::vector<float>& logits = all[fc.prompt.size() - 1 + s];
      EXPECT_EQ(ArgMax(logits), fc.steps[s].token);
      EXPECT_TRUE(LogitsNear(logits, fc.steps[s].logits, kLogitTolerance));
    }
  }
}

TEST_P(ReferenceFixtureTest, LastPositionLogitsEqualAllLogitsRow) {
  // Logits() recomputes the prefix on its own; it must agree with the row of
  // the longer forward, i.e. attention is causal.
  const std::string dir = FixtureDir(GetParam());
  absl::StatusOr<ReferenceModel> model = ReferenceModel::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<std::vector<FixtureCase>> cases = LoadFixtureCases(dir);
  ASSERT_TRUE(cases.ok()) << cases.status();
  const FixtureCase& fc = cases->front();
  EXPECT_TRUE(LogitsNear(model->Logits(fc.prompt), fc.steps[0].logits,
                         kLogitTolerance));
  std::vector<int32_t> prefix = fc.prompt;
  prefix.push_back(fc.steps[0].token);
  EXPECT_TRUE(
      LogitsNear(model->Logits(prefix), fc.steps[1].logits, kLogitTolerance));
}

TEST_P(ReferenceFixtureTest, GreedyReproducesEveryCase) {
  const std::string dir = FixtureDir(GetParam());
  absl::StatusOr<ReferenceModel> model = ReferenceModel::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<std::vector<FixtureCase>> cases = LoadFixtureCases(dir);
  ASSERT_TRUE(cases.ok()) << cases.status();
  for (size_t c = 0; c < cases->size(); ++c) {
    const FixtureCase& fc = (*cases)[c];
    EXPECT_EQ(model->Greedy(fc.prompt, static_cast<int>(fc.steps.size())),
              fc.Tokens())
        << "case " << c;
  }
}

TEST_P(ReferenceFixtureTest, PromptRoutingOfLastTokenMatches) {
  const std::string dir = FixtureDir(GetParam());
  absl::StatusOr<ReferenceModel> model = ReferenceModel::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<std::vector<FixtureCase>> cases = LoadFixtureCases(dir);
  ASSERT_TRUE(cases.ok()) << cases.status();
  for (size_t c = 0; c < cases->size(); ++c) {
    const FixtureCase& fc = (*cases)[c];
    ASSERT_EQ(static_cast<int>(fc.prompt_routing_last_token.size()),
              model->config().num_layers);
    const std::vector<std::vector<int>> routing =
        model->RoutingOfLastToken(fc.prompt);
    EXPECT_EQ(routing, fc.prompt_routing_last_token) << "case " << c;
    for (int l = 0; l < model->config().num_layers; ++l) {
      // null in the fixture exactly where the config has a dense layer.
      EXPECT_EQ(fc.prompt_routing_last_token[l].empty(),
                !model->config().IsMoeLayer(l))
          << "case " << c << " layer " << l;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ReferenceFixtureTest,
                         ::testing::Values("tiny-mixtral", "tiny-qwen2-moe"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& ch : name) {
                             if (ch == '-') ch = '_';
                           }
                           return name;
                         });

// The fixture comparison is sharp enough to notice a missing piece: leaving
// one out moves the logits far beyond the tolerance.
struct AblationCase {
  std::string fixture;
  ReferenceAblation ablation;
  std::string what;
};

TEST(ReferenceAblationTest, LeavingOutAPieceBreaksTheFixture) {
  ReferenceAblation flip_norm;
  flip_norm.flip_norm_topk_prob = true;
  ReferenceAblation no_shared_gate;
  no_shared_gate.skip_shared_expert_gate = true;
  const std::vector<AblationCase> ablations = {
      {"tiny-mixtral", flip_norm, "top-k renormalisation"},
      {"tiny-qwen2-moe", flip_norm, "top-k renormalisation"},
      {"tiny-qwen2-moe", no_shared_gate, "shared expert gate"},
  };
  for (const AblationCase& a : ablations) {
    SCOPED_TRACE(a.fixture + " without " + a.what);
    const std::string dir = FixtureDir(a.fixture);
    absl::StatusOr<ReferenceModel> model =
        ReferenceModel::Load(dir, a.ablation);
    ASSERT_TRUE(model.ok()) << model.status();
    absl::StatusOr<std::vector<FixtureCase>> cases = LoadFixtureCases(dir);
    ASSERT_TRUE(cases.ok()) << cases.status();
    const FixtureCase& fc = cases->front();
    EXPECT_GT(MaxAbsDiff(model->Logits(fc.prompt), fc.steps[0].logits),
              10 * kLogitTolerance);
  }
}

TEST(ReferenceModelTest, LoadFailsOnMissingDirectory) {
  EXPECT_FALSE(ReferenceModel::Load(TestDataDir() + "/no-such-model").ok());
}

}  // namespace
}  // namespace moe::testing
