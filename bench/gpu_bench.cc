// moe-gpu-bench: the CUDA backend against the device's own limits, in one
// run: the grouped expert FFN at decode batch sizes against HBM bandwidth,
// at prefill batch sizes against a plain cuBLAS GEMM, and the single-process
// engine's decode against the HBM roofline.
//
// Prints a table to stdout and merges its figures into a JSON report (other
// keys of an existing report are kept). Progress goes to stderr. Exits 1,
// saying why, when no CUDA device is usable.
//
//   build/bin/moe-gpu-bench [--report build/bench/report.json]
//       [--model_cache build/bench/models/mixtral-gpu-bench] [--device cuda:0]
//
// Measurements (device times from cudaEvents on the backend's stream; every
// figure is the best of --repeats timed runs after warm-up runs):
//   gpu_peak_bandwidth_gbps      2 x memory clock x bus width, from
//                                cudaDevAttrMemoryClockRate and
//                                cudaDevAttrGlobalMemoryBusWidth; the
//                                denominator of every HBM fraction.
//   gpu_expert_gbps_t{1,2,4,8}   8 Mixtral-8x7B experts (hidden 4096,
//                                intermediate 14336, BF16 random weights),
//                                t tokens each, all 8 groups in one
//                                CudaExpertFfn::RunOnDevice: bytes read (the
//                                8 experts' weights and the input rows) per
//                                second of device time.
//   gpu_expert_hbm_fraction_t{..} the same over the peak bandwidth;
//   gpu_expert_b1_hbm_fraction   the t = 1 figure.
//   gpu_gemm_peak_tflops         cublasGemmEx 8192^3, BF16 in and out, float32
//                                compute, 2 m n k FLOPs per GEMM.
//   gpu_expert_tflops_t{2048,4096}
//                                the 8 experts at t tokens each, 6 t hidden
//                                intermediate FLOPs per expert.
//   gpu_expert_large_tflops_fraction
//                                the t = 2048 figure over the GEMM peak.
//   gpu_decode_tokens_per_s      Engine on the device, a generated
//                                Mixtral-layout model (~9.5 GB BF16), batch 1,
//                                decode tokens per second of decode time.
//   gpu_decode_roofline_tokens_per_s
//                                peak bandwidth / bytes one decode token reads
//                                (ActiveWeightBytesPerToken + the float32 K/V
//                                rows it attends over, averaged over the run).
//   gpu_decode_hbm_roofline_fraction
//                                the two above divided.
//   gpu_decode_b8_tokens_per_s   the same engine at batch 8.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "bench/bench_common.h"
#include "core/backends.h"
#include "core/cuda/cuda_expert_ffn.h"
#include "core/cuda/cuda_status.h"
#include "core/cuda/device_buffer.h"
#include "core/dtype.h"
#include "core/engine.h"
#include "core/model_generator.h"
#include "core/model_weights.h"
#include "core/status_macros.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, report, "build/bench/report.json",
          "JSON report to write; an existing report is merged (its other keys "
          "are kept, this program's are overwritten).");
ABSL_FLAG(std::string, model_cache, "build/bench/models/mixtral-gpu-bench",
          "Directory of the generated decode model; reused when its "
          "bench_spec.json matches, regenerated otherwise.");
ABSL_FLAG(bool, regenerate, false,
          "Regenerate the decode model even if cached.");
ABSL_FLAG(std::string, device, "cuda:0", "The CUDA device: cuda or cuda:N.");
ABSL_FLAG(int, iterations, 100,
          "RunOnDevice calls per timed run at 1-8 tokens per expert (>= 50).");
ABSL_FLAG(int, large_iterations, 10,
          "RunOnDevice (or GEMM) calls per timed run at >= 2048 tokens per "
          "expert and for the GEMM peak.");
ABSL_FLAG(int, repeats, 3, "Timed runs per measurement (the best counts).");
ABSL_FLAG(int, decode_steps, 128, "Decode steps per decode measurement.");
ABSL_FLAG(int, prompt_tokens, 16, "Prompt length of the decode measurements.");
ABSL_FLAG(bool, skip_experts, false,
          "Skip the expert FFN and GEMM measurements.");
