// Pinning compute threads to CPUs (Linux sched_setaffinity).
//
// Why: servers that share a few cores (a local cluster, the benchmark host)
// each wake their compute threads once per MoE layer. The scheduler then
// often puts a woken worker on the CPU of the thread that woke it, while the
// other CPU stays idle, and the two halves of a parallel matmul run one after
// the other. Pinning thread k of every compute pool to the k-th CPU keeps a
// pool's threads on distinct CPUs.
#ifndef MOE_CORE_CPU_AFFINITY_H_
#define MOE_CORE_CPU_AFFINITY_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe {

// The CPUs this process may run on, ascending.
std::vector<int> AllowedCpus();

// A CPU list: "" (none: no pinning), "all" (AllowedCpus()), or
// comma-separated CPU numbers and ranges ("0,2-3"), in the order given.
// INVALID_ARGUMENT naming the bad item, or a CPU this process may not run
// on.
absl::StatusOr<std::vector<int>> ParseCpuList(absl::string_view text);

// ", compute threads pinned to CPUs 0,1" for a startup line; "" when
// `cpus` is empty.
std::string DescribePinning(const std::vector<int>& cpus);

// Pins the calling thread to `cpu`; the error names the CPU.
absl::Status PinCurrentThread(int cpu);

// Gives the calling thread (only it, not the process) the lowest nice
// value, 19, so that background work such as loading weights while serving
// takes CPU time mostly when the compute threads leave it idle. It still
// gets a small share on a saturated host, so it does not starve. The error
// names the system call's failure.
absl::Status LowerCurrentThreadPriority();

// The calling thread's nice value (for tests and logs).
int CurrentThreadNice();

}  // namespace moe

#endif  // MOE_CORE_CPU_AFFINITY_H_
