// moe-bench: memory bandwidth and single-process engine throughput on a
// generated Mixtral-shaped model (~2.2 GB of BF16), in one run.
//
// Prints a table to stdout and merges its figures into a JSON report (other
// keys of an existing report are kept). Progress goes to stderr.
//
//   build/bin/moe-bench [--report build/bench/report.json]
//                       [--model_cache build/bench/models/mixtral-bench]
//
// Measurements:
//   memory_bandwidth_gbps       STREAM triad a = b + s*c, doubles, one thread
//                               per core on contiguous slices, best of 5;
//                               24 bytes per element.
//   memory_read_bandwidth_gbps  sum over a float array, best of 5.
//   model_load_seconds          Engine::Load with weights faulted in.
//   engine_decode_b{1,8,32}_tokens_per_s
//                               generated tokens per second of decode time
//                               (prefill excluded), greedy, best of N runs.
//   engine_decode_b1_bw_fraction
//                               b1 tokens/s * active weight bytes per token
//                               / triad bandwidth.
//   engine_prefill_tokens_per_s one prompt of --prefill_tokens tokens.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/engine.h"
#include "core/kv_cache.h"
#include "core/generator.h"
#include "core/model_generator.h"
#include "core/model_weights.h"
#include "bench/bench_common.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, report, "build/bench/report.json",
          "JSON report to write; an existing report is merged (its other keys "
          "are kept, this program's are overwritten).");
ABSL_FLAG(std::string, model_cache, "build/bench/models/mixtral-bench",
          "Directory of the generated bench model; reused when its "
          "bench_spec.json matches, regenerated otherwise.");
ABSL_FLAG(bool, regenerate, false,
          "Regenerate the bench model even if cached.");
ABSL_FLAG(int, decode_steps, 64, "Decode steps per decode measurement.");
ABSL_FLAG(int, prompt_tokens, 16, "Prompt length of the decode measurements.");
ABSL_FLAG(int, prefill_tokens, 128,
          "Prompt length of the prefill measurement.");
ABSL_FLAG(int, repeats, 3, "Runs per engine measurement (the best counts).");
ABSL_FLAG(int, threads, 0, "Engine and triad threads; 0 = one per core.");
ABSL_FLAG(bool, skip_triad, false,
          "Skip the bandwidth measurement (the bandwidth fraction then uses "
          "the report's previous memory_bandwidth_gbps, if any).");
ABSL_FLAG(bool, skip_engine, false, "Only measure memory bandwidth.");
ABSL_FLAG(std::string, deepseek_model_cache, "",
          "Where the DeepSeek-V2-Lite-shaped bench model (~2 GB) is kept; "
          "empty skips the DeepSeek measurements.");

namespace {

using moe::bench::Clock;
using moe::bench::Die;
using moe::bench::Note;
using moe::bench::Row;
using moe::bench::SecondsSince;

int NumThreads() {
  const int flag = absl::GetFlag(FLAGS_threads);
  if (flag > 0) return flag;
  return std::max(1u, std::thread::hardware_concurrency());
}

// ---------------------------------------------------------------------------
// Memory bandwidth.

// Runs body(t) on `threads` threads released together; returns the seconds
// from the release to the last thread's end (thread start-up excluded).
double TimeOnThreads(int threads, const std::function<void(int)>& body) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<Clock::time_point> ends(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      body(t);
      ends[t] = Clock::now();
    });
  }
  while (ready.load() < threads) std::this_thread::yield();
  const Clock::time_point start = Clock::now();
  go.store(true, std::memory_order_release);
  for (std::thread& w : workers) w.join();
  const Clock::time_point end = *std::max_element(ends.begin(), ends.end());
  return std::chrono::duration<double>(end - start).count();
}

// [begin, end) of slice t of n items split over `threads`.
std::pair<int64_t, int64_t> Slice(int64_t n, int threads, int t) {
  return {n * t / threads, n * (t + 1) / threads};
}

struct Bandwidth {
  double triad_gbps = 0;
  double read_gbps = 0;
};

