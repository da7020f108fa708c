#include "tools/moe_mkmodel/tokenizer_subset.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status_macros.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

using nlohmann::json;

absl::StatusOr<json> ReadJson(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  json parsed = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": not a JSON object"));
  }
  return parsed;
}

// The text of a tokenizer_config.json token entry: "x" or {"content": "x"}.
std::optional<std::string> TokenText(const json& config, const char* key) {
  if (!config.contains(key)) return std::nullopt;
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return std::nullopt;
}

// The GPT-2 byte-level alphabet: the character each byte is written as.
std::vector<std::string> ByteLevelAlphabet() {
  std::vector<std::string> out(256);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) ||
                           (b >= 0xae && b <= 0xff);
    const int code = printable ? b : next++;
    std::string utf8;
    if (code < 0x80) {
      utf8.push_back(static_cast<char>(code));
    } else {
      utf8.push_back(static_cast<char>(0xc0 | (code >> 6)));
      utf8.push_back(static_cast<char>(0x80 | (code & 0x3f)));
    }
    out[b] = utf8;
  }
  return out;
}

bool UsesByteLevel(const json& node) {
  if (node.is_object()) {
    if (node.contains("type") && node["type"] == "ByteLevel") return true;
    for (const auto& [key, value] : node.items()) {
      if (UsesByteLevel(value)) return true;
    }
  } else if (node.is_array()) {
    for (const json& value : node) {
      if (UsesByteLevel(value)) return true;
    }
  }
  return false;
}

using MergePair = std::pair<std::string, std::string>;

// A merge entry, "a b" or ["a", "b"].
absl::StatusOr<MergePair> ParseMerge(const json& merge, const std::string& where) {
  if (merge.is_string()) {
    const std::string m = merge.get<std::string>();
    const size_t space = m.find(' ');
    if (space != std::string::npos) {
      return MergePair(m.substr(0, space), m.substr(space + 1));
    }
  } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
             merge[1].is_string()) {
    return MergePair(merge[0].get<std::string>(), merge[1].get<std::string>());
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": model.merges entries must be \"a b\" or [a, b]"));
}

