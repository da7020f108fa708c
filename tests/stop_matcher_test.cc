#include "gateway/http/stop_matcher.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace moe {
namespace {

// Feeds `pieces` and returns everything the matcher let through.
std::string FeedAll(StopMatcher& matcher, const std::vector<std::string>& pieces) {
  std::string out;
  for (const std::string& piece : pieces) {
    out += matcher.Feed(piece);
    if (matcher.stopped()) return out;
  }
  return out + matcher.Finish();
}

TEST(StopMatcherTest, NoStopsPassesEverythingThrough) {
  StopMatcher matcher({});
  EXPECT_TRUE(matcher.empty());
  EXPECT_EQ(matcher.Feed("abc"), "abc");
  EXPECT_EQ(matcher.Finish(), "");
  EXPECT_FALSE(matcher.stopped());
}

TEST(StopMatcherTest, StopInsideOnePieceEndsTheTextBeforeIt) {
  StopMatcher matcher({"END"});
  EXPECT_EQ(matcher.Feed("hello END world"), "hello ");
  EXPECT_TRUE(matcher.stopped());
  EXPECT_EQ(matcher.Feed("more"), "");
  EXPECT_EQ(matcher.Finish(), "");
}

TEST(StopMatcherTest, StopAcrossPiecesIsFoundAndHeldBack) {
  StopMatcher matcher({"stop here"});
  EXPECT_EQ(matcher.Feed("go on st"), "go on ");  // "st" held back
  EXPECT_EQ(matcher.Feed("op h"), "");
  EXPECT_EQ(matcher.Feed("ere and after"), "");
  EXPECT_TRUE(matcher.stopped());
}

TEST(StopMatcherTest, FalseStartIsReleased) {
  StopMatcher matcher({"abc"});
  EXPECT_EQ(matcher.Feed("xab"), "x");
  EXPECT_EQ(matcher.Feed("d"), "abd");
  EXPECT_EQ(matcher.Feed("ab"), "");
  EXPECT_EQ(matcher.Finish(), "ab");
  EXPECT_FALSE(matcher.stopped());
}

TEST(StopMatcherTest, EarliestOfSeveralStopsWins) {
  StopMatcher matcher({"world", "lo w"});
  EXPECT_EQ(FeedAll(matcher, {"hel", "lo wor", "ld"}), "hel");
  StopMatcher other({"zz", "b"});
  EXPECT_EQ(FeedAll(other, {"aaz", "b"}), "aaz");
}

TEST(StopMatcherTest, EveryCharacterSplitGivesTheSameText) {
  const std::string text = "The capital of France is Paris. It is big.";
  for (const std::string stop : {"Paris", "is", ".", "big.", "absent"}) {
    const size_t at = text.find(stop);
    const std::string want = at == std::string::npos ? text : text.substr(0, at);
    for (size_t split = 0; split <= text.size(); ++split) {
      StopMatcher matcher({stop});
      EXPECT_EQ(FeedAll(matcher, {text.substr(0, split), text.substr(split)}), want)
          << stop << " split at " << split;
    }
    StopMatcher bytewise({stop});
    std::vector<std::string> pieces;
    for (char c : text) pieces.push_back(std::string(1, c));
    EXPECT_EQ(FeedAll(bytewise, pieces), want) << stop;
  }
}

TEST(StopMatcherTest, HeldBackTextKeepsWholeUtf8) {
  // "é" is two bytes; a stop starting with it is held back whole.
  StopMatcher matcher({"\xc3\xa9t\xc3\xa9"});
  EXPECT_EQ(matcher.Feed("caf\xc3\xa9"), "caf");
  EXPECT_EQ(matcher.Feed(" ok"), "\xc3\xa9 ok");
  EXPECT_EQ(matcher.Finish(), "");
}

TEST(StopMatcherTest, EmptyStopStringsAreIgnored) {
  StopMatcher matcher({"", ""});
  EXPECT_TRUE(matcher.empty());
  EXPECT_EQ(matcher.Feed("text"), "text");
}

}  // namespace
}  // namespace moe
