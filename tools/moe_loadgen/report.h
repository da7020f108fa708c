// moe-loadgen's outputs besides the JSON: a markdown summary table of the
// runs, and for a sweep a PNG plot of latency and throughput against the
// offered load (gnuplot from Debian).
#ifndef MOE_TOOLS_MOE_LOADGEN_REPORT_H_
#define MOE_TOOLS_MOE_LOADGEN_REPORT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tools/moe_loadgen/summary.h"

namespace moe::loadgen {

// One row per run: load, completed/failed, throughput, p50/p99 of TTFT,
// TPOT, ITL and e2e, goodput.
std::string MarkdownSummary(const std::vector<RunSummary>& runs);

// Plots the runs (x: offered rate, or max concurrency for concurrency runs)
// into `png_path`: TTFT, TPOT and e2e p50/p99 on one panel, request and
// output token throughput on the other. Runs /usr/bin/gnuplot (or $GNUPLOT);
// FAILED_PRECONDITION saying how to install it when missing, INTERNAL with
// gnuplot's exit code when it fails.
absl::Status WriteSweepPlot(const std::vector<RunSummary>& runs,
                            const std::string& png_path);

}  // namespace moe::loadgen

#endif  // MOE_TOOLS_MOE_LOADGEN_REPORT_H_
