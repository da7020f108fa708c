// Tokenizer::Load (which files, in which order) and StreamingDetokenizer.
#include "core/text/tokenizer.h"

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/text/hf_tokenizer.h"
#include "core/text/sentencepiece_tokenizer.h"
#include "core/text/utf8.h"

namespace moe {
namespace {

// Largest tokenizer file read (DeepSeek-V3's tokenizer.json is ~8 MB).
constexpr std::uintmax_t kMaxFileBytes = 256u << 20;

absl::StatusOr<nlohmann::json> ReadJson(const std::filesystem::path& path) {
  std::error_code error;
  const std::uintmax_t size = std::filesystem::file_size(path, error);
  if (error) {
    return absl::NotFoundError(absl::StrCat(path.string(), ": cannot read (",
                                            error.message(), ")"));
  }
  if (size > kMaxFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        path.string(), ": ", size, " bytes is larger than the ", kMaxFileBytes,
        " a tokenizer file may have"));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json json = nlohmann::json::parse(text.str(), nullptr, false);
  if (json.is_discarded()) {
    // Parse again for the message naming where it broke.
    try {
      const nlohmann::json reparsed = nlohmann::json::parse(text.str());
      (void)reparsed;
    } catch (const nlohmann::json::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(path.string(), ": not valid JSON: ", e.what()));
    }
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not valid JSON"));
  }
  return json;
}

absl::Status InFile(const std::filesystem::path& dir, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(dir.string(), "/", s.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(
    absl::string_view model_dir) {
  const std::filesystem::path dir{std::string(model_dir)};
  std::error_code error;
  nlohmann::json config;
  if (std::filesystem::exists(dir / "tokenizer_config.json", error)) {
    absl::StatusOr<nlohmann::json> parsed = ReadJson(dir / "tokenizer_config.json");
    if (!parsed.ok()) return parsed.status();
    config = *std::move(parsed);
  }
  if (std::filesystem::exists(dir / "tokenizer.json", error)) {
    absl::StatusOr<nlohmann::json> json = ReadJson(dir / "tokenizer.json");
    if (!json.ok()) return json.status();
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = text::MakeHfTokenizer(*json, config);
    if (!t.ok()) return InFile(dir, t.status());
    return t;
  }
  if (std::filesystem::exists(dir / "tokenizer.model", error)) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t =
        text::MakeSentencePieceTokenizer((dir / "tokenizer.model").string(), config);
    if (!t.ok() && absl::StartsWith(t.status().message(), "tokenizer_config")) {
      return InFile(dir, t.status());
    }
    return t;
  }
  return absl::NotFoundError(absl::StrCat(
      dir.string(), ": no tokenizer.json or tokenizer.model"));
}

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer,
                                           bool skip_special_tokens,
                                           std::vector<int32_t> prompt_ids)
    : tokenizer_(tokenizer),
      skip_special_tokens_(skip_special_tokens),
      ids_(std::move(prompt_ids)) {
  // A few ids of context before the first new one, so that a window never
  // starts a word (SentencePiece drops a window's leading space).
  constexpr size_t kContext = 5;
  read_offset_ = ids_.size();
  prefix_offset_ = ids_.size() > kContext ? ids_.size() - kContext : 0;
}

namespace {

// A byte-fallback token ("<0x9C>"). A run of them decodes as a whole: when
// the run is not valid UTF-8, every byte of it becomes U+FFFD (Hugging
// Face's ByteFallback decoder), so a later byte can change how the earlier
// ones decode ("<0x64>" is "d" alone, "\uFFFD\uFFFD" followed by "<0x9C>").
bool IsByteToken(const std::string& token) {
  return token.size() == 6 && token[0] == '<' && token[1] == '0' &&
         token[2] == 'x' && token[5] == '>' && std::isxdigit(token[3]) &&
         std::isxdigit(token[4]);
}

}  // namespace

absl::StatusOr<std::string> StreamingDetokenizer::Push(int32_t id) {
  ids_.push_back(id);
  // Nothing of an unfinished byte run is final yet.
  if (IsByteToken(tokenizer_.IdToToken(id))) return std::string();
  absl::StatusOr<Window> window = DecodeWindow();
  if (!window.ok()) return window.status();
  const std::string& prefix = window->prefix;
  const std::string& text = window->text;
  // Hold back while the new text ends in an incomplete character, or has
  // not grown past the previous window (a byte still to be completed).
  if (text.size() <= prefix.size() || text::EndsWithReplacement(text) ||
      text.compare(0, prefix.size(), prefix) != 0) {
    return std::string();
  }
  std::string piece = text.substr(prefix.size());
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return piece;
}

absl::StatusOr<StreamingDetokenizer::Window>
StreamingDetokenizer::DecodeWindow() const {
  const absl::Span<const int32_t> all(ids_);
  Window window;
  absl::StatusOr<std::string> prefix = tokenizer_.Decode(
      all.subspan(prefix_offset_, read_offset_ - prefix_offset_),
      skip_special_tokens_);
  if (!prefix.ok()) return prefix.status();
  window.prefix = *std::move(prefix);
  absl::StatusOr<std::string> text =
      tokenizer_.Decode(all.subspan(prefix_offset_), skip_special_tokens_);
  if (!text.ok()) return text.status();
  window.text = *std::move(text);
  return window;
}

absl::StatusOr<std::string> StreamingDetokenizer::Finish() {
  if (read_offset_ == ids_.size()) return std::string();
  absl::StatusOr<Window> window = DecodeWindow();
  if (!window.ok()) return window.status();
  read_offset_ = ids_.size();
  if (window->text.size() <= window->prefix.size()) return std::string();
  // Whole characters even if the window decoded differently from what was
  // already sent (the text goes into proto3 strings, which must be UTF-8).
  return text::LossyUtf8(window->text.substr(window->prefix.size()));
}

}  // namespace moe
