// A fixed pool of compute threads for data-parallel kernels.
//
// ParallelFor is called from one thread at a time (the owning executor); the
// caller participates as worker 0. Idle workers spin for a while before
// sleeping so that the ~100 back-to-back dispatches of a decode step do not
// each pay a wake-up. A process alone on its cores can spin long (the
// default); servers that share cores with other servers and wait on RPCs
// between bursts of work spin briefly, since a spinning worker takes the
// core that another process needs.
#ifndef MOE_CORE_THREAD_POOL_H_
#define MOE_CORE_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"

namespace moe {

class ThreadPool {
 public:
  // A process alone on its cores.
  static constexpr int kDefaultSpinMicroseconds = 100;
  // A server sharing its cores with other servers.
  static constexpr int kServerSpinMicroseconds = 10;

  // `num_threads` counts the caller; 0 means one per hardware core.
  // `spin_microseconds` (>= 0) is how long an idle worker spins before it
  // sleeps. With `pin_cpus` (see core/cpu_affinity.h), worker k (1 ..
  // num_threads-1) is pinned to pin_cpus[k % size] and PinOwner puts the
  // owning thread, worker 0, on pin_cpus[0].
  explicit ThreadPool(int num_threads = 0,
                      int spin_microseconds = kDefaultSpinMicroseconds,
                      std::vector<int> pin_cpus = {});
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }
  bool pinned() const { return !pin_cpus_.empty(); }

  // Pins the calling thread (the one that will call ParallelFor) to
  // pin_cpus[0]; OK and nothing done without pin_cpus.
  absl::Status PinOwner();

  // Tells idle workers to stop spinning and sleep now: the caller is about to
  // wait for something slow (an RPC, the next request), so a spinning worker
  // would only take a core that another process needs. The next
  // ParallelFor wakes them as usual. Called from the owning thread.
  void Park();

  // Runs fn(begin, end) over [0, n) split into contiguous chunks of at least
  // `min_chunk` items; returns when every chunk is done. Not reentrant.
  void ParallelFor(int64_t n, int64_t min_chunk,
                   const std::function<void(int64_t, int64_t)>& fn);

 private:
  void WorkerLoop(int index);
  void RunChunks();

  int num_threads_;
  int spin_microseconds_;
  const std::vector<int> pin_cpus_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> parked_{false};  // set by Park, cleared by ParallelFor
  std::atomic<int> pending_{0};
  std::atomic<int64_t> next_chunk_{0};
  bool stop_ = false;
  // The current job; written before generation_ is bumped.
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 1;
  int64_t num_chunks_ = 0;
};

}  // namespace moe

#endif  // MOE_CORE_THREAD_POOL_H_
