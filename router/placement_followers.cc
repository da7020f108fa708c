#include "router/placement_followers.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace moe {

void WritePlacement(
    const PlacementTable& placement,
    google::protobuf::RepeatedPtrField<v1::ServerPlacement>* out) {
  out->Clear();
  for (int s = 0; s < placement.num_servers(); ++s) {
    v1::ServerPlacement* server = out->Add();
    server->set_server(s);
    for (const LayerExpert& id : placement.ExpertsOn(s)) {
      v1::ExpertId* expert = server->add_experts();
      expert->set_layer(id.layer);
      expert->set_expert(id.expert);
    }
  }
}

absl::StatusOr<PlacementTable> ReadPlacement(
    const google::protobuf::RepeatedPtrField<v1::ServerPlacement>& servers,
    int num_servers, const std::string& field_prefix) {
  PlacementTable out(num_servers);
  std::vector<bool> seen(num_servers, false);
  for (int i = 0; i < servers.size(); ++i) {
    const v1::ServerPlacement& server = servers[i];
    const std::string field = absl::StrCat(field_prefix, "[", i, "]");
    if (server.server() < 0 || server.server() >= num_servers) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".server: ", server.server(),
                       " is outside the ", num_servers, " expert_servers"));
    }
    if (seen[server.server()]) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".server: ", server.server(), " is listed twice"));
    }
    seen[server.server()] = true;
    for (int e = 0; e < server.experts_size(); ++e) {
      const v1::ExpertId& id = server.experts(e);
      if (absl::Status added = out.Add(id.layer(), id.expert(), server.server());
          !added.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ".experts[", e, "]: ", added.message()));
      }
    }
  }
  return out;
}

PlacementFollowers::PlacementFollowers(double expiry_seconds)
    : expiry_(absl::Seconds(expiry_seconds)),
      timer_([this] { TimerLoop(); }) {}

PlacementFollowers::~PlacementFollowers() {
  Stop();
  timer_.join();
}

void PlacementFollowers::AnswerAllLocked(
    std::vector<grpc::ServerUnaryReactor*>& answered, bool report_load) {
  for (HeldPoll& poll : held_) {
    FillLocked(poll.response);
    poll.response->set_report_load(report_load);
    answered.push_back(poll.reactor);
  }
  held_.clear();
}

std::vector<std::vector<int64_t>> PlacementFollowers::CollectLoad(
    int num_layers, int num_experts, absl::Duration timeout) {
  std::vector<grpc::ServerUnaryReactor*> answered;
  absl::Time asked;
  {
    absl::MutexLock lock(&mu_);
    asked = absl::Now();
    AnswerAllLocked(answered, /*report_load=*/true);
  }
  for (grpc::ServerUnaryReactor* reactor : answered) {
    reactor->Finish(grpc::Status::OK);
  }
  absl::MutexLock lock(&mu_);
  auto all_reported = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const absl::Time now = absl::Now();
    for (const auto& [name, f] : followers_) {
      if (LiveLocked(f, now) && f.last_seen < asked) return false;
    }
    return true;
  };
  const absl::Time give_up = asked + timeout;
  while (!all_reported() && absl::Now() < give_up) {
    mu_.AwaitWithDeadline(absl::Condition(&all_reported),
                          std::min(give_up, absl::Now() + absl::Seconds(1)));
  }
  return SumLoadLocked(num_layers, num_experts);
}

std::vector<std::vector<int64_t>> PlacementFollowers::LastLoad(
    int num_layers, int num_experts) {
  absl::MutexLock lock(&mu_);
  return SumLoadLocked(num_layers, num_experts);
}

std::vector<std::vector<int64_t>> PlacementFollowers::SumLoadLocked(
    int num_layers, int num_experts) const {
  std::vector<std::vector<int64_t>> sum(
      num_layers, std::vector<int64_t>(num_experts, 0));
  for (const auto& [name, f] : followers_) {
    for (const auto& [layer, tokens] : f.load) {
      if (layer < 0 || layer >= num_layers) continue;
      for (size_t e = 0; e < tokens.size() && e < sum[layer].size(); ++e) {
        sum[layer][e] += tokens[e];
      }
    }
  }
  return sum;
}

