#include "core/text/spm_backend.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <queue>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "core/status_macros.h"

namespace moe::text {
namespace {

constexpr absl::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581
constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
constexpr absl::string_view kDefaultUnkSurface = " \xE2\x81\x87 ";  // " U+2047 "

// The length of the UTF-8 character at the start of `s` when it is a valid
// encoding of a Unicode scalar value (sentencepiece's DecodeUTF8: no
// overlong forms, no surrogates, nothing above U+10FFFF); 0 when not.
size_t ValidCharLength(absl::string_view s) {
  if (s.empty()) return 0;
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const auto trail = [&](size_t i) { return (b(i) & 0xC0) == 0x80; };
  const auto scalar = [](uint32_t cp) { return cp < 0xD800 || (cp >= 0xE000 && cp <= 0x10FFFF); };
  if (b(0) < 0x80) return 1;
  if ((b(0) & 0xE0) == 0xC0 && s.size() >= 2 && trail(1)) {
    const uint32_t cp = ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    return cp >= 0x80 ? 2 : 0;
  }
  if ((b(0) & 0xF0) == 0xE0 && s.size() >= 3 && trail(1) && trail(2)) {
    const uint32_t cp = ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    return cp >= 0x800 && scalar(cp) ? 3 : 0;
  }
  if ((b(0) & 0xF8) == 0xF0 && s.size() >= 4 && trail(1) && trail(2) && trail(3)) {
    const uint32_t cp = ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) |
                        ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    return cp >= 0x10000 && scalar(cp) ? 4 : 0;
  }
  return 0;
}

// The character length sentencepiece's BPE splitting assumes from the lead
// byte alone (string_util::OneCharLen), clipped to `s`.
size_t LeadByteLength(absl::string_view s) {
  static constexpr unsigned char kLength[16] = {1, 1, 1, 1, 1, 1, 1, 1,
                                                1, 1, 1, 1, 2, 2, 3, 4};
  return std::min<size_t>(s.size(), kLength[static_cast<unsigned char>(s[0]) >> 4]);
}

// "<0x41>" -> 0x41, as sentencepiece's PieceToByte (upper-case hex, two
// digits); -1 when `piece` is not a byte piece.
int PieceToByte(absl::string_view piece) {
  if (piece.size() != 6 || !absl::StartsWith(piece, "<0x") || piece[5] != '>') return -1;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

std::string ModelTypeName(int type) {
  switch (type) {
    case kSpmUnigram: return "UNIGRAM (1)";
    case kSpmBpe: return "BPE (2)";
    case kSpmWord: return "WORD (3)";
    case kSpmChar: return "CHAR (4)";
    default: return absl::StrCat(type, ", not a model type");
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<SpmBackend>> SpmBackend::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  absl::StatusOr<std::unique_ptr<SpmBackend>> backend = FromSerialized(bytes);
  if (!backend.ok()) {
    return absl::Status(backend.status().code(),
                        absl::StrCat(path, ": ", backend.status().message()));
  }
  return backend;
}

absl::StatusOr<std::unique_ptr<SpmBackend>> SpmBackend::FromSerialized(
    absl::string_view serialized) {
  if (serialized.empty()) {
    return absl::InvalidArgumentError("empty file, not a SentencePiece model");
  }
  ASSIGN_OR_RETURN(SpmModelProto model, ParseSpmModelProto(serialized));
  return FromProto(std::move(model));
}

absl::StatusOr<std::unique_ptr<SpmBackend>> SpmBackend::FromProto(SpmModelProto model) {
  if (model.pieces.empty()) {
    return absl::InvalidArgumentError("no pieces: not a SentencePiece model");
  }
  const SpmTrainerSpec& trainer = model.trainer_spec;
  if (trainer.model_type != kSpmBpe) {
    return absl::InvalidArgumentError(absl::StrCat(
        "trainer_spec.model_type is ", ModelTypeName(trainer.model_type),
        ": only BPE (2) SentencePiece models are supported"));
  }
  if (!model.normalizer_spec.precompiled_charsmap.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "normalizer_spec.name \"", model.normalizer_spec.name,
        "\" has a precompiled_charsmap: only the identity normalization rule is "
        "supported"));
  }
  if (model.denormalizer_spec.has_value() &&
      !model.denormalizer_spec->precompiled_charsmap.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "denormalizer_spec.name \"", model.denormalizer_spec->name,
        "\" has a precompiled_charsmap: denormalization is not supported"));
  }

  auto b = std::unique_ptr<SpmBackend>(new SpmBackend());
  b->byte_fallback_ = trainer.byte_fallback;
  b->treat_whitespace_as_suffix_ = trainer.treat_whitespace_as_suffix;
  b->normalizer_ = std::move(model.normalizer_spec);
  b->unk_surface_ = trainer.unk_surface.value_or(std::string(kDefaultUnkSurface));
  b->byte_ids_.fill(-1);
  b->id_to_byte_.assign(model.pieces.size(), -1);
  b->all_.reserve(model.pieces.size());
  for (size_t i = 0; i < model.pieces.size(); ++i) {
    const SpmPiece& p = model.pieces[i];
    const int id = static_cast<int>(i);
    if (p.piece.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("pieces[", i, "].piece is empty"));
    }
    if (auto [it, inserted] = b->all_.emplace(p.piece, id); !inserted) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pieces[", i, "].piece \"", p.piece, "\" repeats pieces[", it->second, "]"));
    }
    switch (p.type) {
      case SpmPieceType::kNormal:
      case SpmPieceType::kUnused:
        b->mergeable_.emplace(p.piece, id);
        break;
      case SpmPieceType::kUserDefined:
        b->mergeable_.emplace(p.piece, id);
        b->user_defined_[static_cast<unsigned char>(p.piece[0])].push_back(p.piece);
        b->has_user_defined_ = true;
        break;
      case SpmPieceType::kUnknown:
        if (b->unk_id_ >= 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              "pieces[", i, "] is a second UNKNOWN piece (the first is pieces[",
              b->unk_id_, "])"));
        }
        b->unk_id_ = id;
        break;
      case SpmPieceType::kControl:
        break;
      case SpmPieceType::kByte: {
        if (!trainer.byte_fallback) {
          return absl::InvalidArgumentError(absl::StrCat(
              "pieces[", i, "] is a BYTE piece but trainer_spec.byte_fallback is false"));
        }
        const int byte = PieceToByte(p.piece);
        if (byte < 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              "pieces[", i, "].piece \"", p.piece, "\" is not a byte piece <0xXX>"));
        }
        b->byte_ids_[byte] = id;
        b->id_to_byte_[i] = byte;
        break;
      }
    }
  }
  if (b->unk_id_ < 0) {
    return absl::InvalidArgumentError("no piece has type UNKNOWN");
  }
  if (b->byte_fallback_) {
    for (int byte = 0; byte < 256; ++byte) {
      if (b->byte_ids_[byte] < 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "trainer_spec.byte_fallback is true but byte piece <0x%02X> is missing", byte));
      }
    }
  }
  for (std::vector<std::string>& symbols : b->user_defined_) {
    std::stable_sort(symbols.begin(), symbols.end(),
                     [](const std::string& x, const std::string& y) {
                       return x.size() > y.size();
                     });
  }
  b->pieces_ = std::move(model.pieces);
  const auto control_id = [&](const std::string& piece, absl::string_view fallback) {
    const int id = b->PieceToId(piece.empty() ? fallback : piece);
    return b->IsType(id, SpmPieceType::kControl) ? id : -1;
  };
  b->bos_id_ = control_id(trainer.bos_piece, "<s>");
  b->eos_id_ = control_id(trainer.eos_piece, "</s>");
  return b;
}