Bandwidth MeasureBandwidth(int threads) {
  constexpr int64_t kTriadElements = int64_t{32} << 20;  // 3 x 256 MB
  constexpr int64_t kReadElements = int64_t{128} << 20;  // 512 MB of floats
  constexpr int kRepetitions = 5;
  Bandwidth result;
  {
    std::unique_ptr<double[]> a(new double[kTriadElements]);
    std::unique_ptr<double[]> b(new double[kTriadElements]);
    std::unique_ptr<double[]> c(new double[kTriadElements]);
    // First touch by the thread that later streams the slice.
    TimeOnThreads(threads, [&](int t) {
      auto [lo, hi] = Slice(kTriadElements, threads, t);
      for (int64_t i = lo; i < hi; ++i) {
        a[i] = 0.0;
        b[i] = 1.0;
        c[i] = 2.0;
      }
    });
    double best = 1e30;
    for (int rep = 0; rep < kRepetitions; ++rep) {
      const double scalar = 3.0 + rep;
      double* pa = a.get();
      const double* pb = b.get();
      const double* pc = c.get();
      best = std::min(best, TimeOnThreads(threads, [&](int t) {
                        auto [lo, hi] = Slice(kTriadElements, threads, t);
                        for (int64_t i = lo; i < hi; ++i)
                          pa[i] = pb[i] + scalar * pc[i];
                      }));
    }
    result.triad_gbps = 24.0 * kTriadElements / best / 1e9;
    // Keep the stores observable.
    if (a[kTriadElements / 2] != 1.0 + (3.0 + kRepetitions - 1) * 2.0) {
      Die("triad produced a wrong result");
    }
  }
  {
    std::unique_ptr<float[]> x(new float[kReadElements]);
    TimeOnThreads(threads, [&](int t) {
      auto [lo, hi] = Slice(kReadElements, threads, t);
      std::fill(x.get() + lo, x.get() + hi, 1.0f);
    });
    std::vector<double> sums(threads);
    double best = 1e30;
    for (int rep = 0; rep < kRepetitions; ++rep) {
      best = std::min(best, TimeOnThreads(threads, [&](int t) {
                        auto [lo, hi] = Slice(kReadElements, threads, t);
                        // Independent partial sums let the compiler vectorise
                        // the loop without reassociating floating-point
                        // additions.
                        constexpr int kLanes = 16;
                        float acc[kLanes] = {};
                        const float* p = x.get();
                        int64_t i = lo;
                        for (; i + kLanes <= hi; i += kLanes) {
                          for (int j = 0; j < kLanes; ++j) acc[j] += p[i + j];
                        }
                        double sum = 0;
                        for (; i < hi; ++i) sum += p[i];
                        for (float v : acc) sum += v;
                        sums[t] = sum;
                      }));
    }
    double total = 0;
    for (double s : sums) total += s;
    if (total <= 0) Die("read pass produced a wrong result");
    result.read_gbps = 4.0 * kReadElements / best / 1e9;
  }
  return result;
}

// ---------------------------------------------------------------------------
// Engine measurements.

double MeasureDecode(moe::Engine& engine, int batch) {
  moe::bench::DecodeMeasurement m;
  m.batch = batch;
  m.prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  m.decode_steps = absl::GetFlag(FLAGS_decode_steps);
  m.repeats = absl::GetFlag(FLAGS_repeats);
  return moe::bench::MeasureEngineDecode(engine, m);
}

double MeasurePrefill(moe::Engine& engine) {
  const int vocab = engine.config().vocab_size;
  const int tokens = absl::GetFlag(FLAGS_prefill_tokens);
  const int repeats = absl::GetFlag(FLAGS_repeats);
  Note(absl::StrCat("prefill, ", tokens, " tokens: warm-up"));
  moe::bench::RunEngine(engine, moe::bench::DecodeRequests(1, tokens, 0, vocab, 77));
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    const moe::GenerationStats s = moe::bench::RunEngine(
        engine, moe::bench::DecodeRequests(1, tokens, 0, vocab, 2000 + r));
    const double rate =
        s.prefill_seconds > 0 ? s.prefill_tokens / s.prefill_seconds : 0;
    Note(absl::StrFormat(
        "prefill: run %d/%d: %d tokens in %.3f s = %.1f tokens/s", r + 1,
        repeats, s.prefill_tokens, s.prefill_seconds, rate));
    best = std::max(best, rate);
  }
  return best;
}

