// Which expert servers the router may send work to.
//
// A server is marked down when a call to it fails with UNAVAILABLE or
// DEADLINE_EXCEEDED (MarkDown), or when kProbeFailuresToMarkDown health
// probes in a row fail (one slow answer on a busy machine is not enough);
// it is marked up again only when a probe answers SERVING. A background
// thread probes every server on grpc.health.v1 each
// `probe_interval_seconds` (each probe waits at most that long), so without
// any traffic a dead or hung server is marked down within about
// (kProbeFailuresToMarkDown + 1) intervals, and a restarted one is back up
// within about two.
#ifndef MOE_ROUTER_EXPERT_HEALTH_H_
#define MOE_ROUTER_EXPERT_HEALTH_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace moe {

// Thread-safe.
class ExpertHealth {
 public:
  static constexpr int kProbeFailuresToMarkDown = 2;

  // Runs on every transition (server id, up), from the thread that noticed.
  using Listener = std::function<void(int server, bool up)>;

  // Every server starts up. Starts the probing thread. `addresses[s]` is
  // server id s.
  ExpertHealth(std::vector<std::string> addresses,
               double probe_interval_seconds, Listener on_change);
  // Stops the probing thread (waits for a probe in flight, at most one
  // interval).
  ~ExpertHealth();

  // A call to `server` failed with `why`; servers marked down take no work
  // until a probe finds them SERVING again.
  void MarkDown(int server, const absl::Status& why);
  bool IsUp(int server) const;
  // [servers]: true where the server is down, the form PlanDispatch takes.
  std::vector<bool> DownMask() const;
  int num_servers() const { return static_cast<int>(addresses_.size()); }

 private:
  void ProbeLoop();
  void Set(int server, bool up, const std::string& why);

  const std::vector<std::string> addresses_;
  const double interval_seconds_;
  const Listener on_change_;
  std::vector<std::unique_ptr<grpc::health::v1::Health::Stub>> stubs_;
  std::unique_ptr<std::atomic<bool>[]> up_;  // [servers]
  absl::Notification stop_;
  std::thread prober_;
};

}  // namespace moe

#endif  // MOE_ROUTER_EXPERT_HEALTH_H_
