#include "bench/eplb_bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/rpc/channel_util.h"
#include "grpcpp/client_context.h"
#include "moe/v1/router.grpc.pb.h"

namespace moe::bench {
namespace {

// The arrival time of every token message of one greedy stream.
struct Timeline {
  std::vector<Clock::time_point> arrivals;
  grpc::Status status;
};

void ReadTimeline(v1::Inference::Stub& stub, const GenerationRequest& r,
                  Timeline& out, std::atomic<int>& tokens_seen) {
  v1::GenerateRequest request;
  for (int32_t id : r.prompt) request.add_prompt_ids(id);
  request.set_max_tokens(r.max_tokens);
  request.set_ignore_eos(true);
  grpc::ClientContext context;
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    if (response.token_ids_size() == 0) continue;
    out.arrivals.push_back(Clock::now());
    tokens_seen.fetch_add(response.token_ids_size());
  }
  out.status = reader->Finish();
}

v1::RebalanceResponse Rebalance(const std::string& router) {
  auto stub = v1::RouterService::NewStub(MakeChannel(router));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::minutes(10));
  v1::RebalanceResponse response;
  const grpc::Status status =
      stub->Rebalance(&context, v1::RebalanceRequest(), &response);
  if (!status.ok()) {
    Die(absl::StrCat("Rebalance at ", router, " failed: ",
                     status.error_message()));
  }
  if (!response.applied()) {
    Die(absl::StrCat("the rebalance was not applied: ", response.reason()));
  }
  return response;
}

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Slots the router has sent to each expert server so far, by server id.
std::vector<int64_t> ServerSlots(v1::RouterService::Stub& router) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  v1::RouterStats stats;
  const grpc::Status status =
      router.GetStats(&context, v1::GetRouterStatsRequest(), &stats);
  if (!status.ok()) {
    Die(absl::StrCat("GetStats at the router failed: ",
                     status.error_message()));
  }
  std::vector<int64_t> slots;
  for (const v1::ExpertServerCounts& server : stats.servers()) {
    if (server.server() >= static_cast<int>(slots.size())) {
      slots.resize(server.server() + 1, 0);
    }
    slots[server.server()] = server.slots();
  }
  return slots;
}

// Max over mean of the slots each server got between two ServerSlots, as
// text; "not seen by the router" when it dispatched none (an attention
// server with --moe_dispatch=direct sends them itself).
std::string MeasuredImbalance(const std::vector<int64_t>& before,
                              const std::vector<int64_t>& after) {
  int64_t max = 0, total = 0;
  for (size_t s = 0; s < after.size(); ++s) {
    const int64_t got = after[s] - (s < before.size() ? before[s] : 0);
    max = std::max(max, got);
    total += got;
  }
  if (total == 0) return "not seen by the router (direct dispatch)";
  return absl::StrFormat("%.3f (max / mean slots per expert server)",
                         static_cast<double>(max) * after.size() / total);
}

// Best seconds per decode step of `repeats` runs of `requests`.
double BestStep(BenchCluster& cluster, v1::RouterService::Stub& router,
                const std::vector<GenerationRequest>& requests, int repeats,
                const char* placement) {
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    const std::vector<int64_t> slots_before = ServerSlots(router);
    const double expert_cpu = cluster.CpuSeconds("expert_server");
    const double attention_cpu = cluster.CpuSeconds("attention_server");
    const double router_cpu = cluster.CpuSeconds("router");
    const Clock::time_point start = Clock::now();
    const double rate = ClusterDecodeRun(cluster.gateway(), requests);
    const double wall = Seconds(Clock::now() - start);
    const double step = static_cast<double>(requests.size()) / rate;
    const std::string imbalance =
        MeasuredImbalance(slots_before, ServerSlots(router));
    Note(absl::StrFormat(
        "eplb: %s placement, run %d/%d: %.1f tokens/s, %.2f ms per step, "
        "measured imbalance %s; CPU over %.2f s of wall time: expert "
        "servers %.2f s, attention %.2f s, router %.2f s",
        placement, r + 1, repeats, rate, step * 1e3, imbalance, wall,
        cluster.CpuSeconds("expert_server") - expert_cpu,
        cluster.CpuSeconds("attention_server") - attention_cpu,
        cluster.CpuSeconds("router") - router_cpu));
    best = best == 0 ? step : std::min(best, step);
  }
  return best;
}

}  // namespace

EplbResult MeasureEplb(BenchCluster& cluster, const std::string& router,
                       int vocab, int batch, int steps, int repeats) {
  EplbResult result;
  auto router_stub = v1::RouterService::NewStub(MakeChannel(router));
  const int prompt_tokens = 16;
  ClusterDecodeRun(cluster.gateway(),
                   DecodeRequests(batch, prompt_tokens, 8, vocab, 98));
  const std::vector<GenerationRequest> requests =
      DecodeRequests(batch, prompt_tokens, steps, vocab, 4000);
  result.step_before_seconds = BestStep(cluster, *router_stub, requests, repeats, "first");

  // Long streams; the rebalance starts once they have decoded a third.
  const std::vector<GenerationRequest> long_requests =
      DecodeRequests(batch, prompt_tokens, 3 * steps, vocab, 5000);
  std::vector<Timeline> timelines(long_requests.size());
  std::atomic<int> tokens_seen{0};
  std::vector<std::thread> readers;
  for (size_t i = 0; i < long_requests.size(); ++i) {
    readers.emplace_back([&, i] {
      ReadTimeline(cluster.gateway(), long_requests[i], timelines[i],
                   tokens_seen);
    });
  }
  while (tokens_seen.load() < batch * steps) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const Clock::time_point migration_start = Clock::now();
  result.rebalance = Rebalance(router);
  const Clock::time_point migration_end = Clock::now();
  for (std::thread& t : readers) t.join();
  std::vector<double> before_steps;
  for (const Timeline& t : timelines) {
    if (!t.status.ok()) {
      Die(absl::StrCat("a stream open during the rebalance failed: ",
                       t.status.error_message()));
    }
    for (size_t i = 1; i < t.arrivals.size(); ++i) {
      const Clock::time_point begin = t.arrivals[i - 1], end = t.arrivals[i];
      const double gap = Seconds(end - begin);
      if (end < migration_start) {
        before_steps.push_back(gap);
      } else if (begin <= migration_end) {
        result.migration_max_step_seconds =
            std::max(result.migration_max_step_seconds, gap);
      }
    }
  }
  result.median_step_seconds = Median(before_steps);
  Note(absl::StrFormat(
      "eplb: rebalanced in %.3f s (imbalance %.3f -> %.3f predicted, %d "
      "experts loaded, %d unloaded); longest step during it %.2f ms, median "
      "step before %.2f ms",
      Seconds(migration_end - migration_start),
      result.rebalance.imbalance_before(), result.rebalance.imbalance_after(),
      result.rebalance.loaded(), result.rebalance.unloaded(),
      result.migration_max_step_seconds * 1e3,
      result.median_step_seconds * 1e3));

  result.step_after_seconds = BestStep(cluster, *router_stub, requests, repeats, "new");
  return result;
}

}  // namespace moe::bench
