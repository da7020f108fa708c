#include "core/text/bpe_model.h"

#include <cstdio>
#include <queue>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/text/tokenizer_pipeline.h"
#include "core/text/utf8.h"

namespace moe::text {
namespace {

constexpr size_t kCacheEntries = 1 << 16;
constexpr size_t kCachedPieceBytes = 256;

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) |
         static_cast<uint32_t>(b);
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Parse(
    const nlohmann::json& json) {
  if (!json.is_object()) {
    return absl::InvalidArgumentError("model: expected an object");
  }
  if (json.contains("type") && !json["type"].is_null() &&
      !json["type"].is_string()) {
    return absl::InvalidArgumentError("model.type: expected a string");
  }
  const std::string type = StringField(json, "type", "BPE");
  if (type != "BPE") {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.type \"", type, "\" is not supported (only BPE)"));
  }
  if (json.contains("dropout") && !json["dropout"].is_null() &&
      json["dropout"].is_number() && json["dropout"].get<double>() > 0) {
    return absl::InvalidArgumentError("model.dropout: BPE dropout is not supported");
  }
  std::unique_ptr<BpeModel> model(new BpeModel());
  const auto vocab = json.find("vocab");
  if (vocab == json.end() || !vocab->is_object()) {
    return absl::InvalidArgumentError("model.vocab: expected an object of token: id");
  }
  model->token_to_id_.reserve(vocab->size());
  int32_t max_id = -1;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > (1 << 24)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.vocab[\"", it.key(), "\"]: expected an id in [0, 2^24]"));
    }
    const int32_t id = it.value().get<int32_t>();
    model->token_to_id_[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  model->id_to_token_.resize(max_id + 1);
  for (const auto& [token, id] : model->token_to_id_) model->id_to_token_[id] = token;

  const auto merges = json.find("merges");
  if (merges != json.end() && !merges->is_null()) {
    if (!merges->is_array()) {
      return absl::InvalidArgumentError("model.merges: expected a list");
    }
    model->merges_.reserve(merges->size());
    for (size_t i = 0; i < merges->size(); ++i) {
      const nlohmann::json& m = (*merges)[i];
      std::string left, right;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ', 1);
        if (space == std::string::npos) {
          return absl::InvalidArgumentError(
              absl::StrCat("model.merges[", i, "]: \"", s, "\" is not \"A B\""));
        }
        left = s.substr(0, space);
        right = s.substr(space + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() &&
                 m[1].is_string()) {
        left = m[0].get<std::string>();
        right = m[1].get<std::string>();
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("model.merges[", i, "]: expected \"A B\" or [A, B]"));
      }
      const auto a = model->token_to_id_.find(left);
      const auto b = model->token_to_id_.find(right);
      const auto merged = model->token_to_id_.find(left + right);
      if (a == model->token_to_id_.end() || b == model->token_to_id_.end() ||
          merged == model->token_to_id_.end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "model.merges[", i, "]: \"", left, "\" + \"", right,
            "\" names a token that is not in model.vocab"));
      }
      model->merges_.try_emplace(PairKey(a->second, b->second),
                                 static_cast<int32_t>(i), merged->second);
    }
  }
  if (json.contains("unk_token") && json["unk_token"].is_string()) {
    const std::string unk = json["unk_token"].get<std::string>();
    const auto it = model->token_to_id_.find(unk);
    if (it == model->token_to_id_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.unk_token \"", unk, "\" is not in model.vocab"));
    }
    model->unk_id_ = it->second;
  }
  for (const auto& [key, field] :
       {std::pair{"fuse_unk", &model->fuse_unk_},
        std::pair{"byte_fallback", &model->byte_fallback_},
        std::pair{"ignore_merges", &model->ignore_merges_}}) {
    absl::StatusOr<bool> value = BoolField(json, key, false, "model");
    if (!value.ok()) return value.status();
    *field = *value;
  }
  if (json.contains("continuing_subword_prefix") &&
      json["continuing_subword_prefix"].is_string()) {
    model->continuing_subword_prefix_ =
        json["continuing_subword_prefix"].get<std::string>();
  }
  if (!model->continuing_subword_prefix_.empty()) {
    return absl::InvalidArgumentError(
        "model.continuing_subword_prefix: only an empty prefix is supported");
  }
  if (json.contains("end_of_word_suffix") && json["end_of_word_suffix"].is_string() &&
      !json["end_of_word_suffix"].get<std::string>().empty()) {
    return absl::InvalidArgumentError(
        "model.end_of_word_suffix: only an empty suffix is supported");
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    const auto it = model->token_to_id_.find(name);
    model->byte_ids_[b] = it == model->token_to_id_.end() ? -1 : it->second;
  }
  return model;
}