ABSL_FLAG(bool, skip_decode, false, "Skip the engine decode measurements.");

namespace {

using moe::bench::Clock;
using moe::bench::Die;
using moe::bench::Note;
using moe::bench::Row;
using moe::bench::SecondsSince;
using moe::cuda::bf16;
using moe::cuda::DeviceBuffer;

// H100 SXM5 (HBM3): the nominal figure the issue quotes, for orientation;
// the fractions use what the device reports.
constexpr double kH100SxmNominalGbps = 3350;

// Mixtral-8x7B's experts.
constexpr int64_t kHidden = 4096;
constexpr int64_t kIntermediate = 14336;
constexpr int kExperts = 8;
constexpr int kSmallTokens[] = {1, 2, 4, 8};
constexpr int kLargeTokens[] = {2048, 4096};
constexpr int64_t kGemmSize = 8192;

// ---------------------------------------------------------------------------
// The device.

struct DeviceInfo {
  std::string name;
  int memory_clock_khz = 0;
  int bus_width_bits = 0;
  double peak_gbps = 0;  // 2 (DDR) x clock x bus bytes
};

absl::StatusOr<DeviceInfo> QueryDevice(int ordinal) {
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal));
  DeviceInfo info;
  cudaDeviceProp prop;
  MOE_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, ordinal));
  info.name = prop.name;
  // CUDA 13 dropped cudaDeviceProp::memoryClockRate; the attributes remain.
  MOE_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(
      &info.memory_clock_khz, cudaDevAttrMemoryClockRate, ordinal));
  MOE_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(
      &info.bus_width_bits, cudaDevAttrGlobalMemoryBusWidth, ordinal));
  info.peak_gbps =
      2.0 * info.memory_clock_khz * 1e3 * (info.bus_width_bits / 8.0) / 1e9;
  if (info.peak_gbps <= 0) {
    return absl::InternalError(
        absl::StrCat("the device reports memory clock ", info.memory_clock_khz,
                     " kHz and bus width ", info.bus_width_bits,
                     " bits: no peak bandwidth to compare with"));
  }
  return info;
}

// ---------------------------------------------------------------------------
// Random BF16 data.

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// `n` BF16 values uniform in [-scale, scale), deterministic by `seed`
// whatever the thread count (each 1M-element chunk has its own stream).
std::vector<uint16_t> RandomBf16(int64_t n, float scale, uint64_t seed) {
  std::vector<uint16_t> out(n);
  constexpr int64_t kChunk = int64_t{1} << 20;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const int64_t threads = std::clamp<int64_t>(
      std::thread::hardware_concurrency(), 1, std::max<int64_t>(chunks, 1));
  auto fill = [&](int64_t first_chunk) {
    for (int64_t c = first_chunk; c < chunks; c += threads) {
      uint64_t state = seed * 0x100000001b3ull + c;
      const int64_t end = std::min(n, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < end; ++i) {
        const float u = (SplitMix64(state) >> 40) * (1.0f / (1 << 24));
        out[i] = moe::FloatToBF16((2 * u - 1) * scale);
      }
    }
  };
  std::vector<std::thread> workers;
  for (int64_t t = 1; t < threads; ++t) workers.emplace_back(fill, t);
  fill(0);
  for (std::thread& w : workers) w.join();
  return out;
}

// A device buffer holding `host`.
absl::StatusOr<DeviceBuffer<bf16>> Upload(const std::vector<uint16_t>& host) {
  DeviceBuffer<bf16> buffer;
  RETURN_IF_ERROR(buffer.Reserve(static_cast<int64_t>(host.size())));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpy(buffer.data(), host.data(),
                                      host.size() * sizeof(uint16_t),
                                      cudaMemcpyHostToDevice));
  return buffer;
}

// ---------------------------------------------------------------------------
// Device timing.

