#include "tools/moe_loadgen/report.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/subprocess.h"

namespace moe::loadgen {
namespace {

std::string LoadLabel(const RunSummary& run) {
  if (run.rate) {
    std::string label = absl::StrFormat("%g req/s %s", *run.rate, run.arrival);
    if (run.arrival == "gamma") absl::StrAppend(&label, absl::StrFormat(" (b=%g)", run.burstiness));
    if (run.max_concurrency > 0) absl::StrAppend(&label, ", cap ", run.max_concurrency);
    return label;
  }
  if (run.arrival == "concurrency") {
    return absl::StrCat("concurrency ", run.max_concurrency);
  }
  return run.arrival;
}

double LoadValue(const RunSummary& run) {
  return run.rate ? *run.rate : static_cast<double>(run.max_concurrency);
}

}  // namespace

std::string MarkdownSummary(const std::vector<RunSummary>& runs) {
  std::string out =
      "| load | completed | failed | req/s | output tok/s | TTFT p50 / p99 ms "
      "| TPOT p50 / p99 ms | ITL p50 / p99 ms | e2e p50 / p99 ms | goodput req/s |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n";
  for (const RunSummary& r : runs) {
    absl::StrAppend(
        &out,
        absl::StrFormat("| %s | %d | %d | %.2f | %.1f | %.1f / %.1f | %.2f / %.2f "
                        "| %.2f / %.2f | %.0f / %.0f | %s |\n",
                        LoadLabel(r), r.completed, r.failed, r.request_throughput,
                        r.output_token_throughput, r.ttft_ms.median, r.ttft_ms.p99,
                        r.tpot_ms.median, r.tpot_ms.p99, r.itl_ms.median,
                        r.itl_ms.p99, r.e2el_ms.median, r.e2el_ms.p99,
                        r.goodput ? absl::StrFormat("%.2f", *r.goodput) : "-"));
  }
  for (const RunSummary& r : runs) {
    for (const auto& [code, count] : r.errors) {
      absl::StrAppend(&out, "\n", LoadLabel(r), ": ", count, " x ", code);
    }
  }
  return out;
}

absl::Status WriteSweepPlot(const std::vector<RunSummary>& runs,
                            const std::string& png_path) {
  const char* env = std::getenv("GNUPLOT");
  const std::string gnuplot = env != nullptr && *env ? env : "/usr/bin/gnuplot";
  if (access(gnuplot.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--plot needs gnuplot (", gnuplot,
        " not found; `apt-get install gnuplot-nox`, or tools/install_deps.sh)"));
  }
  const std::string data_path = png_path + ".tsv";
  const std::string script_path = png_path + ".gp";
  {
    std::ofstream data(data_path, std::ios::trunc);
    data << "# load\tttft_p50\tttft_p99\ttpot_p50\ttpot_p99\te2e_p50\te2e_p99"
            "\treq_per_s\tout_tok_per_s\n";
    for (const RunSummary& r : runs) {
      data << LoadValue(r) << "\t" << r.ttft_ms.median << "\t" << r.ttft_ms.p99
           << "\t" << r.tpot_ms.median << "\t" << r.tpot_ms.p99 << "\t"
           << r.e2el_ms.median << "\t" << r.e2el_ms.p99 << "\t"
           << r.request_throughput << "\t" << r.output_token_throughput << "\n";
    }
    if (!data) {
      return absl::PermissionDeniedError(absl::StrCat("--plot: cannot write ", data_path));
    }
  }
  const bool by_rate = !runs.empty() && runs.front().rate.has_value();
  const std::string x_label =
      by_rate ? "offered load (requests/s)" : "concurrency (requests in flight)";
  {
    std::ofstream script(script_path, std::ios::trunc);
    script << "set terminal pngcairo size 1200,500 noenhanced\n"
           << "set output '" << png_path << "'\n"
           << "set multiplot layout 1,2 title 'moe-loadgen sweep'\n"
           << "set grid\nset key top left\n"
           << "set xlabel '" << x_label << "'\n"
           << "set ylabel 'latency (ms)'\nset logscale y\n"
           << "plot '" << data_path << "' using 1:2 with linespoints title 'TTFT p50', "
           << "'' using 1:3 with linespoints title 'TTFT p99', "
           << "'' using 1:4 with linespoints title 'TPOT p50', "
           << "'' using 1:5 with linespoints title 'TPOT p99', "
           << "'' using 1:6 with linespoints title 'e2e p50'\n"
           << "unset logscale y\nset ylabel 'output tokens/s'\n"
           << "set y2label 'requests/s'\nset y2tics\n"
           << "plot '" << data_path << "' using 1:9 with linespoints title 'output tok/s', "
           << "'' using 1:8 axes x1y2 with linespoints title 'req/s'\n"
           << "unset multiplot\n";
    if (!script) {
      return absl::PermissionDeniedError(absl::StrCat("--plot: cannot write ", script_path));
    }
  }
  absl::StatusOr<std::unique_ptr<Subprocess>> run =
      Subprocess::Start({gnuplot, script_path});
  if (!run.ok()) return run.status();
  absl::StatusOr<int> code = (*run)->Wait(60);
  if (!code.ok()) return code.status();
  if (*code != 0) {
    return absl::InternalError(absl::StrCat("gnuplot exited with ", *code,
                                            " on ", script_path));
  }
  return absl::OkStatus();
}

}  // namespace moe::loadgen