// Number of UTF-8 characters of `s`.
size_t CodePoints(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// First code point of `s` (s is one UTF-8 character).
uint32_t FirstCodePoint(const std::string& s) {
  const unsigned char c = s[0];
  if (c < 0x80 || s.size() < 2) return c;
  if ((c >> 5) == 0x6) return ((c & 0x1F) << 6) | (s[1] & 0x3F);
  if ((c >> 4) == 0xE && s.size() >= 3) {
    return ((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
  }
  return 0x10000;  // past the scripts kept as single characters
}

// The `top` vocabulary entries a small model keeps, with their new ids:
//  1. every entry up to the last byte token (<unk>, <s>, </s> and
//     <0x00>..<0xFF> of a byte-fallback vocabulary; the 256 byte symbols of
//     a byte-level one) keeps its id;
//  2. then the single characters of Latin scripts (and the SentencePiece
//     space "▁"), so that the merges below have their parts;
//  3. then the results of the merges, in merge order (their priority),
//     whose two parts are kept, until `top` entries.
// Every kept token is thus reachable by the kept merges, and the cut
// tokenizer encodes words into word pieces instead of falling back to
// bytes. A plain cut by id would not: SentencePiece-converted vocabularies
// (Llama, Mistral) list their single characters last.
absl::StatusOr<json> SelectVocabulary(const json& tokenizer, int32_t top,
                                      const std::string& where) {
  const json& source = tokenizer["model"]["vocab"];
  std::vector<std::pair<int64_t, std::string>> by_id;
  by_id.reserve(source.size());
  for (auto& [token, id] : source.items()) {
    if (!id.is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": model.vocab[\"", token, "\"] is not an integer"));
    }
    by_id.emplace_back(id.get<int64_t>(), token);
  }
  std::sort(by_id.begin(), by_id.end());
  int64_t base_end = 0;  // ids below it keep their place
  if (tokenizer["model"].value("byte_fallback", false)) {
    for (const auto& [id, token] : by_id) {
      if (token.size() == 6 && token.rfind("<0x", 0) == 0) base_end = id + 1;
    }
  } else if (UsesByteLevel(tokenizer)) {
    base_end = 256;
  }
  json vocab = json::object();
  int32_t next = 0;
  auto keep = [&](const std::string& token, int32_t id) {
    vocab[token] = id;
    next = std::max(next, id + 1);
  };
  for (const auto& [id, token] : by_id) {
    if (id < base_end && id < top) keep(token, static_cast<int32_t>(id));
  }
  for (const auto& [id, token] : by_id) {
    if (next >= top) break;
    if (id < base_end || vocab.contains(token) || CodePoints(token) != 1) continue;
    if (token == "\xE2\x96\x81" || FirstCodePoint(token) < 0x250) keep(token, next);
  }
  for (const json& merge : tokenizer["model"]["merges"]) {
    if (next >= top) break;
    ASSIGN_OR_RETURN(MergePair pair, ParseMerge(merge, where));
    const std::string joined = pair.first + pair.second;
    if (vocab.contains(pair.first) && vocab.contains(pair.second) &&
        !vocab.contains(joined) && source.contains(joined)) {
      keep(joined, next);
    }
  }
  return vocab;
}

// Rewrites the ids of TemplateProcessing's special tokens.
absl::Status RemapPostProcessor(
    json& node, const absl::flat_hash_map<std::string, int32_t>& id_of) {
  if (node.is_array()) {
    for (json& value : node) RETURN_IF_ERROR(RemapPostProcessor(value, id_of));
    return absl::OkStatus();
  }
  if (!node.is_object()) return absl::OkStatus();
  if (node.contains("special_tokens") && node["special_tokens"].is_object()) {
    for (auto& [name, entry] : node["special_tokens"].items()) {
      if (!entry.contains("tokens") || !entry["tokens"].is_array()) continue;
      json ids = json::array();
      for (const json& token : entry["tokens"]) {
        auto it = token.is_string() ? id_of.find(token.get<std::string>())
                                    : id_of.end();
        if (it == id_of.end()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "tokenizer.json: post_processor.special_tokens.", name,
              " names a token the cut vocabulary does not keep"));
        }
        ids.push_back(it->second);
      }
      entry["ids"] = ids;
    }
  }
  for (auto& [key, value] : node.items()) {
    if (key != "special_tokens") RETURN_IF_ERROR(RemapPostProcessor(value, id_of));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TokenizerSubset> MakeTokenizerSubset(
    absl::string_view source_dir, int32_t vocab_size,
    absl::string_view chat_template_file) {
  const std::filesystem::path dir{std::string(source_dir)};
  ASSIGN_OR_RETURN(json tokenizer, ReadJson(dir / "tokenizer.json"));
  json config = json::object();
  const bool has_config = std::filesystem::exists(dir / "tokenizer_config.json");
  if (has_config) {
    ASSIGN_OR_RETURN(config, ReadJson(dir / "tokenizer_config.json"));
  }
  const std::string where = (dir / "tokenizer.json").string();
  if (!chat_template_file.empty()) {
    std::ifstream in(std::string(chat_template_file), std::ios::binary);
    if (!in) {
      return absl::NotFoundError(
          absl::StrCat(chat_template_file, ": cannot open the chat template"));
    }
    std::stringstream text;
    text << in.rdbuf();
    config["chat_template"] = text.str();
  }
  if (!tokenizer.contains("model") || !tokenizer["model"].is_object() ||
      tokenizer["model"].value("type", "") != "BPE" ||
      !tokenizer["model"].contains("vocab") ||
      !tokenizer["model"]["vocab"].is_object() ||
      !tokenizer["model"].contains("merges") ||
      !tokenizer["model"]["merges"].is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": model must be a BPE model with vocab and merges"));
  }
  const std::string chat_template =
      config.contains("chat_template") && config["chat_template"].is_string()
          ? config["chat_template"].get<std::string>()
          : std::string();
  std::vector<std::string> named;  // tokens the config names
  for (const char* key : {"bos_token", "eos_token", "pad_token", "unk_token"}) {
    if (std::optional<std::string> t = TokenText(config, key)) named.push_back(*t);
  }

  // Added tokens: kept at their id when inside the cut, else (only those
  // the config or chat template uses) moved to the top ids.
  json added_in = tokenizer.value("added_tokens", json::array());
  if (!added_in.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": added_tokens must be a list"));
  }
  std::vector<json> kept_added, moved;
  for (const json& token : added_in) {
    if (!token.is_object() || !token.contains("id") ||
        !token["id"].is_number_integer() || !token.contains("content") ||
        !token["content"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": added_tokens entries need an integer id and a content"));
    }
    const std::string content = token["content"].get<std::string>();
    const bool used =
        std::find(named.begin(), named.end(), content) != named.end() ||
        chat_template.find(content) != std::string::npos;
    if (token["id"].get<int64_t>() < vocab_size) {
      kept_added.push_back(token);
    } else if (used) {
      moved.push_back(token);
    }
  }
  std::sort(moved.begin(), moved.end(), [](const json& a, const json& b) {
    return a["id"].get<int64_t>() < b["id"].get<int64_t>();
  });
  // Kept added tokens in the top region move too.
  int32_t top = vocab_size - static_cast<int32_t>(moved.size());
  for (bool changed = true; changed;) {
    changed = false;
    for (auto it = kept_added.begin(); it != kept_added.end(); ++it) {
      if ((*it)["id"].get<int64_t>() >= top) {
        moved.insert(moved.begin(), *it);
        kept_added.erase(it);
        --top;
        changed = true;
        break;
      }
    }
  }
  if (top <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vocab_size %d is too small for %d special tokens", vocab_size,
        moved.size()));
  }
  // The vocabulary kept below `top`: see SelectVocabulary.
  ASSIGN_OR_RETURN(json vocab, SelectVocabulary(tokenizer, top, where));
  absl::flat_hash_map<std::string, int32_t> id_of;
  for (auto& [token, id] : vocab.items()) id_of[token] = id.get<int32_t>();
  json added_out = json::array();
  for (const json& token : kept_added) {
    added_out.push_back(token);
    id_of[token["content"].get<std::string>()] = token["id"].get<int32_t>();
  }
  for (size_t i = 0; i < moved.size(); ++i) {
    json token = moved[i];
    token["id"] = top + static_cast<int32_t>(i);
    added_out.push_back(token);
    id_of[token["content"].get<std::string>()] = token["id"].get<int32_t>();
  }

  // Every byte must still be encodable.
  std::vector<std::string> bytes;
  if (tokenizer["model"].value("byte_fallback", false)) {
    for (int b = 0; b < 256; ++b) bytes.push_back(absl::StrFormat("<0x%02X>", b));
  } else if (UsesByteLevel(tokenizer)) {
    bytes = ByteLevelAlphabet();
  }
  for (const std::string& b : bytes) {
    if (!vocab.contains(b)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "vocab_size ", vocab_size, " is too small for ", where,
          ": its byte token \"", b, "\" lies past the cut"));
    }
  }

  json merges = json::array();
  for (const json& merge : tokenizer["model"]["merges"]) {
    ASSIGN_OR_RETURN(MergePair pair, ParseMerge(merge, where));
    if (vocab.contains(pair.first) && vocab.contains(pair.second) &&
        vocab.contains(pair.first + pair.second)) {
      merges.push_back(merge);
    }
  }
  tokenizer["model"]["vocab"] = std::move(vocab);
  tokenizer["model"]["merges"] = std::move(merges);
  tokenizer["added_tokens"] = std::move(added_out);
  if (tokenizer.contains("post_processor")) {
    RETURN_IF_ERROR(RemapPostProcessor(tokenizer["post_processor"], id_of));
  }

  TokenizerSubset subset;
  if (has_config || !chat_template_file.empty()) {
    if (config.contains("added_tokens_decoder") &&
        config["added_tokens_decoder"].is_object()) {
      json decoder = json::object();
      for (const auto& [id, entry] : config["added_tokens_decoder"].items()) {
        if (!entry.is_object() || !entry.contains("content") ||
            !entry["content"].is_string()) {
          continue;
        }
        auto it = id_of.find(entry["content"].get<std::string>());
        if (it != id_of.end()) decoder[std::to_string(it->second)] = entry;
      }
      config["added_tokens_decoder"] = std::move(decoder);
    }
    subset.tokenizer_config_json = config.dump(2);
  }
  if (std::optional<std::string> t = TokenText(config, "bos_token")) {
    if (auto it = id_of.find(*t); it != id_of.end()) subset.bos_id = it->second;
  }
  if (std::optional<std::string> t = TokenText(config, "eos_token")) {
    if (auto it = id_of.find(*t); it != id_of.end()) subset.eos_id = it->second;
  }
  subset.tokenizer_json = tokenizer.dump();
  return subset;
}

absl::Status WriteTokenizerSubset(const TokenizerSubset& subset,
                                  absl::string_view model_dir) {
  const std::filesystem::path dir{std::string(model_dir)};
  auto write = [&](const char* name, const std::string& text) -> absl::Status {
    std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) {
      return absl::InternalError(
          absl::StrCat((dir / name).string(), ": write failed"));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(write("tokenizer.json", subset.tokenizer_json));
  if (!subset.tokenizer_config_json.empty()) {
    RETURN_IF_ERROR(write("tokenizer_config.json", subset.tokenizer_config_json));
  }
  return absl::OkStatus();
}

}  // namespace moe