// Seconds of device time per call of `body` (which enqueues on `stream`):
// `warmup` calls, then the best of `repeats` runs of `iterations` calls
// each, timed by events on `stream`.
absl::StatusOr<double> TimePerCall(cudaStream_t stream, int warmup,
                                   int iterations, int repeats,
                                   const std::function<absl::Status()>& body) {
  struct Events {
    cudaEvent_t start = nullptr, stop = nullptr;
    ~Events() {
      if (start != nullptr) cudaEventDestroy(start);
      if (stop != nullptr) cudaEventDestroy(stop);
    }
  } events;
  MOE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&events.start));
  MOE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&events.stop));
  for (int i = 0; i < warmup; ++i) RETURN_IF_ERROR(body());
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    MOE_CUDA_RETURN_IF_ERROR(cudaEventRecord(events.start, stream));
    for (int i = 0; i < iterations; ++i) RETURN_IF_ERROR(body());
    MOE_CUDA_RETURN_IF_ERROR(cudaEventRecord(events.stop, stream));
    MOE_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(events.stop));
    float ms = 0;
    MOE_CUDA_RETURN_IF_ERROR(
        cudaEventElapsedTime(&ms, events.start, events.stop));
    best = std::min(best, ms / 1e3 / iterations);
  }
  return best;
}

// ---------------------------------------------------------------------------
// The plain cuBLAS GEMM peak.

// TFLOP/s of cublasGemmEx at m = n = k = kGemmSize: BF16 A, B and C (as the
// expert GEMMs write), float32 compute, random inputs (zeros would draw less
// power and flatter the peak).
absl::StatusOr<double> MeasureGemmPeak(int ordinal) {
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal));
  const int64_t elements = kGemmSize * kGemmSize;
  ASSIGN_OR_RETURN(DeviceBuffer<bf16> a,
                   Upload(RandomBf16(elements, 1.0f, 101)));
  ASSIGN_OR_RETURN(DeviceBuffer<bf16> b,
                   Upload(RandomBf16(elements, 1.0f, 102)));
  DeviceBuffer<bf16> c;
  RETURN_IF_ERROR(c.Reserve(elements));

  struct Handle {
    cublasHandle_t handle = nullptr;
    cudaStream_t stream = nullptr;
    ~Handle() {
      if (handle != nullptr) cublasDestroy(handle);
      if (stream != nullptr) {
        cudaStreamSynchronize(stream);
        cudaStreamDestroy(stream);
      }
    }
  } h;
  MOE_CUDA_RETURN_IF_ERROR(
      cudaStreamCreateWithFlags(&h.stream, cudaStreamNonBlocking));
  MOE_CUBLAS_RETURN_IF_ERROR(cublasCreate(&h.handle));
  MOE_CUBLAS_RETURN_IF_ERROR(cublasSetStream(h.handle, h.stream));

  const float alpha = 1.0f, beta = 0.0f;
  const int n = static_cast<int>(kGemmSize);
  // Column-major C[n, n] = A^T B: the "TN" layout of y = x w^T.
  auto gemm = [&]() -> absl::Status {
    MOE_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
        h.handle, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, a.data(),
        CUDA_R_16BF, n, b.data(), CUDA_R_16BF, n, &beta, c.data(), CUDA_R_16BF,
        n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return absl::OkStatus();
  };
  const int iterations = absl::GetFlag(FLAGS_large_iterations);
  ASSIGN_OR_RETURN(
      const double seconds,
      TimePerCall(h.stream, 3, iterations,
                  std::max(absl::GetFlag(FLAGS_repeats), 5), gemm));
  return 2.0 * kGemmSize * kGemmSize * kGemmSize / seconds / 1e12;
}

// ---------------------------------------------------------------------------
// The expert FFN.

struct ExpertResults {
  std::vector<Row> rows;
  nlohmann::json extra;
};

