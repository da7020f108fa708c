// Tokenizer::Load on an arbitrary tokenizer.json (it comes with the
// checkpoint, from outside). A file it accepts gives a tokenizer that
// encodes and decodes a fixed text without crashing, whose ids are all in
// range.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/text/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

// One folder per process, removed at exit.
struct Folder {
  Folder()
      : path(std::filesystem::temp_directory_path() /
             ("moe-tokenizer-file-fuzzer-" + std::to_string(::getpid()))) {
    std::filesystem::create_directories(path);
  }
  ~Folder() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  std::filesystem::path path;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Folder folder;
  {
    std::ofstream out(folder.path / "tokenizer.json",
                      std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  absl::StatusOr<std::unique_ptr<moe::Tokenizer>> tokenizer =
      moe::Tokenizer::Load(folder.path.string());
  if (!tokenizer.ok()) return 0;
  for (bool special : {false, true}) {
    absl::StatusOr<std::vector<int32_t>> ids =
        (*tokenizer)->Encode("Hello, world! 12345 中文 🙂 <s>\n\t end", special);
    if (!ids.ok()) continue;
    for (int32_t id : *ids) {
      moe::fuzz::Check(id >= 0 && id < (*tokenizer)->vocab_size(),
                       "Encode gives ids in the vocabulary");
    }
    (void)(*tokenizer)->Decode(*ids, false);
    (void)(*tokenizer)->Decode(*ids, true);
  }
  return 0;
}