// Decode on the DeepSeek-V2-Lite-shaped model (MLA with its latent cache,
// ungated shared experts, top-6 of 16) and its KV bytes per token against
// the expanded K/V that MLA avoids.
void MeasureDeepseek(const std::string& dir, std::optional<double> bandwidth,
                     std::vector<Row>& rows, nlohmann::json& extra) {
  absl::StatusOr<double> generated = moe::bench::EnsureGeneratedModel(
      dir, moe::bench::DeepseekBenchSpec(), absl::GetFlag(FLAGS_regenerate),
      "DeepSeek bench model");
  if (!generated.ok()) Die(std::string(generated.status().message()));
  Note("loading the engine on the DeepSeek bench model");
  moe::EngineOptions options;
  options.model_dir = dir;
  options.populate_weights = true;
  options.num_threads = absl::GetFlag(FLAGS_threads);
  absl::StatusOr<std::unique_ptr<moe::Engine>> engine =
      moe::Engine::Load(options);
  if (!engine.ok()) {
    Die(absl::StrCat("loading ", dir, ": ", engine.status().ToString()));
  }
  const moe::ModelConfig& c = (*engine)->config();
  const int64_t active_bytes =
      moe::ActiveWeightBytesPerToken((*engine)->weights());
  extra["deepseek_active_weight_bytes_per_token"] = active_bytes;
  const double b1 = MeasureDecode(**engine, 1);
  rows.push_back({"deepseek_v2_lite_decode_b1_tokens_per_s", b1, "", true,
                  "2 GB V2-Lite-shaped model, MLA absorbed"});
  if (bandwidth) {
    const double fraction = b1 * active_bytes / (*bandwidth * 1e9);
    rows.push_back({"deepseek_v2_lite_decode_b1_bw_fraction", fraction, "",
                    true, "active weight bytes x tokens/s / triad"});
  }
  rows.push_back({"deepseek_v2_lite_decode_b8_tokens_per_s",
                  MeasureDecode(**engine, 8), "", true, ""});
  // Float32 cache bytes per token over all layers.
  const int64_t mla = moe::KvCacheShape::ForModel(c, 16).BytesPerTokenPerLayer() *
                      c.num_layers;
  const int64_t expanded = int64_t{4} * c.num_heads *
                           (c.mla.qk_head_dim() + c.mla.v_head_dim) *
                           c.num_layers;
  rows.push_back({"deepseek_mla_kv_bytes_per_token", static_cast<double>(mla),
                  "", true, "latent + rope key, float32, all layers"});
  rows.push_back({"deepseek_expanded_kv_bytes_per_token",
                  static_cast<double>(expanded), "", true,
                  "per-head K and V, float32, all layers"});
  rows.push_back({"deepseek_mla_kv_compression",
                  static_cast<double>(expanded) / static_cast<double>(mla), "",
                  true, "expanded / latent"});
}

}  // namespace

