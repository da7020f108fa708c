// moe-loadgen: load tests of a moe-cluster gateway over gRPC, measured the
// way `vllm bench serve` measures: TTFT, TPOT, ITL and e2e latency
// (mean/median/p90/p99), throughput, goodput under SLOs, errors by code.
//   moe-loadgen --gateway ADDR --num_requests 200 --rate 4 [--arrival gamma
//       --burstiness 0.5] [--input_len 256 --output_len 64]
//   moe-loadgen --gateway ADDR --sweep_rates 1,2,4,8 --plot sweep.png
//   moe-loadgen --gateway ADDR --arrival concurrency --max_concurrency 16
//   moe-loadgen --gateway ADDR --trace trace.jsonl
// Prints a live progress line (stderr) and a markdown table (stdout); --json
// writes every figure (tools/moe_loadgen/README.md lists the fields).
// Exit codes: 0 (even when requests failed: they are counted), 1 when the
// gateway cannot be reached or an output cannot be written, 2 for bad flags.
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/rpc/channel_util.h"
#include "moe/v1/generate.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tools/common/client_security.h"
#include "tools/common/command_line.h"
#include "tools/moe_loadgen/load_runner.h"
#include "tools/moe_loadgen/report.h"
#include "tools/moe_loadgen/summary.h"
#include "tools/moe_loadgen/workload.h"

ABSL_FLAG(std::string, gateway, "", "Gateway address, host:port.");
ABSL_FLAG(int, num_requests, 100, "Requests per run.");
ABSL_FLAG(std::string, arrival, "poisson",
          "poisson, gamma (with --burstiness) or concurrency (closed loop "
          "with --max_concurrency requests in flight).");
ABSL_FLAG(double, rate, 1.0, "Offered load, requests/s (poisson, gamma).");
ABSL_FLAG(double, burstiness, 1.0,
          "gamma: shape of the gaps; < 1 burstier than Poisson, > 1 steadier.");
ABSL_FLAG(int, max_concurrency, 0,
          "Requests in flight at most (0 = no cap; required for concurrency).");
ABSL_FLAG(std::string, sweep_rates, "",
          "Comma-separated rates: one run per rate (poisson or gamma).");
ABSL_FLAG(std::string, sweep_concurrency, "",
          "Comma-separated concurrencies: one closed-loop run each.");
ABSL_FLAG(int, input_len, 128, "Random prompts: mean prompt tokens.");
ABSL_FLAG(int, output_len, 64, "Mean output tokens (max_tokens, EOS ignored).");
ABSL_FLAG(std::string, length_distribution, "fixed",
          "fixed, uniform (+- --range_ratio) or exponential.");
ABSL_FLAG(double, range_ratio, 0.0, "uniform lengths: relative half-width.");
ABSL_FLAG(int, shared_prefix_len, 0,
          "Tokens of a shared prefix before each random prompt (prefix cache).");
ABSL_FLAG(int, num_prefixes, 1, "Distinct shared prefixes, used round-robin.");
ABSL_FLAG(std::string, trace, "",
          "Replay a JSON-lines trace (timestamp, prompt_ids or input_length, "
          "output_length) instead of random requests.");
ABSL_FLAG(double, trace_speed, 1.0, "Trace time is divided by this.");
ABSL_FLAG(std::string, goodput, "",
          "SLOs for goodput, e.g. \"ttft:500 tpot:50 e2el:10000\" (ms).");
ABSL_FLAG(uint64_t, seed, 0, "Seed of prompts, lengths and arrivals.");
ABSL_FLAG(double, timeout, 600, "Per-request deadline, s.");
ABSL_FLAG(std::string, json, "", "Write the results as JSON here (- = stdout).");
ABSL_FLAG(std::string, markdown, "", "Also write the markdown table here.");
ABSL_FLAG(std::string, plot, "",
          "Sweeps: write a PNG of latency and throughput against load here.");
ABSL_FLAG(bool, progress, true, "Show the live progress line on stderr.");

