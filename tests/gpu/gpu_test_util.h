// Skipping GPU tests on machines that cannot run them, with the reason.
#ifndef MOE_TESTS_GPU_GPU_TEST_UTIL_H_
#define MOE_TESTS_GPU_GPU_TEST_UTIL_H_

#include "core/backends.h"
#include "gtest/gtest.h"

// Skips the current test unless CUDA device 0 is usable, printing why
// (no CUDA backend in this build, no driver, no device).
#define MOE_SKIP_WITHOUT_GPU()                                            \
  do {                                                                    \
    const ::moe::GpuInventory moe_gpus_ = ::moe::ProbeGpus();             \
    if (moe_gpus_.devices.empty()) {                                      \
      GTEST_SKIP() << "needs a CUDA GPU, none usable here: "              \
                   << moe_gpus_.why_none;                                 \
    }                                                                     \
  } while (false)

#endif  // MOE_TESTS_GPU_GPU_TEST_UTIL_H_
