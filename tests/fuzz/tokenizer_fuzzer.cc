// Tokenizer::Encode / Decode / StreamingDetokenizer on arbitrary bytes, with
// two small tokenizers written at start-up in the two model styles we load:
// byte-level BPE (GPT-2 style: ByteLevel pre-tokenizer and decoder, a Split
// regex, added tokens) and SentencePiece-style BPE with byte fallback
// (Prepend/Replace normalizer, ByteFallback/Fuse/Strip decoder). Invariants:
//   * Encode accepts exactly the valid UTF-8 inputs;
//   * neither tokenizer normalises away information, so Decode(Encode(x))
//     == x (for the SentencePiece style, when x holds no added token: the
//     text after one gets its own "▁" prefix, as Hugging Face does; nor a
//     literal "▁", which decodes as a space);
//   * streaming the ids one by one gives whole-UTF-8 chunks whose
//     concatenation is Decode(ids);
//   * the input read as ids decodes or is refused (out of range), never
//     crashes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/text/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

// Byte-level BPE: the 256 byte symbols, a few merges, a Split regex in
// front of the ByteLevel pre-tokenizer, one special and one normal added
// token.
std::string ByteLevelJson() {
  std::string vocab;
  // GPT-2's byte-to-symbol table.
  std::vector<int> bytes;
  for (int b = '!'; b <= '~'; ++b) bytes.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bytes.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bytes.push_back(b);
  std::vector<int> symbols = bytes;
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    bool listed = false;
    for (int x : bytes) listed = listed || x == b;
    if (!listed) {
      bytes.push_back(b);
      symbols.push_back(256 + extra++);
    }
  }
  auto utf8 = [](int cp) {
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
  };
  auto quoted = [](const std::string& s) {
    std::string q = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\') q += '\\';
      q += c;
    }
    return q + "\"";
  };
  int id = 0;
  for (size_t i = 0; i < symbols.size(); ++i) {
    vocab += (vocab.empty() ? "" : ",") + quoted(utf8(symbols[i])) + ":" +
             std::to_string(id++);
  }
  // "Ġ" is the space symbol (U+0120).
  const char* merged[] = {"Ġt", "he", "Ġthe", "in", "Ġa", "er"};
  for (const char* m : merged) {
    vocab += "," + quoted(m) + ":" + std::to_string(id++);
  }
  const int special = id++;
  const int normal = id++;
  return std::string(R"({"version":"1.0","truncation":null,"padding":null,
"added_tokens":[
 {"id":)") + std::to_string(special) +
         R"(,"content":"<|end|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
 {"id":)" + std::to_string(normal) +
         R"(,"content":"<tool>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":false}],
"normalizer":null,
"pre_tokenizer":{"type":"Sequence","pretokenizers":[
 {"type":"Split","pattern":{"Regex":"\\p{N}{1,3}"},"behavior":"Isolated","invert":false},
 {"type":"ByteLevel","add_prefix_space":false,"trim_offsets":false,"use_regex":true}]},
"post_processor":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":false,"use_regex":true},
"decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},
"model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,
 "end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,
 "vocab":{)" + vocab + R"(},
 "merges":["Ġ t","h e","Ġt he","i n","Ġ a","e r"]}})";
}

