// moe-microbench: Google Benchmark micro-benchmarks of the hot paths, each
// calling the project's own code (see bench/README.md):
//   kernels_bench.cc      BF16 MatMul/GEMV, paged attention, grouped expert
//                         FFNs, RMSNorm, RoPE
//   codec_bench.cc        tensor codec and RunExpertsRequest (de)serialisation
//   rpc_bench.cc          one router -> expert round trip over loopback gRPC
//   kv_transfer_bench.cc  K/V ingestion on a decode server and a whole
//                         TransferKv stream
//
//   build/bin/moe-microbench [--benchmark_filter=REGEX]
//       [--benchmark_format=json --benchmark_out=build/bench/micro.json]
//
// Models are generated into a temporary directory that is removed at exit.
#include "absl/synchronization/mutex.h"
#include "bench/micro/micro_util.h"
#include "benchmark/benchmark.h"
#include "core/cpu/kernels.h"

int main(int argc, char** argv) {
  // Debian builds Abseil without NDEBUG, which leaves Mutex deadlock
  // detection on; the servers turn it off (PrepareServerProcess), and so
  // must a benchmark of their code.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("moe_avx512_matmul",
                              moe::cpu::HasAvx512MatMul() ? "yes" : "no");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  moe::microbench::RunExitHooks();
  return 0;
}
