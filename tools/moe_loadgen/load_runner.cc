#include "tools/moe_loadgen/load_runner.h"

#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace moe::loadgen {
namespace {

double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec * 1e-6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Counters the progress line reads.
struct Progress {
  std::atomic<int> sent{0};
  std::atomic<int> completed{0};
  std::atomic<int> failed{0};
  std::atomic<int64_t> tokens{0};
};

// The runner's shared state, behind its mutex.
struct Flight {
  int in_flight = 0;
  int finished = 0;
  int cap = 0;    // max in flight; 0 = none
  int total = 0;  // requests in the run
  Clock::time_point last_done;
  bool BelowCap() const { return cap == 0 || in_flight < cap; }
  bool AllDone() const { return finished == total; }
};

std::string ProgressLine(const std::string& label, const Progress& p, int total,
                         double elapsed) {
  const int sent = p.sent.load();
  const int done = p.completed.load() + p.failed.load();
  const int64_t tokens = p.tokens.load();
  return absl::StrFormat(
      "[moe-loadgen]%s sent %d/%d, done %d (failed %d), in flight %d, "
      "%d tokens, %.1f tok/s, %.1f s",
      label.empty() ? "" : " " + label, sent, total, done, p.failed.load(),
      sent - done, tokens, elapsed > 0 ? tokens / elapsed : 0.0, elapsed);
}

}  // namespace

absl::StatusOr<RunOutput> RunLoad(v1::Inference::Stub& stub,
                                  const std::vector<RequestSpec>& specs,
                                  const RunOptions& options) {
  if (options.max_concurrency < 0) {
    return absl::InvalidArgumentError("--max_concurrency must be >= 0");
  }
  if (options.arrival == ArrivalKind::kConcurrency &&
      options.max_concurrency < 1) {
    return absl::InvalidArgumentError(
        "--arrival=concurrency needs --max_concurrency >= 1");
  }
  std::vector<double> offsets;
  if (options.arrival == ArrivalKind::kTrace) {
    for (const RequestSpec& spec : specs) {
      offsets.push_back(spec.arrival_seconds.value_or(0.0));
    }
  } else {
    absl::StatusOr<std::vector<double>> drawn =
        ArrivalOffsets(options.arrival, static_cast<int>(specs.size()),
                       options.rate, options.burstiness, options.seed);
    if (!drawn.ok()) return drawn.status();
    offsets = *std::move(drawn);
  }

  RunOutput output;
  output.results.resize(specs.size());
  Progress progress;
  absl::Mutex mu;
  Flight flight;  // guarded by mu
  flight.cap = options.max_concurrency;
  flight.total = static_cast<int>(specs.size());

  const bool tty = isatty(STDERR_FILENO) != 0;
  std::atomic<bool> stop_progress{false};
  const Clock::time_point start = Clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  std::thread progress_thread;
  if (options.progress) {
    progress_thread = std::thread([&] {
      double next_line = 5;
      while (!stop_progress.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
        const double t = elapsed();
        if (tty) {
          std::fprintf(stderr, "\r%s\x1b[K",
                       ProgressLine(options.label, progress,
                                    static_cast<int>(specs.size()), t)
                           .c_str());
        } else if (t >= next_line) {
          std::fprintf(stderr, "%s\n",
                       ProgressLine(options.label, progress,
                                    static_cast<int>(specs.size()), t)
                           .c_str());
          next_line += 5;
        }
        std::fflush(stderr);
      }
    });
  }

  const double cpu_before = ProcessCpuSeconds();
  for (size_t i = 0; i < specs.size(); ++i) {
    std::this_thread::sleep_until(
        start + std::chrono::microseconds(
                    static_cast<int64_t>(offsets[i] * 1e6)));
    {
      absl::MutexLock lock(&mu);
      mu.Await(absl::Condition(&flight, &Flight::BelowCap));
      ++flight.in_flight;
    }
    v1::GenerateRequest request;
    request.mutable_prompt_ids()->Add(specs[i].prompt_ids.begin(),
                                      specs[i].prompt_ids.end());
    request.set_max_tokens(specs[i].max_tokens);
    request.mutable_sampling()->set_temperature(0);
    request.set_ignore_eos(true);
    progress.sent.fetch_add(1);
    StartStreamCall(&stub, std::move(request), options.timeout_seconds,
                    [&, i](RequestResult result) {
                      (result.code == grpc::StatusCode::OK ? progress.completed
                                                           : progress.failed)
                          .fetch_add(1);
                      progress.tokens.fetch_add(result.output_tokens);
                      absl::MutexLock lock(&mu);
                      output.results[i] = std::move(result);
                      --flight.in_flight;
                      ++flight.finished;
                      flight.last_done = Clock::now();
                    });
  }
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(&flight, &Flight::AllDone));
    output.duration_seconds =
        std::chrono::duration<double>(flight.last_done - start).count();
  }
  output.cpu_seconds = ProcessCpuSeconds() - cpu_before;
  stop_progress.store(true);
  if (progress_thread.joinable()) progress_thread.join();
  if (options.progress) {
    std::fprintf(stderr, "%s%s\n", tty ? "\r" : "",
                 ProgressLine(options.label, progress,
                              static_cast<int>(specs.size()), elapsed())
                     .c_str());
  }
  return output;
}

}  // namespace moe::loadgen
