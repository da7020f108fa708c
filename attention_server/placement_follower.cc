#include "attention_server/placement_follower.h"

#include <chrono>
#include <cstdio>
#include <utility>

#include "core/rpc/channel_util.h"
#include "router/placement_followers.h"

namespace moe {
namespace {

// How long the router may hold one poll; the call's deadline adds a margin.
constexpr double kHoldSeconds = 20;

}  // namespace

PlacementFollower::PlacementFollower(const std::string& router_address,
                                     std::string name, uint64_t version,
                                     RouterEngine* engine,
                                     RouterMetrics* metrics)
    : name_(std::move(name)),
      engine_(engine),
      metrics_(metrics),
      stub_(v1::RouterService::NewStub(MakeChannel(router_address))),
      version_(version),
      thread_([this] { Loop(); }) {}

PlacementFollower::~PlacementFollower() {
  {
    absl::MutexLock lock(&mu_);
    stop_.Notify();
    if (in_flight_ != nullptr) in_flight_->TryCancel();
  }
  thread_.join();
}

uint64_t PlacementFollower::version() const {
  absl::MutexLock lock(&mu_);
  return version_;
}

void PlacementFollower::Loop() {
  while (!stop_.HasBeenNotified()) {
    v1::WatchPlacementRequest request;
    request.set_follower(name_);
    request.set_applied_version(version());
    request.set_hold_seconds(kHoldSeconds);
    const RouterTotals totals = engine_->Totals();
    for (const LayerDispatchStats& layer : totals.layers) {
      if (layer.experts.empty()) continue;
      v1::LayerDispatchCounts* out = request.add_load();
      out->set_layer(layer.layer);
      for (size_t e = 0; e < layer.experts.size(); ++e) {
        v1::ExpertDispatchCounts* counts = out->add_experts();
        counts->set_expert(static_cast<int32_t>(e));
        counts->set_tokens(layer.experts[e].tokens);
      }
    }
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(static_cast<int>(kHoldSeconds) +
                                              30));
    {
      absl::MutexLock lock(&mu_);
      if (stop_.HasBeenNotified()) return;
      in_flight_ = &context;
    }
    v1::PlacementUpdate update;
    const absl::Time asked = absl::Now();
    const grpc::Status status = stub_->WatchPlacement(&context, request, &update);
    {
      absl::MutexLock lock(&mu_);
      in_flight_ = nullptr;
    }
    if (stop_.HasBeenNotified()) return;
    const bool changed = update.version() != request.applied_version();
    if (!status.ok() || (changed && !Apply(update))) {
      // The router restarts, or sent what does not fit: try again soon.
      stop_.WaitForNotificationWithTimeout(absl::Seconds(1));
    } else if (!changed && !update.report_load() &&
               absl::Now() - asked < absl::Seconds(1)) {
      // Answered without holding (a router that is stopping): not again
      // at once.
      stop_.WaitForNotificationWithTimeout(absl::Seconds(1));
    }
  }
}

bool PlacementFollower::Apply(const v1::PlacementUpdate& update) {
  const int servers = engine_->placement()->num_servers();
  absl::StatusOr<PlacementTable> table =
      ReadPlacement(update.placement(), servers, "placement");
  absl::StatusOr<uint64_t> local =
      table.ok() ? engine_->SwitchPlacement(*std::move(table))
                 : absl::StatusOr<uint64_t>(table.status());
  if (!local.ok()) {
    std::fprintf(stderr,
                 "attention_server: the router's placement version %llu does "
                 "not fit: %s\n",
                 static_cast<unsigned long long>(update.version()),
                 std::string(local.status().message()).c_str());
    return false;
  }
  // Acknowledged (by the next poll) only once no call uses the old one.
  engine_->AwaitPlansBefore(*local);
  metrics_->SetServerExperts(*engine_->placement());
  {
    absl::MutexLock lock(&mu_);
    version_ = update.version();
  }
  std::printf("attention_server: dispatching with the router's placement "
              "version %llu\n",
              static_cast<unsigned long long>(update.version()));
  std::fflush(stdout);
  return true;
}

}  // namespace moe
