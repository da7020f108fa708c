// tokenizer.json pre-tokenizers: ByteLevel, Split, Metaspace, Digits,
// Whitespace, WhitespaceSplit, Punctuation, Sequence; and GPT-2's byte
// table.
#include <array>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/text/regex.h"
#include "core/text/tokenizer_pipeline.h"
#include "core/text/utf8.h"

namespace moe::text {
namespace {

// GPT-2's pattern (ByteLevel with use_regex).
constexpr char kGpt2Pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|"
    "\\s+(?!\\S)|\\s+";

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious,
                      kMergedWithNext, kContiguous };

// Splits `text` at the matches of `pattern` the way `behavior` says
// (tokenizers' SplitDelimiterBehavior); `invert`: the matches are the
// pieces and the rest the delimiters.
void SplitWith(const Regex& pattern, Behavior behavior, bool invert,
               const std::string& text, std::vector<std::string>& out) {
  // (begin, end, is_match) spans covering the text.
  std::vector<std::tuple<size_t, size_t, bool>> spans;
  size_t at = 0;
  for (const auto& [begin, end] : pattern.FindAll(text)) {
    if (begin > at) spans.emplace_back(at, begin, invert);
    spans.emplace_back(begin, end, !invert);
    at = end;
  }
  if (at < text.size()) spans.emplace_back(at, text.size(), invert);
  std::vector<std::string> pieces;
  bool previous_was_match = false;
  bool pending_merge_next = false;
  for (const auto& [begin, end, delimiter] : spans) {
    std::string piece = text.substr(begin, end - begin);
    switch (behavior) {
      case Behavior::kRemoved:
        if (!delimiter) pieces.push_back(std::move(piece));
        break;
      case Behavior::kIsolated:
        pieces.push_back(std::move(piece));
        break;
      case Behavior::kMergedWithPrevious:
        if (delimiter && !pieces.empty() && !previous_was_match) {
          pieces.back() += piece;
        } else {
          pieces.push_back(std::move(piece));
        }
        break;
      case Behavior::kMergedWithNext:
        if (pending_merge_next) {
          pieces.back() += piece;
        } else {
          pieces.push_back(std::move(piece));
        }
        pending_merge_next = delimiter;
        break;
      case Behavior::kContiguous:
        if (delimiter && previous_was_match && !pieces.empty()) {
          pieces.back() += piece;
        } else {
          pieces.push_back(std::move(piece));
        }
        break;
    }
    previous_was_match = delimiter;
  }
  for (std::string& p : pieces) {
    if (!p.empty()) out.push_back(std::move(p));
  }
}

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(std::shared_ptr<const Regex> pattern, Behavior behavior,
                    bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void Split(std::vector<std::string>& pieces, bool) const override {
    std::vector<std::string> out;
    for (const std::string& piece : pieces) {
      SplitWith(*pattern_, behavior_, invert_, piece, out);
    }
    pieces = std::move(out);
  }

 private:
  std::shared_ptr<const Regex> pattern_;
  Behavior behavior_;
  bool invert_;
};

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, std::shared_ptr<const Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  void Split(std::vector<std::string>& pieces, bool) const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < pieces.size(); ++i) {
      std::string piece = pieces[i];
      if (add_prefix_space_ && i == 0 && !piece.empty() && piece[0] != ' ') {
        piece.insert(piece.begin(), ' ');
      }
      if (regex_ != nullptr) {
        std::vector<std::string> split;
        SplitWith(*regex_, Behavior::kIsolated, false, piece, split);
        for (const std::string& s : split) out.push_back(BytesToUnicodeText(s));
      } else {
        out.push_back(BytesToUnicodeText(piece));
      }
    }
    pieces = std::move(out);
  }

 private:
  bool add_prefix_space_;
  std::shared_ptr<const Regex> regex_;
};

class Metaspace final : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  Metaspace(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)), prepend_(prepend), split_(split) {}
  void Split(std::vector<std::string>& pieces, bool first) const override {
    std::vector<std::string> out;
    for (const std::string& original : pieces) {
      std::string piece = absl::StrReplaceAll(original, {{" ", replacement_}});
      const bool add = prepend_ == Prepend::kAlways ||
                       (prepend_ == Prepend::kFirst && first);
      if (add && piece.compare(0, replacement_.size(), replacement_) != 0) {
        piece = replacement_ + piece;
      }
      if (!split_) {
        out.push_back(std::move(piece));
        continue;
      }
      // Each replacement starts a new piece (MergedWithNext).
      size_t start = 0;
      for (size_t at = piece.find(replacement_, 1); at != std::string::npos;
           at = piece.find(replacement_, at + replacement_.size())) {
        if (at > start) out.push_back(piece.substr(start, at - start));
        start = at;
      }
      if (start < piece.size()) out.push_back(piece.substr(start));
    }
    pieces = std::move(out);
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

class Sequence final : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void Split(std::vector<std::string>& pieces, bool first) const override {
    for (const auto& part : parts_) part->Split(pieces, first);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

absl::StatusOr<std::unique_ptr<PreTokenizer>> RegexSplit(
    const char* pattern, Behavior behavior) {
  absl::StatusOr<std::shared_ptr<const Regex>> regex = Regex::Compile(pattern);
  if (!regex.ok()) return regex.status();
  return std::make_unique<SplitPreTokenizer>(*regex, behavior, false);
}

}  // namespace

const std::vector<uint32_t>& ByteToUnicode() {
  static const std::vector<uint32_t>* const table = [] {
    auto* t = new std::vector<uint32_t>(256, 0);
    std::array<bool, 256> printable{};
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) (*t)[b] = printable[b] ? b : next++;
    return t;
  }();
  return *table;
}

