// The parts of a SentencePiece model file (tokenizer.model: a serialized
// `sentencepiece.ModelProto`, src/sentencepiece_model.proto of
// google/sentencepiece) that encoding and decoding need, read from the
// protobuf wire format without generated code.
#ifndef MOE_CORE_TEXT_SPM_MODEL_H_
#define MOE_CORE_TEXT_SPM_MODEL_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe::text {

// ModelProto.SentencePiece.Type; the values are the proto's.
enum class SpmPieceType {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// ModelProto.pieces[i]; the piece's id is i.
struct SpmPiece {
  std::string piece;
  float score = 0.0f;
  SpmPieceType type = SpmPieceType::kNormal;
};

// TrainerSpec.ModelType; the values are the proto's.
enum SpmModelType : int {
  kSpmUnigram = 1,
  kSpmBpe = 2,
  kSpmWord = 3,
  kSpmChar = 4,
};

// The TrainerSpec fields that matter after training; proto defaults.
struct SpmTrainerSpec {
  int model_type = kSpmUnigram;  // any int32 the file holds
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  // Empty means the proto's default ("<unk>", "<s>", "</s>"), as in
  // sentencepiece's ModelInterface.
  std::string unk_piece, bos_piece, eos_piece;
  std::optional<std::string> unk_surface;  // set only when the file has it
};

struct SpmNormalizerSpec {
  std::string name;
  std::string precompiled_charsmap;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

struct SpmModelProto {
  std::vector<SpmPiece> pieces;
  SpmTrainerSpec trainer_spec;
  SpmNormalizerSpec normalizer_spec;
  std::optional<SpmNormalizerSpec> denormalizer_spec;
};

// Parses `serialized` as proto2 does (a repeated message field appends, an
// optional one merges, the last scalar wins; unknown fields of wire types 0,
// 1, 2 and 5 are skipped). Malformed input gives InvalidArgument naming the
// field and the byte offset (e.g. "pieces[3].piece: truncated at byte 812");
// an enum value outside its enum is an error too. Never crashes on any
// input. Only the wire format is checked: the caller validates the model.
absl::StatusOr<SpmModelProto> ParseSpmModelProto(absl::string_view serialized);

}  // namespace moe::text

#endif  // MOE_CORE_TEXT_SPM_MODEL_H_
