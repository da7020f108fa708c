#include "core/text/spm_model.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "google/protobuf/io/coded_stream.h"

namespace moe::text {
namespace {

using google::protobuf::io::CodedInputStream;

enum WireType : int {
  kVarint = 0,
  kFixed64 = 1,
  kLengthDelimited = 2,
  kFixed32 = 5,
};

const char* WireTypeName(int wire_type) {
  switch (wire_type) {
    case kVarint: return "varint";
    case kFixed64: return "64-bit";
    case kLengthDelimited: return "length-delimited";
    case kFixed32: return "32-bit";
    default: return "invalid";
  }
}

struct Field {
  uint32_t number = 0;
  int wire_type = 0;
};

// Reads one message level at a time: every read stays inside the innermost
// limit (the enclosing message's bytes), so a length that overruns its
// message is reported as truncation rather than read from the next field.
// Errors name `path`, the field being read ("pieces[3].piece").
class WireReader {
 public:
  // `data` must outlive the reader; its size fits an int (checked by the
  // caller).
  explicit WireReader(absl::string_view data)
      : in_(reinterpret_cast<const uint8_t*>(data.data()),
            static_cast<int>(data.size())) {
    in_.PushLimit(static_cast<int>(data.size()));
  }

  bool AtEnd() { return in_.BytesUntilLimit() <= 0; }

  absl::Status NextField(const std::string& path, Field* field) {
    const int at = in_.CurrentPosition();
    uint32_t tag = 0;
    if (!in_.ReadVarint32(&tag)) return Error(path, "bad or truncated field tag", at);
    field->number = tag >> 3;
    field->wire_type = static_cast<int>(tag & 7);
    if (field->number == 0) return Error(path, "field number 0", at);
    switch (field->wire_type) {
      case kVarint: case kFixed64: case kLengthDelimited: case kFixed32:
        return absl::OkStatus();
      default:
        return Error(path, absl::StrCat("field ", field->number, " has wire type ",
                                        field->wire_type, " (groups and unknown "
                                        "wire types are not supported)"), at);
    }
  }

  absl::Status Expect(const std::string& path, const Field& field, int wire_type) {
    if (field.wire_type == wire_type) return absl::OkStatus();
    return Error(path, absl::StrCat("is ", WireTypeName(field.wire_type),
                                    ", expected ", WireTypeName(wire_type)),
                 in_.CurrentPosition());
  }

  absl::Status ReadVarint(const std::string& path, const Field& field, uint64_t* value) {
    RETURN_IF_ERROR(Expect(path, field, kVarint));
    const int at = in_.CurrentPosition();
    if (!in_.ReadVarint64(value)) return Error(path, "bad or truncated varint", at);
    return absl::OkStatus();
  }

  absl::Status ReadInt32(const std::string& path, const Field& field, int32_t* value) {
    uint64_t v = 0;
    RETURN_IF_ERROR(ReadVarint(path, field, &v));
    *value = static_cast<int32_t>(static_cast<uint32_t>(v));  // proto int32
    return absl::OkStatus();
  }

  absl::Status ReadBool(const std::string& path, const Field& field, bool* value) {
    uint64_t v = 0;
    RETURN_IF_ERROR(ReadVarint(path, field, &v));
    *value = v != 0;
    return absl::OkStatus();
  }

  absl::Status ReadFloat(const std::string& path, const Field& field, float* value) {
    RETURN_IF_ERROR(Expect(path, field, kFixed32));
    const int at = in_.CurrentPosition();
    uint32_t bits = 0;
    if (!in_.ReadLittleEndian32(&bits)) return Truncated(path, at, 4);
    static_assert(sizeof(float) == sizeof(bits));
    std::memcpy(value, &bits, sizeof(bits));
    return absl::OkStatus();
  }

  absl::Status ReadBytes(const std::string& path, const Field& field, std::string* value) {
    RETURN_IF_ERROR(Expect(path, field, kLengthDelimited));
    int length = 0;
    RETURN_IF_ERROR(ReadLength(path, &length));
    if (!in_.ReadString(value, length)) {
      return Truncated(path, in_.CurrentPosition(), length);
    }
    return absl::OkStatus();
  }

