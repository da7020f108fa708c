// moe-bench-report: the one table `make bench` ends with, the headline
// ratios of build/bench/report.json (each measured within one run of its
// program), with their targets.
//   moe-bench-report [--report build/bench/report.json]
// Exit code 0 whatever the figures (benchmarks do not fail builds); 1 when
// the report cannot be read.
#include <cstdio>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "bench/bench_common.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, report, "build/bench/report.json",
          "The report the benchmarks wrote.");

namespace {

struct Headline {
  const char* key;
  const char* what;
  const char* target;  // "" for none
  bool (*met)(double);
};

constexpr Headline kHeadlines[] = {
    {"engine_decode_b1_bw_fraction", "engine decode b1 / memory roofline",
     ">= 0.6", [](double v) { return v >= 0.6; }},
    {"cluster_vs_engine_b1", "cluster / engine decode, batch 1", ">= 0.9",
     [](double v) { return v >= 0.9; }},
    {"cluster_vs_engine_b16", "cluster / engine decode, batch 16", ">= 0.95",
     [](double v) { return v >= 0.95; }},
    {"pingpong_m2_vs_m1", "decode b32, 2 micro-batches / 1", "> 1.0",
     [](double v) { return v > 1.0; }},
    {"kv_transfer_gbps", "K/V transfer GB/s, 4K-token prompt", "", nullptr},
    {"kv_transfer_ttft_share", "K/V transfer not overlapped / TTFT", "<= 0.1",
     [](double v) { return v <= 0.1; }},
    {"prefix_hit_ttft_ratio", "TTFT 90% cached / uncached", "<= 0.25",
     [](double v) { return v <= 0.25; }},
    {"expert_rtt_vs_echo", "router->expert (same host, shm) / gRPC echo",
     "<= 1.2", [](double v) { return v <= 1.2; }},
    {"expert_rtt_stream_vs_echo", "router->expert over gRPC stream / echo",
     "<= 1.2", [](double v) { return v <= 1.2; }},
    {"loadgen_self_cpu_fraction", "moe-loadgen CPU / servers' CPU", "<= 0.1",
     [](double v) { return v <= 0.1; }},
    {"eplb_step_time_ratio", "skewed decode step, rebalanced / not", "<= 0.7",
     [](double v) { return v <= 0.7; }},
    {"eplb_migration_max_step_vs_median", "longest step while experts move",
     "<= 1.5", [](double v) { return v <= 1.5; }},
    // make bench-gpu (moe-gpu-bench).
    {"tokenizer_qwen3_encode_vs_hf", "qwen3 tokenizer encode / HF tokenizers",
     ">= 1", [](double v) { return v >= 1; }},
    {"tokenizer_qwen3_decode_vs_hf", "qwen3 tokenizer decode / HF tokenizers",
     ">= 1", [](double v) { return v >= 1; }},
    {"tokenizer_llama2_encode_vs_hf", "llama2 tokenizer encode / HF",
     ">= 1", [](double v) { return v >= 1; }},
    {"tokenizer_llama2_decode_vs_hf", "llama2 tokenizer decode / HF",
     ">= 1", [](double v) { return v >= 1; }},
    {"http_vs_grpc_per_token", "OpenAI HTTP / gRPC, time per token",
     "<= 1.1", [](double v) { return v <= 1.1; }},
    {"gpu_expert_b1_hbm_fraction", "GPU expert FFN, 1 token/expert / HBM",
     ">= 0.6", [](double v) { return v >= 0.6; }},
    {"gpu_expert_large_tflops_fraction", "GPU expert FFN, 2048/expert / GEMM",
     ">= 0.7", [](double v) { return v >= 0.7; }},
    {"gpu_decode_hbm_roofline_fraction", "GPU engine decode b1 / HBM roofline",
     "", nullptr},
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Print the headline ratios of a benchmark report.\n"
      "  moe-bench-report [--report build/bench/report.json]");
  absl::ParseCommandLine(argc, argv);
  const std::string path = absl::GetFlag(FLAGS_report);
  const std::optional<nlohmann::json> report = moe::bench::ReadJsonFile(path);
  if (!report || !report->is_object()) {
    std::fprintf(stderr, "moe-bench-report: cannot read %s (run make bench)\n",
                 path.c_str());
    return 1;
  }
  std::printf("\nsummary of %s (ratios measured within one run each)\n",
              path.c_str());
  std::printf("%-32s %-40s %10s  %-8s\n", "key", "what", "value", "target");
  for (const Headline& h : kHeadlines) {
    if (!report->contains(h.key) || !(*report)[h.key].is_number()) {
      std::printf("%-32s %-40s %10s  %-8s not measured\n", h.key, h.what, "-",
                  h.target);
      continue;
    }
    const double value = (*report)[h.key].get<double>();
    std::printf("%-32s %-40s %10.3f  %-8s %s\n", h.key, h.what, value, h.target,
                h.met == nullptr ? "" : (h.met(value) ? "ok" : "MISSED"));
  }
  return 0;
}
