#include "bench/micro/micro_util.h"

#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <random>

#include "core/dtype.h"

namespace moe::microbench {
namespace {

std::vector<std::function<void()>>& Hooks() {
  static auto* hooks = new std::vector<std::function<void()>>();
  return *hooks;
}

}  // namespace

std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> values(n);
  for (float& v : values) v = dist(rng);
  return values;
}

std::vector<uint16_t> RandomBf16(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<uint16_t> values(n);
  for (uint16_t& v : values) v = FloatToBF16(dist(rng));
  return values;
}

TensorView Bf16View(const std::vector<uint16_t>& data,
                    std::vector<int64_t> shape) {
  TensorView view;
  view.data = data.data();
  view.dtype = DType::kBF16;
  view.shape = std::move(shape);
  return view;
}

ThreadPool& KernelPool() {
  static auto* pool = new ThreadPool(/*num_threads=*/0);
  return *pool;
}

const std::string& ScratchDir() {
  static std::string* dir = nullptr;
  if (dir == nullptr) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
        "/moe-microbench-XXXXXX";
    dir = new std::string();
    if (mkdtemp(pattern.data()) != nullptr) {
      *dir = pattern;
      AtExit([] {
        std::error_code ec;
        std::filesystem::remove_all(*dir, ec);
        if (ec) {
          std::fprintf(stderr, "moe-microbench: could not remove %s: %s\n",
                       dir->c_str(), ec.message().c_str());
        }
      });
    }
  }
  return *dir;
}

void AtExit(std::function<void()> hook) { Hooks().push_back(std::move(hook)); }

void RunExitHooks() {
  std::vector<std::function<void()>>& hooks = Hooks();
  while (!hooks.empty()) {
    std::function<void()> hook = std::move(hooks.back());
    hooks.pop_back();
    hook();
  }
}

}  // namespace moe::microbench
