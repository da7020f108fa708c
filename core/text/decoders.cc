// tokenizer.json decoders (ByteLevel, Metaspace, Replace, ByteFallback,
// Fuse, Strip, Sequence) and post-processors (TemplateProcessing,
// ByteLevel, Sequence).
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/text/tokenizer_pipeline.h"
#include "core/text/utf8.h"

namespace moe::text {
namespace {

// Joins runs of non-added tokens, maps their characters back to bytes and
// decodes those lossily; added tokens stay as written.
class ByteLevelDecoder final : public Decoder {
 public:
  void Decode(std::vector<DecodedToken>& tokens) const override {
    std::vector<DecodedToken> out;
    std::string bytes;
    bool in_run = false;
    auto flush = [&] {
      if (in_run) out.push_back({LossyUtf8(bytes), false});
      bytes.clear();
      in_run = false;
    };
    for (DecodedToken& token : tokens) {
      if (token.added) {
        flush();
        out.push_back(std::move(token));
        continue;
      }
      in_run = true;
      const std::string& t = token.text;
      size_t i = 0;
      while (i < t.size()) {
        const int n = Utf8Length(static_cast<unsigned char>(t[i]));
        uint32_t cp = static_cast<unsigned char>(t[i]) & (0xFF >> (n + (n > 1)));
        for (int k = 1; k < n && i + k < t.size(); ++k) {
          cp = (cp << 6) | (static_cast<unsigned char>(t[i + k]) & 0x3F);
        }
        const int b = ByteOfCodePoint(cp);
        if (b >= 0) {
          bytes += static_cast<char>(b);
        } else {
          bytes.append(t, i, n);  // not a byte symbol: as written
        }
        i += n;
      }
    }
    flush();
    tokens = std::move(out);
  }
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(std::string from, std::string to)
      : from_(std::move(from)), to_(std::move(to)) {}
  void Decode(std::vector<DecodedToken>& tokens) const override {
    for (DecodedToken& t : tokens) t.text = absl::StrReplaceAll(t.text, {{from_, to_}});
  }