// SentencePiece-style BPE: <unk>, <s>, </s>, the 256 byte tokens, a few
// pieces and merges; unknown characters fall back to bytes.
std::string SentencePieceJson() {
  std::string vocab = R"("<unk>":0,"<s>":1,"</s>":2)";
  int id = 3;
  char name[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab += ",\"" + std::string(name) + "\":" + std::to_string(id++);
  }
  for (const char* piece : {"\xe2\x96\x81", "a", "b", "c", "t", "h", "e",
                            "\xe2\x96\x81t", "he", "\xe2\x96\x81the"}) {
    vocab += ",\"" + std::string(piece) + "\":" + std::to_string(id++);
  }
  return R"({"version":"1.0","truncation":null,"padding":null,
"added_tokens":[
 {"id":0,"content":"<unk>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
 {"id":1,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
 {"id":2,"content":"</s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},
 {"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
"pre_tokenizer":null,
"post_processor":null,
"decoder":{"type":"Sequence","decoders":[
 {"type":"Replace","pattern":{"String":"▁"},"content":" "},
 {"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,
 "end_of_word_suffix":null,"fuse_unk":true,"byte_fallback":true,"ignore_merges":false,
 "vocab":{)" + vocab + R"(},
 "merges":["▁ t","h e","▁t he"]}})";
}

std::unique_ptr<moe::Tokenizer> LoadFrom(const std::string& name,
                                         const std::string& json) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      ("moe-tokenizer-fuzzer-" + std::to_string(::getpid()) + "-" + name);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << json;
  absl::StatusOr<std::unique_ptr<moe::Tokenizer>> tokenizer =
      moe::Tokenizer::Load(dir.string());
  std::filesystem::remove_all(dir);
  moe::fuzz::CheckOk(tokenizer.status(), "loading the fuzzer's tokenizer");
  return *std::move(tokenizer);
}

bool ValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    int n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      n = 1;
      cp = c;
    } else if ((c >> 5) == 0x6) {
      n = 2;
      cp = c & 0x1F;
    } else if ((c >> 4) == 0xE) {
      n = 3;
      cp = c & 0x0F;
    } else if ((c >> 3) == 0x1E) {
      n = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      const unsigned char d = s[i + k];
      if ((d >> 6) != 0x2) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
        (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n;
  }
  return true;
}

void CheckTokenizer(const moe::Tokenizer& tokenizer, absl::string_view text,
                    bool round_trips) {
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(text, false);
  moe::fuzz::Check(ids.ok() == ValidUtf8(text),
                   "Encode accepts exactly the valid UTF-8 inputs");
  if (!ids.ok()) return;
  absl::StatusOr<std::string> decoded = tokenizer.Decode(*ids, false);
  moe::fuzz::CheckOk(decoded.status(), "decoding Encode's ids");
  if (round_trips) {
    moe::fuzz::Check(*decoded == text, "Decode(Encode(x)) == x");
  }

  moe::StreamingDetokenizer stream(tokenizer, false);
  std::string streamed;
  for (int32_t id : *ids) {
    absl::StatusOr<std::string> chunk = stream.Push(id);
    moe::fuzz::CheckOk(chunk.status(), "StreamingDetokenizer::Push");
    moe::fuzz::Check(ValidUtf8(*chunk), "a streamed chunk is whole UTF-8");
    streamed += *chunk;
  }
  absl::StatusOr<std::string> rest = stream.Finish();
  moe::fuzz::CheckOk(rest.status(), "StreamingDetokenizer::Finish");
  streamed += *rest;
  moe::fuzz::Check(streamed == *decoded, "streamed text == Decode(ids)");
}

void CheckIds(const moe::Tokenizer& tokenizer, const uint8_t* data,
              size_t size) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < size; i += 2) {
    // Mostly in range, sometimes just past the end.
    ids.push_back((data[i] | (data[i + 1] << 8)) % (tokenizer.vocab_size() + 4));
  }
  for (bool skip : {false, true}) {
    absl::StatusOr<std::string> text = tokenizer.Decode(ids, skip);
    if (text.ok()) {
      moe::fuzz::Check(ValidUtf8(*text), "Decode gives valid UTF-8");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::unique_ptr<moe::Tokenizer> byte_level =
      LoadFrom("byte-level", ByteLevelJson());
  static const std::unique_ptr<moe::Tokenizer> sentencepiece =
      LoadFrom("sentencepiece", SentencePieceJson());
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  CheckTokenizer(*byte_level, text, /*round_trips=*/true);
  const bool has_added_token = text.find("<s>") != text.npos ||
                               text.find("</s>") != text.npos ||
                               text.find("<unk>") != text.npos;
  // A literal "▁" (U+2581) is SentencePiece's space: it decodes as " ", in
  // Hugging Face's Llama tokenizers as here, so such text does not round-trip.
  const bool has_metaspace = text.find("\xE2\x96\x81") != text.npos;
  CheckTokenizer(*sentencepiece, text, !has_added_token && !has_metaspace);
  CheckIds(*byte_level, data, size);
  CheckIds(*sentencepiece, data, size);
  return 0;
}