int SpmBackend::PieceToId(absl::string_view piece) const {
  const auto it = all_.find(piece);
  return it == all_.end() ? unk_id_ : it->second;
}

std::string SpmBackend::IdToPiece(int id) const {
  return id >= 0 && id < size() ? pieces_[id].piece : std::string();
}

bool SpmBackend::IsControlOrUnknown(int id) const {
  return IsType(id, SpmPieceType::kControl) || IsType(id, SpmPieceType::kUnknown);
}

size_t SpmBackend::MatchUserDefined(absl::string_view s) const {
  if (!has_user_defined_ || s.empty()) return 0;
  for (const std::string& symbol : user_defined_[static_cast<unsigned char>(s[0])]) {
    if (absl::StartsWith(s, symbol)) return symbol.size();
  }
  return 0;
}

// sentencepiece's Normalizer::Normalize with an empty charsmap (identity):
// user-defined symbols and valid characters pass unchanged, an invalid byte
// becomes U+FFFD; then the whitespace options.
std::string SpmBackend::Normalize(absl::string_view input) const {
  std::string out;
  // The next unit of `s`: (its normalized text, the bytes it consumes).
  const auto next = [this](absl::string_view s) -> std::pair<absl::string_view, size_t> {
    if (const size_t n = MatchUserDefined(s); n > 0) return {s.substr(0, n), n};
    if (const size_t n = ValidCharLength(s); n > 0) return {s.substr(0, n), n};
    return {kReplacement, 1};
  };
  const bool remove_extra = normalizer_.remove_extra_whitespaces;
  const bool escape = normalizer_.escape_whitespaces;
  if (remove_extra) {
    while (!input.empty()) {
      const auto [unit, n] = next(input);
      if (unit != " ") break;
      input.remove_prefix(n);
    }
  }
  if (input.empty()) return out;
  const absl::string_view space = escape ? kSpaceSymbol : " ";
  out.reserve(input.size() * 3);
  if (!treat_whitespace_as_suffix_ && normalizer_.add_dummy_prefix) absl::StrAppend(&out, space);
  bool prev_is_space = remove_extra;
  while (!input.empty()) {
    auto [unit, n] = next(input);
    if (prev_is_space) {
      while (absl::ConsumePrefix(&unit, " ")) {
      }
    }
    if (!unit.empty()) {
      for (char c : unit) {
        if (escape && c == ' ') {
          absl::StrAppend(&out, kSpaceSymbol);
        } else {
          out.push_back(c);
        }
      }
      prev_is_space = absl::EndsWith(unit, " ");
    }
    input.remove_prefix(n);
    if (!remove_extra) prev_is_space = false;
  }
  if (remove_extra) {
    absl::string_view kept(out);
    while (absl::ConsumeSuffix(&kept, space)) {
    }
    out.erase(kept.size());
  }
  if (treat_whitespace_as_suffix_ && normalizer_.add_dummy_prefix) absl::StrAppend(&out, space);
  return out;
}

