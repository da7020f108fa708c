// The attention servers that dispatch MoE steps themselves with a copy of
// the router's placement (--moe_dispatch=direct), and what each has
// applied: the router publishes a new placement to them (WatchPlacement, a
// long poll) and, before unloading experts a rebalance moved, waits until
// each has acknowledged it (applied it, and finished every call it planned
// with the old one).
//
// A follower registers when it copies the placement (GetDispatchConfig with
// its name) and stays live while it keeps polling: one not heard from for
// `expiry_seconds` (it stopped or died) is no longer waited for. Each poll
// also reports the follower's load (tokens per layer and expert of its own
// dispatches), which the rebalancing adds to the router's.
#ifndef MOE_ROUTER_PLACEMENT_FOLLOWERS_H_
#define MOE_ROUTER_PLACEMENT_FOLLOWERS_H_

#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/support/server_callback.h"
#include "moe/v1/router.pb.h"
#include "router/placement_table.h"

namespace moe {

// Writes `placement` as the per-server lists of the wire.
void WritePlacement(
    const PlacementTable& placement,
    google::protobuf::RepeatedPtrField<v1::ServerPlacement>* out);
// Reads them back for `num_servers` servers; INVALID_ARGUMENT naming the
// field (`field_prefix`[i]...) for a server id outside them or listed
// twice, or a negative layer or expert.
absl::StatusOr<PlacementTable> ReadPlacement(
    const google::protobuf::RepeatedPtrField<v1::ServerPlacement>& servers,
    int num_servers, const std::string& field_prefix);

// Thread-safe.
class PlacementFollowers {
 public:
  static constexpr double kMaxHoldSeconds = 60;

  explicit PlacementFollowers(double expiry_seconds = 90);
  // Answers every held poll (see Stop).
  ~PlacementFollowers();

  // The current placement and its version, as published.
  void SetCurrent(uint64_t version, const PlacementTable& placement);
  // `follower` copied the placement of `version` (GetDispatchConfig).
  void Register(const std::string& follower, uint64_t version);

  // A WatchPlacement call: records the acknowledgement, then finishes
  // `reactor` with the current placement at once or, when the follower has
  // it already, when it changes or the hold ends.
  void Watch(const v1::WatchPlacementRequest& request,
             v1::PlacementUpdate* response, grpc::ServerUnaryReactor* reactor);

  // Waits until every live follower has acknowledged `version` or later,
  // at most `timeout`; returns the followers that have not (empty when
  // all have, or when there are none).
  std::vector<std::string> AwaitAcknowledged(uint64_t version,
                                             absl::Duration timeout);
  // Whether every live follower has acknowledged the current version.
  bool AllCurrent();

  // Asks every live follower for its load now (answers the held polls,
  // whose followers poll again at once with their counts) and waits for
  // their reports, at most `timeout`; then returns the sum over every
  // follower ever heard of its last report, [layers][experts] (zeros where
  // none reported).
  std::vector<std::vector<int64_t>> CollectLoad(int num_layers,
                                                int num_experts,
                                                absl::Duration timeout);

  // The sum over every follower ever heard of its last report, without
  // asking for fresh ones (the load window's periodic samples).
  std::vector<std::vector<int64_t>> LastLoad(int num_layers, int num_experts);

  // Answers held polls now, and later ones at once (the server is
  // stopping).
  void Stop();

 private:
  struct Follower {
    uint64_t applied = 0;
    absl::Time last_seen;
    // Its last load report: layer -> tokens per expert.
    std::map<int, std::vector<int64_t>> load;
  };
  struct HeldPoll {
    v1::PlacementUpdate* response;
    grpc::ServerUnaryReactor* reactor;
    absl::Time until;
  };

  std::vector<std::vector<int64_t>> SumLoadLocked(int num_layers,
                                                  int num_experts) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FillLocked(v1::PlacementUpdate* response)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool LiveLocked(const Follower& f, absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TimerLoop();

  const absl::Duration expiry_;
  absl::Mutex mu_;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  v1::PlacementUpdate current_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Follower> followers_ ABSL_GUARDED_BY(mu_);
  std::vector<HeldPoll> held_ ABSL_GUARDED_BY(mu_);
  // Answers the held polls now, asking for load reports (the followers
  // then poll again at once) with `report_load`.
  void AnswerAllLocked(std::vector<grpc::ServerUnaryReactor*>& answered,
                       bool report_load) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread timer_;
};

}  // namespace moe

#endif  // MOE_ROUTER_PLACEMENT_FOLLOWERS_H_