// Uploads kExperts random BF16 experts to device `ordinal`: [inter, hidden]
// gate and up, [hidden, inter] down, scaled 1/sqrt(fan_in) like a generated
// checkpoint. The backend keys experts by FfnWeights address, so `weights`
// (filled here) must stay put while the backend lives; the host data they
// point at is freed on return (Create copies it), and the views dangle.
absl::StatusOr<std::unique_ptr<moe::cuda::CudaExpertFfn>> UploadRandomExperts(
    int ordinal, absl::Span<moe::FfnWeights> weights) {
  const int64_t n = kHidden * kIntermediate;
  const double gigabytes = weights.size() * 3.0 * n * 2 / 1e9;
  Note(absl::StrFormat(
      "expert FFN: generating %d random BF16 experts [%d x %d] (%.2f GB)",
      weights.size(), kHidden, kIntermediate, gigabytes));
  auto view = [](const std::vector<uint16_t>& data, int64_t rows,
                 int64_t cols) {
    moe::TensorView v;
    v.data = data.data();
    v.dtype = moe::DType::kBF16;
    v.shape = {rows, cols};
    return v;
  };
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(kHidden));
  const float down_scale = 1.0f / std::sqrt(static_cast<float>(kIntermediate));
  std::vector<std::vector<uint16_t>> host;
  host.reserve(3 * weights.size());
  for (size_t e = 0; e < weights.size(); ++e) {
    host.push_back(RandomBf16(n, in_scale, 3 * e));
    host.push_back(RandomBf16(n, in_scale, 3 * e + 1));
    host.push_back(RandomBf16(n, down_scale, 3 * e + 2));
    weights[e].gate = view(host[3 * e], kIntermediate, kHidden);
    weights[e].up = view(host[3 * e + 1], kIntermediate, kHidden);
    weights[e].down = view(host[3 * e + 2], kHidden, kIntermediate);
  }
  Note(absl::StrFormat("expert FFN: uploading %.2f GB to cuda:%d", gigabytes,
                       ordinal));
  const Clock::time_point start = Clock::now();
  std::vector<const moe::FfnWeights*> pointers;
  for (const moe::FfnWeights& w : weights) pointers.push_back(&w);
  ASSIGN_OR_RETURN(std::unique_ptr<moe::cuda::CudaExpertFfn> ffn,
                   moe::cuda::CudaExpertFfn::Create(ordinal, pointers));
  Note(absl::StrFormat("expert FFN: uploaded in %.1f s (%s)",
                       SecondsSince(start), ffn->name()));
  return ffn;
}