// sentencepiece's bpe::Model::Encode (no dropout) and the id assignment of
// SentencePieceProcessor::PopulateSentencePieceText.
std::vector<int> SpmBackend::Encode(absl::string_view text) const {
  const std::string normalized = Normalize(text);
  const absl::string_view all(normalized);

  // The text as a doubly linked list of symbols; a merge grows the left
  // symbol and empties the right one. User-defined symbols never merge.
  struct Symbol {
    int prev;
    int next;
    bool frozen;
    size_t begin;
    size_t size;  // 0: merged into its left neighbour
  };
  std::vector<Symbol> symbols;
  for (size_t pos = 0; pos < all.size();) {
    const absl::string_view rest = all.substr(pos);
    size_t n = MatchUserDefined(rest);
    const bool frozen = n > 0;
    if (!frozen) n = LeadByteLength(rest);
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({index - 1, pos + n < all.size() ? index + 1 : -1, frozen, pos, n});
    pos += n;
  }
  std::vector<int> ids;
  if (symbols.empty()) return ids;

  struct Candidate {
    float score;
    int left;
    int right;
    size_t size;  // stale once the symbols' sizes no longer add up to it
  };
  // Highest score first; ties: leftmost first.
  const auto lower = [](const Candidate& x, const Candidate& y) {
    return x.score < y.score || (x.score == y.score && x.left > y.left);
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(lower)> agenda(lower);
  // UNUSED pieces may be merged through but are never output: each maps to
  // the two symbols it was merged from.
  absl::flat_hash_map<absl::string_view, std::pair<absl::string_view, absl::string_view>>
      unmerge;
  const auto piece_of = [&](int i) { return all.substr(symbols[i].begin, symbols[i].size); };
  const auto consider = [&](int left, int right) {
    if (left < 0 || right < 0 || symbols[left].frozen || symbols[right].frozen) return;
    const absl::string_view merged =
        all.substr(symbols[left].begin, symbols[left].size + symbols[right].size);
    const auto it = mergeable_.find(merged);
    if (it == mergeable_.end()) return;
    agenda.push({pieces_[it->second].score, left, right, merged.size()});
    if (pieces_[it->second].type == SpmPieceType::kUnused) {
      unmerge[merged] = {piece_of(left), piece_of(right)};
    }
  };
  for (size_t i = 1; i < symbols.size(); ++i) {
    consider(static_cast<int>(i) - 1, static_cast<int>(i));
  }
  while (!agenda.empty()) {
    const Candidate top = agenda.top();
    agenda.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    if (left.size == 0 || right.size == 0 || left.size + right.size != top.size) continue;
    left.size += right.size;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    right.size = 0;
    consider(left.prev, top.left);
    consider(top.left, left.next);
  }

  bool prev_unknown = false;
  const auto emit = [&](absl::string_view piece) {
    const auto it = mergeable_.find(piece);
    if (it != mergeable_.end()) {
      ids.push_back(it->second);
      prev_unknown = false;
      return;
    }
    if (byte_fallback_) {
      for (char c : piece) ids.push_back(byte_ids_[static_cast<unsigned char>(c)]);
    } else if (!prev_unknown) {
      ids.push_back(unk_id_);  // a run of unknown pieces is one unk
    }
    prev_unknown = true;
  };
  std::vector<absl::string_view> pending;
  for (int i = 0; i != -1; i = symbols[i].next) {
    pending.push_back(piece_of(i));
    while (!pending.empty()) {
      const absl::string_view piece = pending.back();
      pending.pop_back();
      const auto it = unmerge.find(piece);
      const auto id = mergeable_.find(piece);
      if (it != unmerge.end() && id != mergeable_.end() &&
          pieces_[id->second].type == SpmPieceType::kUnused) {
        pending.push_back(it->second.second);
        pending.push_back(it->second.first);
        continue;
      }
      emit(piece);
    }
  }
  return ids;
}

// sentencepiece's SentencePieceProcessor::Decode.
absl::StatusOr<std::string> SpmBackend::Decode(absl::Span<const int> ids) const {
  std::string text;
  std::string bytes;  // a run of byte pieces not yet appended
  const auto flush_bytes = [&] {
    absl::string_view rest(bytes);
    while (!rest.empty()) {
      const size_t n = ValidCharLength(rest);
      if (n == 0) {
        absl::StrAppend(&text, kReplacement);
        rest.remove_prefix(1);
      } else {
        absl::StrAppend(&text, rest.substr(0, n));
        rest.remove_prefix(n);
      }
    }
    bytes.clear();
  };
  // The leading whitespace to drop: the first piece's "▁" (the dummy
  // prefix), or with remove_extra_whitespaces every "▁" that starts a piece
  // while nothing has been output.
  const bool strip_leading =
      normalizer_.add_dummy_prefix || normalizer_.remove_extra_whitespaces;
  bool at_start = true;
  bool stripped = false;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int id = ids[i];
    if (id < 0 || id >= size()) {
      return absl::OutOfRangeError(absl::StrCat("ids[", i, "]: id ", id,
                                                " is outside [0, ", size(), ")"));
    }
    if (id_to_byte_[id] >= 0) {
      bytes.push_back(static_cast<char>(id_to_byte_[id]));
      continue;
    }
    flush_bytes();
    if (stripped || !text.empty()) at_start = false;
    stripped = false;
    const SpmPiece& p = pieces_[id];
    if (p.type == SpmPieceType::kControl) continue;
    if (p.type == SpmPieceType::kUnknown) {
      absl::StrAppend(&text, unk_surface_);
      continue;
    }
    absl::string_view piece(p.piece);
    if (at_start && strip_leading) {
      stripped = absl::ConsumePrefix(&piece, kSpaceSymbol) &&
                 !normalizer_.remove_extra_whitespaces;
    }
    absl::StrAppend(&text, absl::StrReplaceAll(piece, {{kSpaceSymbol, " "}}));
  }
  flush_bytes();
  return text;
}

}  // namespace moe::text
