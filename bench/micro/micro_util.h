// What the moe-microbench files share: deterministic test data, a scratch
// directory for generated models, and fixtures built once and torn down
// before the process exits.
//
// Benchmarks run one at a time on the main thread, so none of this is
// thread-safe.
#ifndef MOE_BENCH_MICRO_MICRO_UTIL_H_
#define MOE_BENCH_MICRO_MICRO_UTIL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace moe::microbench {

// `n` values uniform in [-scale, scale]; the same `seed` gives the same
// values on every run.
std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale = 1.0f);
// The same, rounded to BF16 (the weights' stored dtype).
std::vector<uint16_t> RandomBf16(size_t n, uint32_t seed, float scale);

// A BF16 view of `data` (borrowed: it must outlive the view) with `shape`.
TensorView Bf16View(const std::vector<uint16_t>& data,
                    std::vector<int64_t> shape);

// The compute pool the kernel benchmarks share: one thread per core, the
// caller included.
ThreadPool& KernelPool();

// A directory (mkdtemp under $TMPDIR, else /tmp) for the models generated
// on the fly, created on first use and removed by RunExitHooks. Empty when
// it cannot be created.
const std::string& ScratchDir();

// Registers `hook` to run in RunExitHooks; hooks run in reverse order of
// registration, so a fixture registered after the scratch directory (whose
// model it generated there) is torn down before the directory goes.
void AtExit(std::function<void()> hook);
// Runs the hooks; called by main once the benchmarks are done, while gRPC
// and the servers' threads are still in a state to shut down cleanly.
void RunExitHooks();

// Where the fixture of type T lives; one per type.
template <typename T>
absl::StatusOr<std::unique_ptr<T>>*& FixtureSlot() {
  static absl::StatusOr<std::unique_ptr<T>>* slot = nullptr;
  return slot;
}

// The fixture of type T, built by `make` on the first call and kept (with
// its error, when building failed) until RunExitHooks destroys it.
template <typename T, typename Make>
absl::StatusOr<T*> SharedFixture(Make make) {
  absl::StatusOr<std::unique_ptr<T>>*& slot = FixtureSlot<T>();
  if (slot == nullptr) {
    slot = new absl::StatusOr<std::unique_ptr<T>>(make());
    AtExit([] {
      delete FixtureSlot<T>();
      FixtureSlot<T>() = nullptr;
    });
  }
  if (!slot->ok()) return slot->status();
  return slot->value().get();
}

}  // namespace moe::microbench

#endif  // MOE_BENCH_MICRO_MICRO_UTIL_H_
