#include "router/expert_health.h"

#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/rpc/channel_util.h"

namespace moe {

ExpertHealth::ExpertHealth(std::vector<std::string> addresses,
                           double probe_interval_seconds, Listener on_change)
    : addresses_(std::move(addresses)),
      interval_seconds_(probe_interval_seconds),
      on_change_(std::move(on_change)),
      up_(std::make_unique<std::atomic<bool>[]>(addresses_.size())) {
  for (size_t s = 0; s < addresses_.size(); ++s) {
    up_[s].store(true);
    stubs_.push_back(
        grpc::health::v1::Health::NewStub(MakeChannel(addresses_[s])));
  }
  prober_ = std::thread([this] { ProbeLoop(); });
}

ExpertHealth::~ExpertHealth() {
  stop_.Notify();
  prober_.join();
}

void ExpertHealth::MarkDown(int server, const absl::Status& why) {
  Set(server, false, std::string(why.message()));
}

void ExpertHealth::SetAdmission(Admission admission) {
  absl::MutexLock lock(&admission_mu_);
  admission_ = std::move(admission);
}

bool ExpertHealth::IsUp(int server) const { return up_[server].load(); }

std::vector<bool> ExpertHealth::DownMask() const {
  std::vector<bool> down(addresses_.size());
  for (size_t s = 0; s < addresses_.size(); ++s) down[s] = !up_[s].load();
  return down;
}

void ExpertHealth::Set(int server, bool up, const std::string& why) {
  if (server < 0 || server >= num_servers()) return;
  if (up_[server].exchange(up) == up) return;  // not a transition
  if (up) {
    std::printf("router: expert server %d (%s) is SERVING again; it takes "
                "work from now on\n",
                server, addresses_[server].c_str());
  } else {
    std::printf("router: expert server %d (%s) marked down: %s\n", server,
                addresses_[server].c_str(), why.c_str());
  }
  std::fflush(stdout);
  if (on_change_) on_change_(server, up);
}

void ExpertHealth::ProbeLoop() {
  const absl::Duration interval = absl::Seconds(interval_seconds_);
  std::vector<int> failures(addresses_.size(), 0);  // consecutive
  while (!stop_.WaitForNotificationWithTimeout(interval)) {
    for (int s = 0; s < num_servers() && !stop_.HasBeenNotified(); ++s) {
      const absl::Status status =
          CheckServingOn(*stubs_[s], addresses_[s], interval_seconds_);
      if (status.ok()) {
        failures[s] = 0;
        absl::Status admitted;
        {
          absl::MutexLock lock(&admission_mu_);
          if (admission_) admitted = admission_(s, IsUp(s));
        }
        // A server that answers but does not host its experts takes no
        // work: at once, not after several probes.
        Set(s, admitted.ok(), std::string(admitted.message()));
      } else if (++failures[s] >= kProbeFailuresToMarkDown) {
        Set(s, false, std::string(status.message()));
      }
    }
  }
}

}  // namespace moe
