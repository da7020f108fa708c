#include "core/thread_pool.h"

#include "core/cpu_affinity.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace moe {
namespace {

inline void CpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

// Pause iterations between clock reads while a worker spins, and before a
// waiting caller starts yielding its core (which lets a descheduled worker
// finish its chunk when other processes share the machine).
constexpr int kPausesPerClockRead = 64;
constexpr int kCallerSpinIterations = 2000;

}  // namespace

ThreadPool::ThreadPool(int num_threads, int spin_microseconds,
                       std::vector<int> pin_cpus)
    : spin_microseconds_(std::max(0, spin_microseconds)),
      pin_cpus_(std::move(pin_cpus)) {
  if (num_threads <= 0) {
    num_threads = static_cast<int>(std::thread::hardware_concurrency());
  }
  num_threads_ = std::max(1, num_threads);
  for (int i = 1; i < num_threads_; ++i) {
    workers_.emplace_back([this, i] {
      // Best effort: an unpinned worker computes the same results.
      if (!pin_cpus_.empty()) {
        PinCurrentThread(pin_cpus_[i % pin_cpus_.size()]).IgnoreError();
      }
      WorkerLoop(i);
    });
  }
}

absl::Status ThreadPool::PinOwner() {
  if (pin_cpus_.empty()) return absl::OkStatus();
  return PinCurrentThread(pin_cpus_[0]);
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunChunks() {
  for (;;) {
    const int64_t c = next_chunk_.fetch_add(1, std::memory_order_relaxed);
    if (c >= num_chunks_) break;
    const int64_t begin = c * chunk_;
    const int64_t end = std::min(n_, begin + chunk_);
    (*fn_)(begin, end);
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t min_chunk,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  min_chunk = std::max<int64_t>(1, min_chunk);
  // A few chunks per thread balance uneven progress without much overhead.
  int64_t chunk = std::max(min_chunk, (n + num_threads_ * 4 - 1) /
                                          (num_threads_ * 4));
  if (num_threads_ == 1 || n <= min_chunk) {
    fn(0, n);
    return;
  }
  parked_.store(false, std::memory_order_relaxed);
  fn_ = &fn;
  n_ = n;
  chunk_ = chunk;
  num_chunks_ = (n + chunk - 1) / chunk;
  next_chunk_.store(0, std::memory_order_relaxed);
  pending_.store(num_threads_ - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  RunChunks();
  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < kCallerSpinIterations) {
      CpuRelax();
    } else {
      std::this_thread::yield();
    }
  }
  fn_ = nullptr;
}

void ThreadPool::Park() { parked_.store(true, std::memory_order_relaxed); }

void ThreadPool::WorkerLoop(int /*index*/) {
  uint64_t seen = 0;
  for (;;) {
    const auto spin_until =
        std::chrono::steady_clock::now() +
        std::chrono::microseconds(spin_microseconds_);
    int spins = 0;
    bool spinning = spin_microseconds_ > 0;
    uint64_t gen;
    while ((gen = generation_.load(std::memory_order_acquire)) == seen) {
      if (spinning) {
        CpuRelax();
        if (++spins % kPausesPerClockRead == 0 &&
            (parked_.load(std::memory_order_relaxed) ||
             std::chrono::steady_clock::now() >= spin_until)) {
          spinning = false;
        }
        continue;
      }
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return generation_.load(std::memory_order_acquire) != seen;
      });
    }
    seen = gen;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    RunChunks();
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace moe
