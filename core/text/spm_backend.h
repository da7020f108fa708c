// SentencePiece models (tokenizer.model) in native code: BPE models (the
// Llama / Mistral / Mixtral family) with byte fallback, user-defined and
// control symbols, and the `identity` normalization rule with
// add_dummy_prefix / remove_extra_whitespaces / escape_whitespaces /
// treat_whitespace_as_suffix. Encoding and decoding follow sentencepiece
// 0.1.97 (Debian's spm_encode / spm_decode, which the tests compare with).
//
// Refused at load, with an error naming the field: model types other than
// BPE (trainer_spec.model_type), a normalizer or denormalizer with a
// precompiled_charsmap (e.g. spm_train's default nmt_nfkc), and models that
// sentencepiece itself rejects (no UNKNOWN piece, duplicate pieces, byte
// pieces without byte_fallback or not all 256 of them).
//
// Thread-safety: immutable after Load; every method is const and may be
// called from any number of threads.
#ifndef MOE_CORE_TEXT_SPM_BACKEND_H_
#define MOE_CORE_TEXT_SPM_BACKEND_H_

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/text/spm_model.h"

namespace moe::text {

class SpmBackend {
 public:
  // Reads and validates the model file at `path`; errors name the path.
  static absl::StatusOr<std::unique_ptr<SpmBackend>> Load(const std::string& path);
  // The same from the file's bytes; errors do not name a path.
  static absl::StatusOr<std::unique_ptr<SpmBackend>> FromSerialized(
      absl::string_view serialized);
  static absl::StatusOr<std::unique_ptr<SpmBackend>> FromProto(SpmModelProto model);

  // The ids spm_encode gives for `text` (no BOS/EOS). Bytes of `text` that
  // are not UTF-8 are encoded as U+FFFD, as sentencepiece's normalizer does.
  std::vector<int> Encode(absl::string_view text) const;
  // The text spm_decode gives for `ids`: control pieces decode to "", the
  // unknown piece to trainer_spec.unk_surface (" \u2047 " by default), runs
  // of byte pieces to their bytes with each byte that does not start a valid
  // UTF-8 character replaced by U+FFFD; "\u2581" becomes " " and the
  // leading space of add_dummy_prefix is dropped. OutOfRange when an id is
  // outside [0, size()).
  absl::StatusOr<std::string> Decode(absl::Span<const int> ids) const;

  int size() const { return static_cast<int>(pieces_.size()); }
  // The id of `piece`; unk_id() when the vocabulary has no such piece.
  int PieceToId(absl::string_view piece) const;
  // The piece of `id`; "" outside [0, size()).
  std::string IdToPiece(int id) const;
  int unk_id() const { return unk_id_; }
  int bos_id() const { return bos_id_; }  // -1 when none (not a control piece)
  int eos_id() const { return eos_id_; }  // -1 when none
  bool IsControlOrUnknown(int id) const;

 private:
  SpmBackend() = default;

  std::string Normalize(absl::string_view text) const;
  // Length of the user-defined symbol that starts `s`; 0 when none.
  size_t MatchUserDefined(absl::string_view s) const;
  bool IsType(int id, SpmPieceType type) const {
    return id >= 0 && id < size() && pieces_[id].type == type;
  }

  std::vector<SpmPiece> pieces_;
  // NORMAL, USER_DEFINED and UNUSED pieces: those BPE may produce.
  absl::flat_hash_map<std::string, int> mergeable_;
  // Every piece (PieceToId).
  absl::flat_hash_map<std::string, int> all_;
  // User-defined symbols by first byte, longest first.
  std::array<std::vector<std::string>, 256> user_defined_;
  bool has_user_defined_ = false;
  std::array<int, 256> byte_ids_{};  // valid when byte_fallback_
  std::vector<int> id_to_byte_;       // -1 unless a BYTE piece
  bool byte_fallback_ = false;
  SpmNormalizerSpec normalizer_;
  bool treat_whitespace_as_suffix_ = false;
  std::string unk_surface_;
  int unk_id_ = -1;
  int bos_id_ = -1;
  int eos_id_ = -1;
};

}  // namespace moe::text

#endif  // MOE_CORE_TEXT_SPM_BACKEND_H_
