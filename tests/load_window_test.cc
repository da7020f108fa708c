// Tests of router/load_window.h: the tokens of the last W seconds from
// cumulative samples, what is kept, and the start of a young window.
#include "router/load_window.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::ElementsAre;

LayerExpertCounts Counts(std::vector<int64_t> layer0) { return {layer0}; }

absl::Time At(int seconds) { return absl::UnixEpoch() + absl::Seconds(seconds); }

TEST(LoadWindowTest, TokensAreThoseSinceTheNewestSampleAtTheWindowStart) {
  LoadWindow window(absl::Seconds(60));
  window.Record(At(0), Counts({0, 0, 0}));
  window.Record(At(30), Counts({100, 0, 0}));   // expert 0 hot first
  window.Record(At(70), Counts({110, 50, 0}));  // then expert 1
  absl::Duration covered;
  // At 100 the window starts at 40: the newest sample at or before it is
  // the one of 30.
  EXPECT_THAT(window.Tokens(At(100), Counts({120, 90, 5}), &covered)[0],
              ElementsAre(20, 90, 5));
  EXPECT_EQ(covered, absl::Seconds(70));
  // At 140 the window starts at 80: the sample of 70.
  EXPECT_THAT(window.Tokens(At(140), Counts({120, 90, 5}), &covered)[0],
              ElementsAre(10, 40, 5));
  EXPECT_EQ(covered, absl::Seconds(70));
}

TEST(LoadWindowTest, AYoungWindowStartsAtTheFirstSample) {
  LoadWindow window(absl::Seconds(60));
  absl::Duration covered;
  EXPECT_THAT(window.Tokens(At(5), Counts({3, 4}), &covered)[0],
              ElementsAre(3, 4));
  EXPECT_EQ(covered, absl::ZeroDuration());
  window.Record(At(10), Counts({1, 1}));
  EXPECT_THAT(window.Tokens(At(20), Counts({3, 4}), &covered)[0],
              ElementsAre(2, 3));
  EXPECT_EQ(covered, absl::Seconds(10));
}

TEST(LoadWindowTest, OnlyTheSamplesAWindowCanStillNeedAreKept) {
  LoadWindow window(absl::Seconds(10));
  for (int t = 0; t <= 100; ++t) window.Record(At(t), Counts({t}));
  // Samples 90..100: 90 is the newest at or before 100 - 10.
  EXPECT_EQ(window.samples(), 11u);
  absl::Duration covered;
  EXPECT_THAT(window.Tokens(At(100), Counts({100}), &covered)[0],
              ElementsAre(10));
}

TEST(LoadWindowTest, ACounterThatWentBackCountsAsNoTokens) {
  LoadWindow window(absl::Seconds(10));
  window.Record(At(0), Counts({50, 5}));
  absl::Duration covered;
  EXPECT_THAT(window.Tokens(At(5), Counts({40, 9}), &covered)[0],
              ElementsAre(0, 4));
}

}  // namespace
}  // namespace moe
