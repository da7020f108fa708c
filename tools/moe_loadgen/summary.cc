#include "tools/moe_loadgen/summary.h"

#include <algorithm>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace moe::loadgen {
namespace {

double Percentile(const std::vector<double>& sorted, double p) {
  const double rank = p / 100.0 * (sorted.size() - 1);
  const size_t low = static_cast<size_t>(rank);
  const size_t high = std::min(low + 1, sorted.size() - 1);
  return sorted[low] + (rank - low) * (sorted[high] - sorted[low]);
}

nlohmann::json DistributionJson(const Distribution& d) {
  return {{"count", d.count}, {"mean", d.mean},  {"median", d.median},
          {"p90", d.p90},     {"p99", d.p99}};
}

std::string CodeName(grpc::StatusCode code) {
  return std::string(absl::StatusCodeToString(static_cast<absl::StatusCode>(code)));
}

}  // namespace

absl::StatusOr<Slo> ParseSlo(const std::string& text) {
  Slo slo;
  for (absl::string_view pair :
       absl::StrSplit(text, absl::ByAnyChar(" ,"), absl::SkipEmpty())) {
    const std::vector<std::string> kv = absl::StrSplit(pair, ':');
    double ms = 0;
    if (kv.size() != 2 || !absl::SimpleAtod(kv[1], &ms) || !(ms > 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--goodput: \"", pair, "\" is not KEY:MILLISECONDS with a value > 0"));
    }
    if (kv[0] == "ttft") {
      slo.ttft_ms = ms;
    } else if (kv[0] == "tpot") {
      slo.tpot_ms = ms;
    } else if (kv[0] == "e2el") {
      slo.e2el_ms = ms;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--goodput: unknown SLO \"", kv[0], "\" (ttft, tpot or e2el)"));
    }
  }
  return slo;
}

Distribution Distribute(std::vector<double> seconds) {
  Distribution d;
  d.count = static_cast<int64_t>(seconds.size());
  if (seconds.empty()) return d;
  for (double& s : seconds) s *= 1000.0;
  std::sort(seconds.begin(), seconds.end());
  d.mean = std::accumulate(seconds.begin(), seconds.end(), 0.0) / seconds.size();
  d.median = Percentile(seconds, 50);
  d.p90 = Percentile(seconds, 90);
  d.p99 = Percentile(seconds, 99);
  return d;
}

RunSummary Summarize(const RunOutput& output, const RunOptions& options,
                     const Slo& slo) {
  RunSummary s;
  s.arrival = ArrivalKindName(options.arrival);
  if (options.arrival == ArrivalKind::kPoisson ||
      options.arrival == ArrivalKind::kGamma) {
    s.rate = options.rate;
  }
  s.burstiness = options.arrival == ArrivalKind::kGamma ? options.burstiness : 1;
  s.max_concurrency = options.max_concurrency;
  s.duration_s = output.duration_seconds;
  std::vector<double> ttft, tpot, itl, e2el;
  int good = 0;
  for (const RequestResult& r : output.results) {
    ++s.sent;
    s.output_tokens += r.output_tokens;
    if (r.code != grpc::StatusCode::OK) {
      ++s.failed;
      ++s.errors[CodeName(r.code)];
      continue;
    }
    ++s.completed;
    s.input_tokens += r.prompt_tokens;
    s.cached_tokens += r.cached_tokens;
    e2el.push_back(r.e2e);
    if (r.output_tokens > 0) ttft.push_back(r.ttft);
    std::optional<double> request_tpot;
    if (r.output_tokens > 1) {
      request_tpot = (r.e2e - r.ttft) / (r.output_tokens - 1);
      tpot.push_back(*request_tpot);
    }
    itl.insert(itl.end(), r.itl.begin(), r.itl.end());
    const bool meets =
        (!slo.ttft_ms || (r.output_tokens > 0 && r.ttft * 1000 <= *slo.ttft_ms)) &&
        (!slo.tpot_ms || !request_tpot || *request_tpot * 1000 <= *slo.tpot_ms) &&
        (!slo.e2el_ms || r.e2e * 1000 <= *slo.e2el_ms);
    good += meets ? 1 : 0;
  }
  const double duration = s.duration_s > 0 ? s.duration_s : 1e-9;
  s.request_throughput = s.completed / duration;
  s.output_token_throughput = s.output_tokens / duration;
  s.total_token_throughput = (s.input_tokens + s.output_tokens) / duration;
  s.ttft_ms = Distribute(ttft);
  s.tpot_ms = Distribute(tpot);
  s.itl_ms = Distribute(itl);
  s.e2el_ms = Distribute(e2el);
  if (!slo.empty()) {
    s.good_requests = good;
    s.goodput = good / duration;
  }
  s.loadgen_cpu_seconds = output.cpu_seconds;
  s.loadgen_cpu_us_per_token =
      s.output_tokens > 0 ? output.cpu_seconds * 1e6 / s.output_tokens : 0;
  return s;
}

nlohmann::json ToJson(const RunSummary& s) {
  nlohmann::json j = {
      {"arrival", s.arrival},
      {"rate", s.rate ? nlohmann::json(*s.rate) : nlohmann::json(nullptr)},
      {"burstiness", s.burstiness},
      {"max_concurrency", s.max_concurrency},
      {"sent", s.sent},
      {"completed", s.completed},
      {"failed", s.failed},
      {"errors", s.errors},
      {"duration_s", s.duration_s},
      {"input_tokens", s.input_tokens},
      {"output_tokens", s.output_tokens},
      {"cached_tokens", s.cached_tokens},
      {"request_throughput", s.request_throughput},
      {"output_token_throughput", s.output_token_throughput},
      {"total_token_throughput", s.total_token_throughput},
      {"ttft_ms", DistributionJson(s.ttft_ms)},
      {"tpot_ms", DistributionJson(s.tpot_ms)},
      {"itl_ms", DistributionJson(s.itl_ms)},
      {"e2el_ms", DistributionJson(s.e2el_ms)},
      {"goodput", s.goodput ? nlohmann::json(*s.goodput) : nlohmann::json(nullptr)},
      {"good_requests",
       s.good_requests ? nlohmann::json(*s.good_requests) : nlohmann::json(nullptr)},
      {"loadgen_cpu_seconds", s.loadgen_cpu_seconds},
      {"loadgen_cpu_us_per_token", s.loadgen_cpu_us_per_token},
  };
  return j;
}

}  // namespace moe::loadgen