absl::StatusOr<ExpertResults> MeasureExperts(int ordinal,
                                             const DeviceInfo& device) {
  std::vector<moe::FfnWeights> weights(kExperts);
  ASSIGN_OR_RETURN(std::unique_ptr<moe::cuda::CudaExpertFfn> ffn,
                   UploadRandomExperts(ordinal, absl::MakeSpan(weights)));
  ExpertResults results;

  // Input rows for the largest case, reused by all; outputs likewise.
  const int64_t max_rows = int64_t{kExperts} * kLargeTokens[1];
  ASSIGN_OR_RETURN(DeviceBuffer<bf16> x,
                   Upload(RandomBf16(max_rows * kHidden, 1.0f, 7)));
  DeviceBuffer<bf16> out;
  RETURN_IF_ERROR(out.Reserve(max_rows * kHidden));
  auto groups_of = [&](int64_t tokens) {
    std::vector<moe::cuda::DeviceFfnGroup> groups;
    for (int e = 0; e < kExperts; ++e) {
      groups.push_back({&weights[e], x.data() + e * tokens * kHidden, tokens,
                        out.data() + e * tokens * kHidden});
    }
    return groups;
  };
  int64_t weight_bytes = 0;
  for (const moe::FfnWeights& w : weights) {
    weight_bytes += ffn->WeightBytesOf(&w);
  }
  results.extra["gpu_expert_weight_bytes"] = weight_bytes;
  const int repeats = absl::GetFlag(FLAGS_repeats);

  // Decode batch sizes: bound by reading the weights.
  for (const int t : kSmallTokens) {
    const std::vector<moe::cuda::DeviceFfnGroup> groups = groups_of(t);
    ASSIGN_OR_RETURN(
        const double seconds,
        TimePerCall(ffn->stream(), 5, absl::GetFlag(FLAGS_iterations), repeats,
                    [&] { return ffn->RunOnDevice(groups); }));
    const int64_t bytes = weight_bytes + int64_t{kExperts} * t * kHidden * 2;
    const double gbps = bytes / seconds / 1e9;
    const double fraction = gbps / device.peak_gbps;
    Note(absl::StrFormat(
        "expert FFN, %d x %d tokens: %.1f us, %.0f GB/s = %.3f of peak",
        kExperts, t, seconds * 1e6, gbps, fraction));
    results.rows.push_back(
        {absl::StrCat("gpu_expert_gbps_t", t), gbps, "", true, ""});
    results.rows.push_back({absl::StrCat("gpu_expert_hbm_fraction_t", t),
                            fraction, ">= 0.6", fraction >= 0.6, ""});
    results.extra[absl::StrCat("gpu_expert_us_t", t)] = seconds * 1e6;
    if (t == 1) {
      results.rows.push_back({"gpu_expert_b1_hbm_fraction", fraction, ">= 0.6",
                              fraction >= 0.6,
                              "t = 1, 8 experts, one RunOnDevice"});
    }
  }

  // Prefill batch sizes: bound by tensor-core throughput, against a plain
  // GEMM measured now, on the same device in the same state.
  Note(absl::StrFormat("cuBLAS GEMM peak: %d^3 BF16", kGemmSize));
  ASSIGN_OR_RETURN(const double peak_tflops, MeasureGemmPeak(ordinal));
  Note(absl::StrFormat("cuBLAS GEMM peak: %.1f TFLOP/s", peak_tflops));
  results.rows.push_back({"gpu_gemm_peak_tflops", peak_tflops, "", true,
                          "cublasGemmEx 8192^3 BF16, f32 compute"});
  for (const int t : kLargeTokens) {
    const std::vector<moe::cuda::DeviceFfnGroup> groups = groups_of(t);
    ASSIGN_OR_RETURN(
        const double seconds,
        TimePerCall(ffn->stream(), 2, absl::GetFlag(FLAGS_large_iterations),
                    repeats, [&] { return ffn->RunOnDevice(groups); }));
    const double flops = 6.0 * kExperts * t * kHidden * kIntermediate;
    const double tflops = flops / seconds / 1e12;
    const double fraction = tflops / peak_tflops;
    Note(absl::StrFormat(
        "expert FFN, %d x %d tokens: %.2f ms, %.1f TFLOP/s = %.3f of the "
        "GEMM peak",
        kExperts, t, seconds * 1e3, tflops, fraction));
    results.rows.push_back(
        {absl::StrCat("gpu_expert_tflops_t", t), tflops, "", true, ""});
    results.rows.push_back({absl::StrCat("gpu_expert_tflops_fraction_t", t),
                            fraction, ">= 0.7", fraction >= 0.7, ""});
    if (t == 2048) {
      results.rows.push_back({"gpu_expert_large_tflops_fraction", fraction,
                              ">= 0.7", fraction >= 0.7,
                              "t = 2048, 8 experts, one RunOnDevice"});
    }
  }
  return results;
}

// ---------------------------------------------------------------------------
// Engine decode.

// Mixtral layout, hidden 2048, 16 layers, 32 heads over 8 K/V heads of 64,
// vocab 32000, 8 experts top-2 of width 5632, BF16: ~9.5 GB of weights, of
// which a decode token reads ~2.7 GB.
moe::GeneratorSpec GpuBenchSpec() {
  moe::GeneratorSpec spec;
  moe::ModelConfig& c = spec.config;
  c = moe::SmallConfig(moe::ModelFamily::kMixtral);
  c.hidden_size = 2048;
  c.num_layers = 16;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 64;
  c.vocab_size = 32000;
  c.num_experts = 8;
  c.num_experts_per_tok = 2;
  c.expert_intermediate_size = 5632;
  c.max_position_embeddings = 4096;
  spec.dtype = moe::DType::kBF16;
  spec.num_shards = 1;
  spec.seed = 1;
  return spec;
}