std::optional<int32_t> BpeModel::TokenToId(absl::string_view token) const {
  const auto it = token_to_id_.find(token);
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

const std::string& BpeModel::IdToToken(int32_t id) const {
  static const std::string* const empty = new std::string();
  if (id < 0 || id >= size()) return *empty;
  return id_to_token_[id];
}

void BpeModel::Encode(absl::string_view piece, std::vector<int32_t>& ids) const {
  if (piece.empty()) return;
  const bool cacheable = piece.size() <= kCachedPieceBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto it = cache_.find(piece);
    if (it != cache_.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> encoded;
  EncodeUncached(piece, encoded);
  ids.insert(ids.end(), encoded.begin(), encoded.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kCacheEntries) cache_.clear();
    cache_.emplace(std::string(piece), std::move(encoded));
  }
}

void BpeModel::EncodeUncached(absl::string_view piece,
                              std::vector<int32_t>& ids) const {
  if (ignore_merges_) {
    if (std::optional<int32_t> whole = TokenToId(piece)) {
      ids.push_back(*whole);
      return;
    }
  }
  // Symbols: one per character (or per byte, with byte fallback, for a
  // character outside the vocabulary); -1 marks an unknown character.
  std::vector<int32_t> symbols;
  symbols.reserve(piece.size());
  size_t i = 0;
  while (i < piece.size()) {
    const size_t n = std::min<size_t>(
        Utf8Length(static_cast<unsigned char>(piece[i])), piece.size() - i);
    const absl::string_view ch = piece.substr(i, n);
    if (std::optional<int32_t> id = TokenToId(ch)) {
      symbols.push_back(*id);
    } else if (byte_fallback_ && [&] {
                 for (char c : ch) {
                   if (byte_ids_[static_cast<unsigned char>(c)] < 0) return false;
                 }
                 return true;
               }()) {
      for (char c : ch) symbols.push_back(byte_ids_[static_cast<unsigned char>(c)]);
    } else {
      symbols.push_back(-1);
    }
    i += n;
  }
  // Merge by rank: a heap of (rank, left position) over a linked list.
  const size_t n = symbols.size();
  std::vector<int> prev(n), next(n);
  for (size_t k = 0; k < n; ++k) {
    prev[k] = static_cast<int>(k) - 1;
    next[k] = k + 1 < n ? static_cast<int>(k + 1) : -1;
  }
  using Candidate = std::tuple<int32_t, int, int32_t, int32_t>;  // rank, pos, left, right
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push = [&](int left) {
    const int right = next[left];
    if (left < 0 || right < 0 || symbols[left] < 0 || symbols[right] < 0) return;
    const auto it = merges_.find(PairKey(symbols[left], symbols[right]));
    if (it != merges_.end()) {
      heap.emplace(it->second.first, left, symbols[left], symbols[right]);
    }
  };
  for (size_t k = 0; k + 1 < n; ++k) push(static_cast<int>(k));
  while (!heap.empty()) {
    const auto [rank, left, a, b] = heap.top();
    heap.pop();
    const int right = next[left];
    // Stale: one of the two changed since this candidate was queued.
    if (symbols[left] != a || right < 0 || symbols[right] != b) continue;
    symbols[left] = merges_.find(PairKey(a, b))->second.second;
    symbols[right] = -2;  // removed
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    if (prev[left] >= 0) push(prev[left]);
    push(left);
  }
  bool last_unknown = false;
  for (int k = n > 0 ? 0 : -1; k >= 0; k = next[k]) {
    if (symbols[k] == -1) {
      if (!unk_id_.has_value()) continue;  // no unk token: dropped, as HF does
      if (fuse_unk_ && last_unknown) continue;
      ids.push_back(*unk_id_);
      last_unknown = true;
      continue;
    }
    ids.push_back(symbols[k]);
    last_unknown = false;
  }
}

}  // namespace moe::text
