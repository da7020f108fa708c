// The BPE model of a tokenizer.json: vocabulary, ranked merges, unknown
// token, byte fallback. Encode is thread-safe (a bounded, locked cache of
// encoded pieces).
#ifndef MOE_CORE_TEXT_BPE_MODEL_H_
#define MOE_CORE_TEXT_BPE_MODEL_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace moe::text {

class BpeModel {
 public:
  // `json` is tokenizer.json's "model"; errors name "model.<field>".
  static absl::StatusOr<std::unique_ptr<BpeModel>> Parse(const nlohmann::json& json);

  // Appends the ids of one pre-tokenized piece.
  void Encode(absl::string_view piece, std::vector<int32_t>& ids) const;

  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // "" when `id` is not in the vocabulary.
  const std::string& IdToToken(int32_t id) const;
  int32_t size() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  BpeModel() = default;
  void EncodeUncached(absl::string_view piece, std::vector<int32_t>& ids) const;

  absl::flat_hash_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  // (left id, right id) -> (rank, merged id).
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  int32_t byte_ids_[256];  // <0xXX> ids with byte fallback, -1 if missing
  std::string continuing_subword_prefix_;

  mutable std::mutex cache_mutex_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace moe::text

#endif  // MOE_CORE_TEXT_BPE_MODEL_H_