 private:
  std::string from_, to_;
};

// "<0xAB>" tokens become their byte; a run of them that is not valid UTF-8
// becomes one U+FFFD per byte (tokenizers' ByteFallback).
class ByteFallbackDecoder final : public Decoder {
 public:
  void Decode(std::vector<DecodedToken>& tokens) const override {
    std::vector<DecodedToken> out;
    std::string bytes;
    int count = 0;
    auto flush = [&] {
      if (count == 0) return;
      if (FirstInvalidUtf8(bytes).has_value()) {
        for (int i = 0; i < count; ++i) out.push_back({"\xEF\xBF\xBD", false});
      } else {
        out.push_back({bytes, false});
      }
      bytes.clear();
      count = 0;
    };
    for (DecodedToken& token : tokens) {
      int value = -1;
      const std::string& t = token.text;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
        int parsed;
        if (absl::SimpleHexAtoi(t.substr(3, 2), &parsed)) value = parsed;
      }
      if (value >= 0) {
        bytes += static_cast<char>(value);
        ++count;
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

class FuseDecoder final : public Decoder {
 public:
  void Decode(std::vector<DecodedToken>& tokens) const override {
    std::string all;
    for (const DecodedToken& t : tokens) all += t.text;
    tokens = {{std::move(all), false}};
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(std::string content, int start, int stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void Decode(std::vector<DecodedToken>& tokens) const override {
    for (DecodedToken& t : tokens) {
      for (int i = 0; i < start_ && t.text.compare(0, content_.size(), content_) == 0 &&
                      !content_.empty();
           ++i) {
        t.text.erase(0, content_.size());
      }
      for (int i = 0; i < stop_ && !content_.empty() &&
                      t.text.size() >= content_.size() &&
                      t.text.compare(t.text.size() - content_.size(),
                                     content_.size(), content_) == 0;
           ++i) {
        t.text.erase(t.text.size() - content_.size());
      }
    }
  }

 private:
  std::string content_;
  int start_, stop_;
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void Decode(std::vector<DecodedToken>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i].text;
      t = absl::StrReplaceAll(t, {{replacement_, " "}});
      if (i == 0 && strip_first_ && !t.empty() && t[0] == ' ') t.erase(0, 1);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts)
      : parts_(std::move(parts)) {}
  void Decode(std::vector<DecodedToken>& tokens) const override {
    for (const auto& part : parts_) part->Decode(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

class TemplatePostProcessor final : public PostProcessor {
 public:
  // Each entry: a special token id, or -1 for the sequence.
  explicit TemplatePostProcessor(std::vector<std::vector<int32_t>> items)
      : items_(std::move(items)) {}
  std::vector<int32_t> Process(std::vector<int32_t> ids) const override {
    std::vector<int32_t> out;
    for (const std::vector<int32_t>& item : items_) {
      if (item.empty()) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        out.insert(out.end(), item.begin(), item.end());
      }
    }
    return out;
  }
  bool AddsTokens() const override { return items_.size() > 1; }

 private:
  std::vector<std::vector<int32_t>> items_;  // empty = the sequence
};

class NoPostProcessor final : public PostProcessor {
 public:
  std::vector<int32_t> Process(std::vector<int32_t> ids) const override {
    return ids;
  }
  bool AddsTokens() const override { return false; }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const nlohmann::json& json,
                                                     const std::string& where) {
  if (json.is_null()) return nullptr;
  if (!json.is_object() || !json.contains("type") || !json["type"].is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": expected an object with a \"type\""));
  }
  const std::string type = json["type"].get<std::string>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace") {
    const nlohmann::json pattern = json.value("pattern", nlohmann::json());
    if (!pattern.is_object() || !pattern.contains("String") ||
        !pattern["String"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ".pattern: only {\"String\": ...} is supported in a decoder"));
    }
    return std::make_unique<ReplaceDecoder>(pattern["String"].get<std::string>(),
                                            StringField(json, "content"));
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    absl::StatusOr<int> start = IntField(json, "start", 0, where);
    if (!start.ok()) return start.status();
    absl::StatusOr<int> stop = IntField(json, "stop", 0, where);
    if (!stop.ok()) return stop.status();
    return std::make_unique<StripDecoder>(StringField(json, "content", " "),
                                          *start, *stop);
  }
  if (type == "Metaspace") {
    absl::StatusOr<bool> add_prefix_space =
        BoolField(json, "add_prefix_space", true, where);
    if (!add_prefix_space.ok()) return add_prefix_space.status();
    const std::string scheme = StringField(
        json, "prepend_scheme", *add_prefix_space ? "always" : "never");
    return std::make_unique<MetaspaceDecoder>(
        StringField(json, "replacement", "\xe2\x96\x81"), scheme != "never");
  }
  if (type == "Sequence") {
    absl::StatusOr<std::vector<std::unique_ptr<Decoder>>> parts =
        MakeStageList<Decoder>(json, where, "decoders", MakeDecoder);
    if (!parts.ok()) return parts.status();
    return std::make_unique<SequenceDecoder>(*std::move(parts));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ".type \"", type, "\" is not supported"));
}

absl::StatusOr<std::unique_ptr<PostProcessor>> MakePostProcessor(
    const nlohmann::json& json, const std::string& where,
    const std::function<std::optional<int32_t>(const std::string&)>& token_id) {
  if (json.is_null()) return std::make_unique<NoPostProcessor>();
  if (!json.is_object() || !json.contains("type") || !json["type"].is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": expected an object with a \"type\""));
  }
  const std::string type = json["type"].get<std::string>();
  if (type == "ByteLevel") return std::make_unique<NoPostProcessor>();
  if (type == "TemplateProcessing") {
    const auto single = json.find("single");
    if (single == json.end() || !single->is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".single: expected a list"));
    }
    const nlohmann::json specials = json.value("special_tokens", nlohmann::json::object());
    std::vector<std::vector<int32_t>> items;
    for (size_t i = 0; i < single->size(); ++i) {
      const nlohmann::json& item = (*single)[i];
      const std::string at = absl::StrCat(where, ".single[", i, "]");
      if (item.contains("Sequence")) {
        items.push_back({});
        continue;
      }
      if (!item.contains("SpecialToken") || !item["SpecialToken"].is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(at, ": expected Sequence or SpecialToken"));
      }
      const std::string name = StringField(item["SpecialToken"], "id");
      std::vector<int32_t> ids;
      if (specials.contains(name) && specials[name].contains("ids") &&
          specials[name]["ids"].is_array()) {
        for (const nlohmann::json& id : specials[name]["ids"]) {
          if (!id.is_number_integer()) {
            return absl::InvalidArgumentError(
                absl::StrCat(where, ".special_tokens.", name, ".ids: not integers"));
          }
          ids.push_back(id.get<int32_t>());
        }
      } else if (std::optional<int32_t> id = token_id(name)) {
        ids.push_back(*id);
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            at, ".SpecialToken.id \"", name, "\" is not a known token"));
      }
      items.push_back(std::move(ids));
    }
    return std::make_unique<TemplatePostProcessor>(std::move(items));
  }
  if (type == "Sequence") {
    const auto it = json.find("processors");
    if (it == json.end() || !it->is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".processors: expected a list"));
    }
    // Only one that adds tokens is supported (ByteLevel ones are no-ops).
    std::unique_ptr<PostProcessor> chosen = std::make_unique<NoPostProcessor>();
    for (size_t i = 0; i < it->size(); ++i) {
      absl::StatusOr<std::unique_ptr<PostProcessor>> part = MakePostProcessor(
          (*it)[i], absl::StrCat(where, ".processors[", i, "]"), token_id);
      if (!part.ok()) return part.status();
      if ((*part)->AddsTokens()) {
        if (chosen->AddsTokens()) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ".processors: more than one that adds tokens is not supported"));
        }
        chosen = *std::move(part);
      }
    }
    return chosen;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ".type \"", type, "\" is not supported"));
}

}  // namespace moe::text