  // Enters the embedded message of `field`; reads stop at its end until
  // ExitMessage(limit).
  absl::Status EnterMessage(const std::string& path, const Field& field,
                            CodedInputStream::Limit* limit) {
    RETURN_IF_ERROR(Expect(path, field, kLengthDelimited));
    int length = 0;
    RETURN_IF_ERROR(ReadLength(path, &length));
    *limit = in_.PushLimit(length);
    return absl::OkStatus();
  }
  void ExitMessage(CodedInputStream::Limit limit) { in_.PopLimit(limit); }

  absl::Status Skip(const std::string& path, const Field& field) {
    const std::string where = absl::StrCat(path, path.empty() ? "" : ".", "field ",
                                           field.number);
    const int at = in_.CurrentPosition();
    switch (field.wire_type) {
      case kVarint: {
        uint64_t ignored = 0;
        if (!in_.ReadVarint64(&ignored)) return Error(where, "bad or truncated varint", at);
        return absl::OkStatus();
      }
      case kFixed64:
        return SkipBytes(where, 8);
      case kFixed32:
        return SkipBytes(where, 4);
      case kLengthDelimited: {
        int length = 0;
        RETURN_IF_ERROR(ReadLength(where, &length));
        return SkipBytes(where, length);
      }
      default:
        return Error(where, "unsupported wire type", at);
    }
  }

 private:
  static absl::Status Error(const std::string& path, absl::string_view what, int at) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.empty() ? "" : path + ": ", what, " at byte ", at));
  }
  absl::Status Truncated(const std::string& path, int at, int64_t needed) {
    return absl::InvalidArgumentError(absl::StrCat(
        path.empty() ? "" : path + ": ", "truncated at byte ", at, " (", needed,
        " bytes needed, ", std::max(in_.BytesUntilLimit(), 0), " left)"));
  }

  // A length prefix that fits in the current message.
  absl::Status ReadLength(const std::string& path, int* length) {
    const int at = in_.CurrentPosition();
    uint64_t v = 0;
    if (!in_.ReadVarint64(&v)) return Error(path, "bad or truncated length", at);
    const int left = std::max(in_.BytesUntilLimit(), 0);
    if (v > static_cast<uint64_t>(left)) {
      return Truncated(path, in_.CurrentPosition(), static_cast<int64_t>(
          std::min<uint64_t>(v, std::numeric_limits<int64_t>::max())));
    }
    *length = static_cast<int>(v);
    return absl::OkStatus();
  }

  absl::Status SkipBytes(const std::string& path, int n) {
    const int at = in_.CurrentPosition();
    if (in_.BytesUntilLimit() < n || !in_.Skip(n)) return Truncated(path, at, n);
    return absl::OkStatus();
  }

  CodedInputStream in_;
};

std::string Join(const std::string& path, absl::string_view field) {
  return absl::StrCat(path, ".", field);
}