namespace {

constexpr char kUsage[] =
    "Load-test a moe-cluster gateway.\n"
    "  moe-loadgen --gateway ADDR [--num-requests N] [--arrival poisson|gamma|"
    "concurrency]\n"
    "      [--rate R --burstiness B --max-concurrency C] [--sweep-rates 1,2,4 "
    "| --sweep-concurrency 1,4,16]\n"
    "      [--input-len N --output-len N --length-distribution fixed|uniform|"
    "exponential --range-ratio F]\n"
    "      [--shared-prefix-len N --num-prefixes K] [--trace FILE "
    "--trace-speed X]\n"
    "      [--goodput \"ttft:MS tpot:MS e2el:MS\"] [--json FILE] [--markdown "
    "FILE] [--plot PNG]";

[[noreturn]] void Fail(int code, const std::string& message) {
  std::fprintf(stderr, "moe-loadgen: %s\n", message.c_str());
  std::exit(code);
}

std::vector<double> ParseList(const std::string& flag, const std::string& text) {
  std::vector<double> values;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    double v = 0;
    if (!absl::SimpleAtod(item, &v) || !(v > 0)) {
      Fail(2, absl::StrCat("--", flag, ": \"", item, "\" is not a number > 0"));
    }
    values.push_back(v);
  }
  return values;
}

template <typename T>
T OrFail(absl::StatusOr<T> value, int code = 2) {
  if (!value.ok()) Fail(code, std::string(value.status().message()));
  return *std::move(value);
}

