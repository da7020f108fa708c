// tokenizer.json normalizers: NFC, NFKC, NFD, NFKD, Lowercase, Prepend,
// Replace, Strip, Sequence.
#include <utf8proc.h>

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/text/regex.h"
#include "core/text/tokenizer_pipeline.h"

namespace moe::text {
namespace {

class UnicodeForm final : public Normalizer {
 public:
  explicit UnicodeForm(utf8proc_option_t options) : options_(options) {}
  std::string Normalize(std::string text) const override {
    if (text.empty()) return text;
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(
        reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
        static_cast<utf8proc_ssize_t>(text.size()), &out,
        static_cast<utf8proc_option_t>(options_ | UTF8PROC_STABLE));
    if (n < 0) return text;  // input was checked to be UTF-8 already
    std::string result(reinterpret_cast<char*>(out), static_cast<size_t>(n));
    std::free(out);
    return result;
  }

 private:
  utf8proc_option_t options_;
};

class Lowercase final : public Normalizer {
 public:
  std::string Normalize(std::string text) const override {
    std::string out;
    out.reserve(text.size());
    utf8proc_ssize_t i = 0;
    const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
    const auto size = static_cast<utf8proc_ssize_t>(text.size());
    while (i < size) {
      utf8proc_int32_t cp;
      const utf8proc_ssize_t n = utf8proc_iterate(bytes + i, size - i, &cp);
      if (n <= 0) break;
      utf8proc_uint8_t buffer[4];
      const utf8proc_ssize_t m = utf8proc_encode_char(utf8proc_tolower(cp), buffer);
      out.append(reinterpret_cast<char*>(buffer), static_cast<size_t>(m));
      i += n;
    }
    return out;
  }
};

class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string Normalize(std::string text) const override {
    return text.empty() ? text : prefix_ + text;
  }

 private:
  std::string prefix_;
};

class Replace final : public Normalizer {
 public:
  Replace(std::shared_ptr<const Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string Normalize(std::string text) const override {
    std::string out;
    size_t at = 0;
    for (const auto& [begin, end] : pattern_->FindAll(text)) {
      out.append(text, at, begin - at);
      out += content_;
      at = end;
    }
    out.append(text, at, std::string::npos);
    return out;
  }

 private:
  std::shared_ptr<const Regex> pattern_;
  std::string content_;
};

class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  std::string Normalize(std::string text) const override {
    absl::string_view view = text;
    // Unicode White_Space, ASCII and the common others.
    auto is_space_at_start = [](absl::string_view v) -> size_t {
      if (v.empty()) return 0;
      if (absl::ascii_isspace(v[0])) return 1;
      return 0;
    };
    if (left_) {
      while (size_t n = is_space_at_start(view)) view.remove_prefix(n);
    }
    if (right_) {
      while (!view.empty() && absl::ascii_isspace(view.back())) view.remove_suffix(1);
    }
    return std::string(view);
  }

 private:
  bool left_, right_;
};

class Sequence final : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  std::string Normalize(std::string text) const override {
    for (const auto& part : parts_) text = part->Normalize(std::move(text));
    return text;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const Regex>> MakePattern(
    const nlohmann::json& json, const std::string& where) {
  if (json.is_object() && json.contains("String") && json["String"].is_string()) {
    return Regex::Literal(json["String"].get<std::string>());
  }
  if (json.is_object() && json.contains("Regex") && json["Regex"].is_string()) {
    absl::StatusOr<std::shared_ptr<const Regex>> regex =
        Regex::Compile(json["Regex"].get<std::string>());
    if (!regex.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".Regex: ", regex.status().message()));
    }
    return regex;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": expected {\"String\": ...} or {\"Regex\": ...}"));
}

std::string StringField(const nlohmann::json& json, const char* key,
                        const std::string& fallback) {
  auto it = json.find(key);
  return it != json.end() && it->is_string() ? it->get<std::string>() : fallback;
}

absl::StatusOr<bool> BoolField(const nlohmann::json& json, const char* key,
                               bool fallback, const std::string& where) {
  auto it = json.find(key);
  if (it == json.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".", key, ": expected true or false"));
  }
  return it->get<bool>();
}

absl::StatusOr<int> IntField(const nlohmann::json& json, const char* key,
                             int fallback, const std::string& where) {
  auto it = json.find(key);
  if (it == json.end() || it->is_null()) return fallback;
  if (!it->is_number_integer() || it->get<int64_t>() < INT32_MIN ||
      it->get<int64_t>() > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".", key, ": expected an integer"));
  }
  return static_cast<int>(it->get<int64_t>());
}

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(
    const nlohmann::json& json, const std::string& where) {
  if (json.is_null()) return nullptr;
  if (!json.is_object() || !json.contains("type") || !json["type"].is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": expected an object with a \"type\""));
  }
  const std::string type = json["type"].get<std::string>();
  if (type == "NFC") return std::make_unique<UnicodeForm>(UTF8PROC_COMPOSE);
  if (type == "NFD") return std::make_unique<UnicodeForm>(UTF8PROC_DECOMPOSE);
  if (type == "NFKC") {
    return std::make_unique<UnicodeForm>(
        static_cast<utf8proc_option_t>(UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
  }
  if (type == "NFKD") {
    return std::make_unique<UnicodeForm>(
        static_cast<utf8proc_option_t>(UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT));
  }
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Prepend") {
    return std::make_unique<Prepend>(StringField(json, "prepend"));
  }
  if (type == "Replace") {
    absl::StatusOr<std::shared_ptr<const Regex>> pattern =
        MakePattern(json.value("pattern", nlohmann::json()), where + ".pattern");
    if (!pattern.ok()) return pattern.status();
    return std::make_unique<Replace>(*pattern, StringField(json, "content"));
  }
  if (type == "Strip") {
    absl::StatusOr<bool> left = BoolField(json, "strip_left", true, where);
    if (!left.ok()) return left.status();
    absl::StatusOr<bool> right = BoolField(json, "strip_right", true, where);
    if (!right.ok()) return right.status();
    return std::make_unique<Strip>(*left, *right);
  }
  if (type == "Sequence") {
    absl::StatusOr<std::vector<std::unique_ptr<Normalizer>>> parts =
        MakeStageList<Normalizer>(json, where, "normalizers", MakeNormalizer);
    if (!parts.ok()) return parts.status();
    return std::make_unique<Sequence>(*std::move(parts));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ".type \"", type, "\" is not supported"));
}

}  // namespace moe::text