// Generates the decode model into `dir` unless the same spec is there.
// Returns the generation seconds, 0 when the cached model was reused.
struct DecodeResults {
  std::vector<Row> rows;
  nlohmann::json extra;
};

absl::StatusOr<DecodeResults> MeasureDecode(const moe::DeviceSpec& device,
                                            const DeviceInfo& info) {
  DecodeResults results;
  const std::string dir = absl::GetFlag(FLAGS_model_cache);
  ASSIGN_OR_RETURN(const double generate_seconds,
                   moe::bench::EnsureGeneratedModel(
                       dir, GpuBenchSpec(), absl::GetFlag(FLAGS_regenerate),
                       "decode model (~9.5 GB)"));
  results.extra["gpu_bench_model_generate_seconds"] =
      generate_seconds > 0 ? nlohmann::json(generate_seconds)
                           : nlohmann::json(nullptr);

  Note(absl::StrCat("loading the engine on ", device.ToString(),
                    " (every weight uploaded as BF16)"));
  moe::EngineOptions options;
  options.model_dir = dir;
  options.populate_weights = true;
  options.device = device;
  const Clock::time_point load_start = Clock::now();
  absl::StatusOr<std::unique_ptr<moe::Engine>> engine =
      moe::Engine::Load(options);
  if (!engine.ok()) {
    return absl::Status(engine.status().code(),
                        absl::StrCat("loading ", dir, " on ", device.ToString(),
                                     ": ", engine.status().message()));
  }
  const double load_seconds = SecondsSince(load_start);
  Note(absl::StrFormat("engine loaded in %.1f s", load_seconds));
  results.extra["gpu_model_load_seconds"] = load_seconds;

  // Bytes one batch-1 decode token reads: the weights it touches, and the
  // float32 K/V rows (core/cuda/paged_attention.h) of every layer over its
  // context. Decode step j (0-based) attends over prompt + j + 1 positions,
  // so the run's mean context is prompt + (steps + 1) / 2.
  const moe::ModelConfig& c = (*engine)->config();
  moe::bench::DecodeMeasurement m;
  m.prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  m.decode_steps = absl::GetFlag(FLAGS_decode_steps);
  m.repeats = absl::GetFlag(FLAGS_repeats);
  const int64_t weight_bytes =
      moe::ActiveWeightBytesPerToken((*engine)->weights());
  const double mean_context = m.prompt_tokens + (m.decode_steps + 1) / 2.0;
  const double kv_bytes = static_cast<double>(c.num_layers) * 2 * c.kv_dim() *
                          sizeof(float) * mean_context;
  const double bytes_per_token = weight_bytes + kv_bytes;
  const double roofline = info.peak_gbps * 1e9 / bytes_per_token;
  results.extra["gpu_decode_bytes_per_token"] = bytes_per_token;
  results.extra["gpu_decode_weight_bytes_per_token"] = weight_bytes;

  m.batch = 1;
  const double b1 = moe::bench::MeasureEngineDecode(**engine, m);
  const double fraction = b1 / roofline;
  results.rows.push_back(
      {"gpu_decode_tokens_per_s", b1, "", true,
       absl::StrFormat("batch 1, %d steps", m.decode_steps)});
  results.rows.push_back(
      {"gpu_decode_roofline_tokens_per_s", roofline, "", true,
       absl::StrFormat("%.2f GB per token", bytes_per_token / 1e9)});
  results.rows.push_back(
      {"gpu_decode_hbm_roofline_fraction", fraction, "", true, ""});
  m.batch = 8;
  results.rows.push_back({"gpu_decode_b8_tokens_per_s",
                          moe::bench::MeasureEngineDecode(**engine, m), "",
                          true, ""});
  return results;
}

}  // namespace

