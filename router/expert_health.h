// Which expert servers the router may send work to.
//
// A server is marked down when a call to it fails with UNAVAILABLE or
// DEADLINE_EXCEEDED (MarkDown), or when kProbeFailuresToMarkDown health
// probes in a row fail (one slow answer on a busy machine is not enough);
// it is marked up again only when a probe answers SERVING (and, with an
// admission check, once the check passes: see SetAdmission). A background
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
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace moe {

// Thread-safe.
class ExpertHealth {
 public:
  static constexpr int kProbeFailuresToMarkDown = 2;

  // Runs on every transition (server id, up), from the thread that noticed.
  using Listener = std::function<void(int server, bool up)>;
  // Runs on the probing thread for each probe that found `server` SERVING
  // (`up`: whether it is marked up now); the server is marked (or stays)
  // up only when it returns OK, and is marked down with its message
  // otherwise. The router's check that the server hosts what the placement
  // gives it (Rebalancer::Admit).
  using Admission = std::function<absl::Status(int server, bool up)>;

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
  // Replaces the admission check (null: SERVING is enough). Waits for a
  // check in flight, so that after SetAdmission(nullptr) the old one is
  // never called again.
  void SetAdmission(Admission admission);
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
  absl::Mutex admission_mu_;  // held while the check runs
  Admission admission_ ABSL_GUARDED_BY(admission_mu_);
  std::vector<std::unique_ptr<grpc::health::v1::Health::Stub>> stubs_;
  std::unique_ptr<std::atomic<bool>[]> up_;  // [servers]
  absl::Notification stop_;
  std::thread prober_;
};

}  // namespace moe

#endif  // MOE_ROUTER_EXPERT_HEALTH_H_