void WriteText(const std::string& path, const std::string& text) {
  if (path == "-") {
    std::fputs(text.c_str(), stdout);
    return;
  }
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) Fail(1, absl::StrCat("cannot write ", path));
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> positional = OrFail(
      moe::tools::ParseToolCommandLine(argc, argv, kUsage, "tools/moe_loadgen/"));
  if (!positional.empty()) {
    Fail(2, absl::StrCat("unexpected argument \"", positional[0], "\""));
  }
  if (absl::Status s = moe::tools::ConfigureClientSecurity(); !s.ok()) {
    Fail(2, std::string(s.message()));
  }
  const std::string gateway = absl::GetFlag(FLAGS_gateway);
  if (gateway.empty()) Fail(2, "--gateway is required");
  const moe::loadgen::Slo slo =
      OrFail(moe::loadgen::ParseSlo(absl::GetFlag(FLAGS_goodput)));
  if (!(absl::GetFlag(FLAGS_timeout) > 0)) Fail(2, "--timeout must be > 0");

  // Run plans: one per swept value, or one.
  std::vector<moe::loadgen::RunOptions> plans;
  moe::loadgen::RunOptions base;
  base.arrival =
      OrFail(moe::loadgen::ParseArrivalKind(absl::GetFlag(FLAGS_arrival)));
  base.rate = absl::GetFlag(FLAGS_rate);
  base.burstiness = absl::GetFlag(FLAGS_burstiness);
  base.max_concurrency = absl::GetFlag(FLAGS_max_concurrency);
  base.seed = absl::GetFlag(FLAGS_seed);
  base.timeout_seconds = absl::GetFlag(FLAGS_timeout);
  base.progress = absl::GetFlag(FLAGS_progress);
  const std::string trace = absl::GetFlag(FLAGS_trace);
  const std::string sweep_rates = absl::GetFlag(FLAGS_sweep_rates);
  const std::string sweep_concurrency = absl::GetFlag(FLAGS_sweep_concurrency);
  if (!sweep_rates.empty() && !sweep_concurrency.empty()) {
    Fail(2, "give --sweep_rates or --sweep_concurrency, not both");
  }
  if (!trace.empty()) {
    if (!sweep_rates.empty() || !sweep_concurrency.empty()) {
      Fail(2, "--trace replays its own timestamps; it cannot be swept");
    }
    base.arrival = moe::loadgen::ArrivalKind::kTrace;
  }
  if (!sweep_rates.empty()) {
    if (base.arrival == moe::loadgen::ArrivalKind::kConcurrency) {
      Fail(2, "--sweep_rates needs --arrival poisson or gamma");
    }
    for (double rate : ParseList("sweep_rates", sweep_rates)) {
      moe::loadgen::RunOptions plan = base;
      plan.rate = rate;
      plan.label = absl::StrCat("rate ", rate, "/s");
      plans.push_back(plan);
    }
  } else if (!sweep_concurrency.empty()) {
    for (double c : ParseList("sweep_concurrency", sweep_concurrency)) {
      moe::loadgen::RunOptions plan = base;
      plan.arrival = moe::loadgen::ArrivalKind::kConcurrency;
      plan.max_concurrency = static_cast<int>(c);
      plan.label = absl::StrCat("concurrency ", plan.max_concurrency);
      plans.push_back(plan);
    }
  } else {
    plans.push_back(base);
  }

  // The model's limits, from the gateway (which also proves it is there).
  auto channel = moe::MakeChannel(gateway);
  auto stub = moe::v1::Inference::NewStub(channel);
  moe::v1::ModelInfo info;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    context.set_wait_for_ready(true);
    const grpc::Status status =
        stub->GetModelInfo(&context, moe::v1::GetModelInfoRequest(), &info);
    if (!status.ok()) {
      Fail(1, absl::StrCat("cannot reach the gateway at ", gateway, ": ",
                           status.error_message()));
    }
  }
  const moe::loadgen::ModelLimits limits{info.vocab_size(),
                                         info.max_context_length()};

  nlohmann::json runs_json = nlohmann::json::array();
  std::vector<moe::loadgen::RunSummary> summaries;
  for (size_t p = 0; p < plans.size(); ++p) {
    moe::loadgen::RunOptions plan = plans[p];
    plan.seed = base.seed + p;
    std::vector<moe::loadgen::RequestSpec> specs;
    if (!trace.empty()) {
      specs = OrFail(moe::loadgen::LoadTrace(trace, absl::GetFlag(FLAGS_trace_speed),
                                             limits, plan.seed));
    } else {
      moe::loadgen::RandomWorkload workload;
      workload.num_requests = absl::GetFlag(FLAGS_num_requests);
      workload.input_len = absl::GetFlag(FLAGS_input_len);
      workload.output_len = absl::GetFlag(FLAGS_output_len);
      workload.distribution = OrFail(moe::loadgen::ParseLengthDistribution(
          absl::GetFlag(FLAGS_length_distribution)));
      workload.range_ratio = absl::GetFlag(FLAGS_range_ratio);
      workload.shared_prefix_len = absl::GetFlag(FLAGS_shared_prefix_len);
      workload.num_prefixes = absl::GetFlag(FLAGS_num_prefixes);
      workload.seed = plan.seed;
      specs = OrFail(moe::loadgen::BuildRandomWorkload(workload, limits));
    }
    const moe::loadgen::RunOutput output =
        OrFail(moe::loadgen::RunLoad(*stub, specs, plan));
    summaries.push_back(moe::loadgen::Summarize(output, plan, slo));
    runs_json.push_back(moe::loadgen::ToJson(summaries.back()));
  }

  const std::string table = moe::loadgen::MarkdownSummary(summaries);
  std::printf("%s\n", table.c_str());
  std::fflush(stdout);
  if (!absl::GetFlag(FLAGS_markdown).empty()) {
    WriteText(absl::GetFlag(FLAGS_markdown), table);
  }
  if (!absl::GetFlag(FLAGS_json).empty()) {
    nlohmann::json out = {
        {"tool", "moe-loadgen"},
        {"gateway", gateway},
        {"model",
         {{"architecture", info.architecture()},
          {"vocab_size", info.vocab_size()},
          {"max_context_length", info.max_context_length()}}},
        {"workload",
         {{"source", trace.empty() ? "random" : "trace"},
          {"trace", trace},
          {"num_requests", absl::GetFlag(FLAGS_num_requests)},
          {"input_len", absl::GetFlag(FLAGS_input_len)},
          {"output_len", absl::GetFlag(FLAGS_output_len)},
          {"length_distribution", absl::GetFlag(FLAGS_length_distribution)},
          {"range_ratio", absl::GetFlag(FLAGS_range_ratio)},
          {"shared_prefix_len", absl::GetFlag(FLAGS_shared_prefix_len)},
          {"num_prefixes", absl::GetFlag(FLAGS_num_prefixes)},
          {"seed", base.seed}}},
        {"goodput_slo_ms",
         {{"ttft", slo.ttft_ms ? nlohmann::json(*slo.ttft_ms) : nlohmann::json(nullptr)},
          {"tpot", slo.tpot_ms ? nlohmann::json(*slo.tpot_ms) : nlohmann::json(nullptr)},
          {"e2el", slo.e2el_ms ? nlohmann::json(*slo.e2el_ms) : nlohmann::json(nullptr)}}},
        {"runs", runs_json},
    };
    WriteText(absl::GetFlag(FLAGS_json), out.dump(2) + "\n");
  }
  if (!absl::GetFlag(FLAGS_plot).empty()) {
    if (absl::Status s =
            moe::loadgen::WriteSweepPlot(summaries, absl::GetFlag(FLAGS_plot));
        !s.ok()) {
      Fail(1, std::string(s.message()));
    }
    std::fprintf(stderr, "moe-loadgen: plot written to %s\n",
                 absl::GetFlag(FLAGS_plot).c_str());
  }
  return 0;
}