void PlacementFollowers::SetCurrent(uint64_t version,
                                    const PlacementTable& placement) {
  std::vector<grpc::ServerUnaryReactor*> answered;
  {
    absl::MutexLock lock(&mu_);
    version_ = version;
    current_.set_version(version);
    WritePlacement(placement, current_.mutable_placement());
    AnswerAllLocked(answered, /*report_load=*/false);
  }
  for (grpc::ServerUnaryReactor* reactor : answered) {
    reactor->Finish(grpc::Status::OK);
  }
}

void PlacementFollowers::Register(const std::string& follower,
                                  uint64_t version) {
  absl::MutexLock lock(&mu_);
  Follower& f = followers_[follower];
  f.applied = version;
  f.last_seen = absl::Now();
}

void PlacementFollowers::FillLocked(v1::PlacementUpdate* response) {
  *response = current_;
}

bool PlacementFollowers::LiveLocked(const Follower& f, absl::Time now) const {
  return now - f.last_seen < expiry_;
}

void PlacementFollowers::Watch(const v1::WatchPlacementRequest& request,
                               v1::PlacementUpdate* response,
                               grpc::ServerUnaryReactor* reactor) {
  const double hold = std::clamp(request.hold_seconds(), 0.0, kMaxHoldSeconds);
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    if (!request.follower().empty()) {
      Follower& f = followers_[request.follower()];
      f.applied = std::max(f.applied, request.applied_version());
      f.last_seen = now;
      for (const v1::LayerDispatchCounts& layer : request.load()) {
        std::vector<int64_t>& tokens = f.load[layer.layer()];
        tokens.clear();
        for (const v1::ExpertDispatchCounts& e : layer.experts()) {
          if (e.expert() < 0) continue;
          if (static_cast<size_t>(e.expert()) >= tokens.size()) {
            tokens.resize(e.expert() + 1, 0);
          }
          tokens[e.expert()] = e.tokens();
        }
      }
    }
    if (stopping_ || request.applied_version() != version_ || hold <= 0) {
      FillLocked(response);
    } else {
      held_.push_back({response, reactor, now + absl::Seconds(hold)});
      return;
    }
  }
  reactor->Finish(grpc::Status::OK);
}

std::vector<std::string> PlacementFollowers::AwaitAcknowledged(
    uint64_t version, absl::Duration timeout) {
  auto lagging = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<std::string> out;
    const absl::Time now = absl::Now();
    for (const auto& [name, f] : followers_) {
      if (LiveLocked(f, now) && f.applied < version) out.push_back(name);
    }
    return out;
  };
  absl::MutexLock lock(&mu_);
  const absl::Time give_up = absl::Now() + timeout;
  // Acknowledgements arrive with polls (which update followers_ under mu_).
  auto all_acknowledged = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return lagging().empty();
  };
  while (!all_acknowledged() && absl::Now() < give_up) {
    mu_.AwaitWithDeadline(absl::Condition(&all_acknowledged),
                          std::min(give_up, absl::Now() + absl::Seconds(1)));
  }
  return lagging();
}

bool PlacementFollowers::AllCurrent() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  for (const auto& [name, f] : followers_) {
    if (LiveLocked(f, now) && f.applied < version_) return false;
  }
  return true;
}

void PlacementFollowers::Stop() {
  std::vector<grpc::ServerUnaryReactor*> answered;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    AnswerAllLocked(answered, /*report_load=*/false);
  }
  for (grpc::ServerUnaryReactor* reactor : answered) {
    reactor->Finish(grpc::Status::OK);
  }
}

void PlacementFollowers::TimerLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(100));
    const absl::Time now = absl::Now();
    std::vector<grpc::ServerUnaryReactor*> answered;
    std::vector<HeldPoll> still;
    for (HeldPoll& poll : held_) {
      if (poll.until <= now) {
        FillLocked(poll.response);
        answered.push_back(poll.reactor);
      } else {
        still.push_back(poll);
      }
    }
    held_.swap(still);
    if (answered.empty()) continue;
    mu_.Unlock();
    for (grpc::ServerUnaryReactor* reactor : answered) {
      reactor->Finish(grpc::Status::OK);
    }
    mu_.Lock();
  }
}

}  // namespace moe
