// SequenceState: prefill chunks, stop conditions, and resuming a sequence
// elsewhere after some tokens (what a decode server does after a transfer).
#include "core/sequence_state.h"

#include <vector>

#include "gtest/gtest.h"

namespace moe {
namespace {

ModelConfig Config() {
  ModelConfig c;
  c.vocab_size = 40;
  c.eos_token_ids = {2};
  return c;
}

// Logits favouring `token` a little, so that sampling at temperature 1
// draws varied tokens.
std::vector<float> Logits(int step) {
  std::vector<float> logits(40, 0.0f);
  logits[(step * 7) % 40] = 1.5f;
  return logits;
}

TEST(SequenceStateTest, PrefillChunksCoverThePromptOnce) {
  const ModelConfig config = Config();
  GenerationRequest request;
  request.prompt = {5, 6, 7, 8, 9};
  SequenceState state(&request, &config);
  EXPECT_EQ(state.TakePrefillChunk(2).size(), 2u);
  EXPECT_EQ(state.TakePrefillChunk(10).size(), 3u);
  EXPECT_TRUE(state.prefill_done());
  EXPECT_TRUE(state.TakePrefillChunk(4).empty());
}

TEST(SequenceStateTest, ResumedSequenceSamplesWhatTheOriginalWould) {
  const ModelConfig config = Config();
  GenerationRequest request;
  request.prompt = {5, 6, 7};
  request.max_tokens = 30;
  request.ignore_eos = true;
  request.sampling.temperature = 1.0f;
  request.sampling.seed = 99;
  request.sampling.repetition_penalty = 1.3f;
  SequenceState original(&request, &config);
  original.TakePrefillChunk(3);
  for (int step = 0; step < 30; ++step) {
    std::vector<float> logits = Logits(step);
    original.Advance(absl::MakeSpan(logits));
  }
  ASSERT_TRUE(original.done());
  for (int moved_after : {1, 7, 29}) {
    SequenceState resumed(&request, &config);
    resumed.Resume(absl::MakeConstSpan(original.output()).subspan(0, moved_after));
    EXPECT_TRUE(resumed.prefill_done());
    for (int step = moved_after; step < 30; ++step) {
      ASSERT_FALSE(resumed.done()) << moved_after;
      std::vector<float> logits = Logits(step);
      resumed.Advance(absl::MakeSpan(logits));
    }
    EXPECT_EQ(resumed.output(), original.output()) << "moved after " << moved_after;
    EXPECT_EQ(resumed.finish(), FinishReason::kLength);
  }
}

TEST(SequenceStateTest, ResumeAppliesTheStopConditions) {
  const ModelConfig config = Config();
  GenerationRequest request;
  request.prompt = {5};
  request.max_tokens = 4;
  {
    SequenceState state(&request, &config);
    const std::vector<int32_t> eos = {2};
    state.Resume(eos);
    EXPECT_TRUE(state.done());
    EXPECT_EQ(state.finish(), FinishReason::kStop);
  }
  {
    SequenceState state(&request, &config);
    const std::vector<int32_t> four = {9, 10, 11, 12};
    state.Resume(four);
    EXPECT_TRUE(state.done());
    EXPECT_EQ(state.finish(), FinishReason::kLength);
  }
  {
    SequenceState state(&request, &config);
    const std::vector<int32_t> one = {9};
    state.Resume(one);
    EXPECT_FALSE(state.done());
    EXPECT_EQ(state.DecodeInput()[0], 9);
  }
}

}  // namespace
}  // namespace moe