absl::Status ParsePiece(WireReader& r, const std::string& path, SpmPiece* piece) {
  while (!r.AtEnd()) {
    Field f;
    RETURN_IF_ERROR(r.NextField(path, &f));
    switch (f.number) {
      case 1:
        RETURN_IF_ERROR(r.ReadBytes(Join(path, "piece"), f, &piece->piece));
        break;
      case 2:
        RETURN_IF_ERROR(r.ReadFloat(Join(path, "score"), f, &piece->score));
        break;
      case 3: {
        int32_t type = 0;
        RETURN_IF_ERROR(r.ReadInt32(Join(path, "type"), f, &type));
        if (type < 1 || type > 6) {
          return absl::InvalidArgumentError(absl::StrCat(
              path, ".type ", type, " is not a SentencePiece type (1 to 6)"));
        }
        piece->type = static_cast<SpmPieceType>(type);
        break;
      }
      default:
        RETURN_IF_ERROR(r.Skip(path, f));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseTrainerSpec(WireReader& r, const std::string& path,
                              SpmTrainerSpec* spec) {
  while (!r.AtEnd()) {
    Field f;
    RETURN_IF_ERROR(r.NextField(path, &f));
    switch (f.number) {
      case 3:
        RETURN_IF_ERROR(r.ReadInt32(Join(path, "model_type"), f, &spec->model_type));
        break;
      case 24:
        RETURN_IF_ERROR(r.ReadBool(Join(path, "treat_whitespace_as_suffix"), f,
                                   &spec->treat_whitespace_as_suffix));
        break;
      case 35:
        RETURN_IF_ERROR(r.ReadBool(Join(path, "byte_fallback"), f, &spec->byte_fallback));
        break;
      case 44: {
        std::string surface;
        RETURN_IF_ERROR(r.ReadBytes(Join(path, "unk_surface"), f, &surface));
        spec->unk_surface = std::move(surface);
        break;
      }
      case 45:
        RETURN_IF_ERROR(r.ReadBytes(Join(path, "unk_piece"), f, &spec->unk_piece));
        break;
      case 46:
        RETURN_IF_ERROR(r.ReadBytes(Join(path, "bos_piece"), f, &spec->bos_piece));
        break;
      case 47:
        RETURN_IF_ERROR(r.ReadBytes(Join(path, "eos_piece"), f, &spec->eos_piece));
        break;
      default:
        RETURN_IF_ERROR(r.Skip(path, f));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseNormalizerSpec(WireReader& r, const std::string& path,
                                 SpmNormalizerSpec* spec) {
  while (!r.AtEnd()) {
    Field f;
    RETURN_IF_ERROR(r.NextField(path, &f));
    switch (f.number) {
      case 1:
        RETURN_IF_ERROR(r.ReadBytes(Join(path, "name"), f, &spec->name));
        break;
      case 2:
        RETURN_IF_ERROR(r.ReadBytes(Join(path, "precompiled_charsmap"), f,
                                    &spec->precompiled_charsmap));
        break;
      case 3:
        RETURN_IF_ERROR(r.ReadBool(Join(path, "add_dummy_prefix"), f,
                                   &spec->add_dummy_prefix));
        break;
      case 4:
        RETURN_IF_ERROR(r.ReadBool(Join(path, "remove_extra_whitespaces"), f,
                                   &spec->remove_extra_whitespaces));
        break;
      case 5:
        RETURN_IF_ERROR(r.ReadBool(Join(path, "escape_whitespaces"), f,
                                   &spec->escape_whitespaces));
        break;
      default:
        RETURN_IF_ERROR(r.Skip(path, f));
    }
  }
  return absl::OkStatus();
}

// Parses the embedded message of `f` with `parse` (proto2 merge semantics:
// a message field seen twice merges into the same object).
template <typename T, typename ParseFn>
absl::Status ParseEmbedded(WireReader& r, const Field& f, const std::string& path,
                           T* message, ParseFn parse) {
  CodedInputStream::Limit limit;
  RETURN_IF_ERROR(r.EnterMessage(path, f, &limit));
  RETURN_IF_ERROR(parse(r, path, message));
  r.ExitMessage(limit);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SpmModelProto> ParseSpmModelProto(absl::string_view serialized) {
  if (serialized.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat("model of ", serialized.size(), " bytes is over 2 GiB"));
  }
  SpmModelProto model;
  WireReader r(serialized);
  while (!r.AtEnd()) {
    Field f;
    RETURN_IF_ERROR(r.NextField("", &f));
    switch (f.number) {
      case 1: {
        const std::string path = absl::StrCat("pieces[", model.pieces.size(), "]");
        model.pieces.emplace_back();
        RETURN_IF_ERROR(ParseEmbedded(r, f, path, &model.pieces.back(), ParsePiece));
        break;
      }
      case 2:
        RETURN_IF_ERROR(
            ParseEmbedded(r, f, "trainer_spec", &model.trainer_spec, ParseTrainerSpec));
        break;
      case 3:
        RETURN_IF_ERROR(ParseEmbedded(r, f, "normalizer_spec", &model.normalizer_spec,
                                      ParseNormalizerSpec));
        break;
      case 5:
        if (!model.denormalizer_spec.has_value()) model.denormalizer_spec.emplace();
        RETURN_IF_ERROR(ParseEmbedded(r, f, "denormalizer_spec",
                                      &*model.denormalizer_spec, ParseNormalizerSpec));
        break;
      default:
        RETURN_IF_ERROR(r.Skip("", f));
    }
  }
  return model;
}

}  // namespace moe::text