int main(int argc, char** argv) {
  moe::bench::ParseBenchCommandLine(
      argc, argv, "moe-gpu-bench",
      "Measures the CUDA backend against the device's HBM bandwidth and "
      "cuBLAS GEMM peak.\n"
      "  moe-gpu-bench [--report FILE] [--model_cache DIR] [--device cuda:N]",
      "bench/gpu_bench");
  for (const auto& [name, value, least] :
       {std::tuple{"iterations", absl::GetFlag(FLAGS_iterations), 50},
        std::tuple{"large_iterations", absl::GetFlag(FLAGS_large_iterations),
                   1},
        std::tuple{"repeats", absl::GetFlag(FLAGS_repeats), 1},
        std::tuple{"decode_steps", absl::GetFlag(FLAGS_decode_steps), 1},
        std::tuple{"prompt_tokens", absl::GetFlag(FLAGS_prompt_tokens), 1}}) {
    if (value < least) {
      std::fprintf(stderr, "moe-gpu-bench: --%s must be at least %d\n", name,
                   least);
      return 2;
    }
  }
  absl::StatusOr<moe::DeviceSpec> device =
      moe::ParseDeviceSpec(absl::GetFlag(FLAGS_device));
  if (!device.ok()) Die(std::string(device.status().message()));
  if (!device->is_cuda())
    Die("--device must be a CUDA device (cuda or cuda:N)");

  const moe::GpuInventory gpus = moe::ProbeGpus();
  if (gpus.devices.empty()) Die(absl::StrCat("no usable GPU: ", gpus.why_none));
  if (absl::Status s = moe::CheckDeviceUsable(*device); !s.ok()) {
    Die(std::string(s.message()));
  }

  absl::StatusOr<DeviceInfo> info = QueryDevice(device->ordinal);
  if (!info.ok()) {
    Die(absl::StrCat("querying ", device->ToString(), ": ",
                     info.status().message()));
  }
  Note(absl::StrFormat(
      "%s (%s): memory clock %d MHz x %d-bit bus -> peak %.0f GB/s "
      "(H100 SXM nominal: %.0f GB/s); fractions use the former",
      device->ToString(), info->name, info->memory_clock_khz / 1000,
      info->bus_width_bits, info->peak_gbps, kH100SxmNominalGbps));

  std::vector<Row> rows;
  nlohmann::json extra;
  extra["gpu_device_name"] = info->name;
  extra["gpu_memory_clock_khz"] = info->memory_clock_khz;
  extra["gpu_memory_bus_width_bits"] = info->bus_width_bits;
  extra["gpu_h100_sxm_nominal_gbps"] = kH100SxmNominalGbps;
  rows.push_back(
      {"gpu_peak_bandwidth_gbps", info->peak_gbps, "", true,
       absl::StrFormat("H100 SXM nominal %.0f", kH100SxmNominalGbps)});

  if (!absl::GetFlag(FLAGS_skip_experts)) {
    absl::StatusOr<ExpertResults> experts =
        MeasureExperts(device->ordinal, *info);
    if (!experts.ok()) {
      Die(absl::StrCat("expert FFN measurement: ", experts.status().message()));
    }
    rows.insert(rows.end(), experts->rows.begin(), experts->rows.end());
    extra.update(experts->extra);
  }
  if (!absl::GetFlag(FLAGS_skip_decode)) {
    absl::StatusOr<DecodeResults> decode = MeasureDecode(*device, *info);
    if (!decode.ok()) {
      Die(absl::StrCat("decode measurement: ", decode.status().message()));
    }
    rows.insert(rows.end(), decode->rows.begin(), decode->rows.end());
    extra.update(decode->extra);
  }

  const std::string report_path = absl::GetFlag(FLAGS_report);
  moe::bench::WriteReport(report_path, rows, extra);
  moe::bench::PrintTable(rows, report_path);
  return 0;
}