int main(int argc, char** argv) {
  moe::bench::ParseBenchCommandLine(
      argc, argv, "moe-bench",
      "Measures memory bandwidth and engine throughput on a generated "
      "Mixtral-shaped model.\n  moe-bench [--report FILE] [--model_cache DIR]",
      "bench/engine_bench");
  for (const auto& [name, value] :
       {std::pair{"decode_steps", absl::GetFlag(FLAGS_decode_steps)},
        std::pair{"prompt_tokens", absl::GetFlag(FLAGS_prompt_tokens)},
        std::pair{"prefill_tokens", absl::GetFlag(FLAGS_prefill_tokens)},
        std::pair{"repeats", absl::GetFlag(FLAGS_repeats)}}) {
    if (value < 1) {
      std::fprintf(stderr, "moe-bench: --%s must be at least 1\n", name);
      return 2;
    }
  }
  const std::string report_path = absl::GetFlag(FLAGS_report);
  const int threads = NumThreads();
  std::vector<Row> rows;
  nlohmann::json extra;
  extra["bench_threads"] = threads;

  std::optional<double> bandwidth;
  if (!absl::GetFlag(FLAGS_skip_triad)) {
    Note(absl::StrCat("memory bandwidth, ", threads, " threads"));
    const Bandwidth bw = MeasureBandwidth(threads);
    bandwidth = bw.triad_gbps;
    rows.push_back({"memory_bandwidth_gbps", bw.triad_gbps, "", true,
                    "37-51 measured on this machine class"});
    rows.push_back({"memory_read_bandwidth_gbps", bw.read_gbps, "", true, ""});
  } else if (std::optional<nlohmann::json> old =
                 moe::bench::ReadJsonFile(report_path);
             old && old->contains("memory_bandwidth_gbps") &&
             (*old)["memory_bandwidth_gbps"].is_number()) {
    bandwidth = (*old)["memory_bandwidth_gbps"].get<double>();
    Note(absl::StrFormat("using memory_bandwidth_gbps %.1f from %s", *bandwidth,
                         report_path));
  }

  if (!absl::GetFlag(FLAGS_skip_engine)) {
    const std::string dir = absl::GetFlag(FLAGS_model_cache);
    const double generate_seconds =
        moe::bench::EnsureBenchModel(dir, absl::GetFlag(FLAGS_regenerate));
    // null when the cached model was reused.
    extra["bench_model_generate_seconds"] =
        generate_seconds > 0 ? nlohmann::json(generate_seconds)
                             : nlohmann::json(nullptr);

    // A cold load, as a server start on a fresh node: the weights are read
    // from disk, so the page cache backs them with huge pages where it can.
    moe::bench::EvictFromPageCache(dir);
    Note("loading the engine (cold: checkpoint evicted from the page cache)");
    moe::EngineOptions options;
    options.model_dir = dir;
    options.populate_weights = true;
    options.num_threads = absl::GetFlag(FLAGS_threads);
    const Clock::time_point load_start = Clock::now();
    absl::StatusOr<std::unique_ptr<moe::Engine>> engine =
        moe::Engine::Load(options);
    const double load_seconds = SecondsSince(load_start);
    if (!engine.ok())
      Die(absl::StrCat("loading ", dir, ": ", engine.status().ToString()));
    rows.push_back(
        {"model_load_seconds", load_seconds, "<= 2", load_seconds <= 2, ""});
    const int64_t active_bytes =
        moe::ActiveWeightBytesPerToken((*engine)->weights());
    extra["engine_active_weight_bytes_per_token"] = active_bytes;

    const double b1 = MeasureDecode(**engine, 1);
    rows.push_back(
        {"engine_decode_b1_tokens_per_s", b1, "", true, "84 (llama.cpp)"});
    if (bandwidth) {
      const double fraction = b1 * active_bytes / (*bandwidth * 1e9);
      rows.push_back({"engine_decode_b1_bw_fraction", fraction, ">= 0.6",
                      fraction >= 0.6, ""});
    } else {
      Note(
          "no memory bandwidth measured: engine_decode_b1_bw_fraction skipped");
    }
    rows.push_back({"engine_decode_b8_tokens_per_s", MeasureDecode(**engine, 8),
                    "", true, ""});
    rows.push_back({"engine_decode_b32_tokens_per_s",
                    MeasureDecode(**engine, 32), "", true, ""});
    rows.push_back({"engine_prefill_tokens_per_s", MeasurePrefill(**engine), "",
                    true, "430 (llama.cpp, 128-token prompt)"});
  }

  if (const std::string dir = absl::GetFlag(FLAGS_deepseek_model_cache);
      !dir.empty()) {
    MeasureDeepseek(dir, bandwidth, rows, extra);
  }

  moe::bench::WriteReport(report_path, rows, extra);
  moe::bench::PrintTable(rows, report_path);
  return 0;
}
