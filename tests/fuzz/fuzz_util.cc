#include "tests/fuzz/fuzz_util.h"

#include <filesystem>
#include <map>
#include <mutex>

#include "core/model_generator.h"
#include "google/protobuf/stubs/logging.h"

namespace moe::fuzz {
namespace {

// Directories to remove at exit.
std::map<ModelFamily, std::string>& ModelDirs() {
  static auto* dirs = new std::map<ModelFamily, std::string>();
  return *dirs;
}

void RemoveModelDirs() {
  for (const auto& [family, dir] : ModelDirs()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
}

}  // namespace

const std::string& SmallModelDir(ModelFamily family) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  auto it = ModelDirs().find(family);
  if (it != ModelDirs().end()) return it->second;
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr ? tmp : "/tmp") +
                        "/moe-fuzz-model-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  if (ModelDirs().empty()) std::atexit(RemoveModelDirs);
  ModelDirs()[family] = pattern;
  GeneratorSpec spec;
  spec.config = SmallConfig(family);
  spec.dtype = DType::kF32;
  spec.seed = 1;
  CheckOk(GenerateModel(pattern, spec), "writing the fuzz model");
  return ModelDirs()[family];
}

bool QuietProtobufLogs() {
  google::protobuf::SetLogHandler(nullptr);
  return true;
}

void CheckOk(const absl::Status& status, const char* what) {
  if (!status.ok()) {
    std::fprintf(stderr, "fuzz invariant broken: %s: %s\n", what,
                 status.ToString().c_str());
    std::abort();
  }
}

}  // namespace moe::fuzz