int ByteOfCodePoint(uint32_t cp) {
  static const std::vector<int>* const inverse = [] {
    auto* v = new std::vector<int>(512, -1);
    const std::vector<uint32_t>& table = ByteToUnicode();
    for (int b = 0; b < 256; ++b) (*v)[table[b]] = b;
    return v;
  }();
  return cp < inverse->size() ? (*inverse)[cp] : -1;
}

std::string BytesToUnicodeText(absl::string_view bytes) {
  const std::vector<uint32_t>& table = ByteToUnicode();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) AppendUtf8(table[b], out);
  return out;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(
    const nlohmann::json& json, const std::string& where) {
  if (json.is_null()) return nullptr;
  if (!json.is_object() || !json.contains("type") || !json["type"].is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": expected an object with a \"type\""));
  }
  const std::string type = json["type"].get<std::string>();
  if (type == "ByteLevel") {
    std::shared_ptr<const Regex> regex;
    absl::StatusOr<bool> use_regex = BoolField(json, "use_regex", true, where);
    if (!use_regex.ok()) return use_regex.status();
    absl::StatusOr<bool> add_prefix_space =
        BoolField(json, "add_prefix_space", false, where);
    if (!add_prefix_space.ok()) return add_prefix_space.status();
    if (*use_regex) {
      absl::StatusOr<std::shared_ptr<const Regex>> compiled =
          Regex::Compile(kGpt2Pattern);
      if (!compiled.ok()) return compiled.status();
      regex = *compiled;
    }
    return std::make_unique<ByteLevel>(*add_prefix_space, regex);
  }
  if (type == "Split") {
    absl::StatusOr<std::shared_ptr<const Regex>> pattern =
        MakePattern(json.value("pattern", nlohmann::json()), where + ".pattern");
    if (!pattern.ok()) return pattern.status();
    const std::string name = StringField(json, "behavior", "Isolated");
    Behavior behavior;
    if (name == "Removed") behavior = Behavior::kRemoved;
    else if (name == "Isolated") behavior = Behavior::kIsolated;
    else if (name == "MergedWithPrevious") behavior = Behavior::kMergedWithPrevious;
    else if (name == "MergedWithNext") behavior = Behavior::kMergedWithNext;
    else if (name == "Contiguous") behavior = Behavior::kContiguous;
    else {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ".behavior \"", name, "\" is not supported"));
    }
    absl::StatusOr<bool> invert = BoolField(json, "invert", false, where);
    if (!invert.ok()) return invert.status();
    return std::make_unique<SplitPreTokenizer>(*pattern, behavior, *invert);
  }
  if (type == "Metaspace") {
    absl::StatusOr<bool> add_prefix_space =
        BoolField(json, "add_prefix_space", true, where);
    if (!add_prefix_space.ok()) return add_prefix_space.status();
    absl::StatusOr<bool> split = BoolField(json, "split", true, where);
    if (!split.ok()) return split.status();
    const std::string scheme = StringField(
        json, "prepend_scheme", *add_prefix_space ? "always" : "never");
    Metaspace::Prepend prepend;
    if (scheme == "always") prepend = Metaspace::Prepend::kAlways;
    else if (scheme == "first") prepend = Metaspace::Prepend::kFirst;
    else if (scheme == "never") prepend = Metaspace::Prepend::kNever;
    else {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ".prepend_scheme \"", scheme, "\" is not supported"));
    }
    return std::make_unique<Metaspace>(StringField(json, "replacement", "\xe2\x96\x81"),
                                       prepend, *split);
  }
  if (type == "Digits") {
    absl::StatusOr<bool> individual =
        BoolField(json, "individual_digits", false, where);
    if (!individual.ok()) return individual.status();
    return *individual
               ? RegexSplit("\\p{N}", Behavior::kIsolated)
               : RegexSplit("\\p{N}+", Behavior::kIsolated);
  }
  if (type == "Whitespace") {
    absl::StatusOr<std::shared_ptr<const Regex>> regex =
        Regex::Compile("\\w+|[^\\w\\s]+");
    if (!regex.ok()) return regex.status();
    return std::make_unique<SplitPreTokenizer>(*regex, Behavior::kRemoved, true);
  }
  if (type == "WhitespaceSplit") return RegexSplit("\\s+", Behavior::kRemoved);
  if (type == "Punctuation") return RegexSplit("\\p{P}", Behavior::kIsolated);
  if (type == "Sequence") {
    absl::StatusOr<std::vector<std::unique_ptr<PreTokenizer>>> parts =
        MakeStageList<PreTokenizer>(json, where, "pretokenizers",
                                    MakePreTokenizer);
    if (!parts.ok()) return parts.status();
    return std::make_unique<Sequence>(*std::move(parts));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ".type \"", type, "\" is not supported"));
}

}  // namespace moe::text
