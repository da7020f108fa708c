#include "core/cpu_affinity.h"

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace moe {

std::vector<int> AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

absl::StatusOr<std::vector<int>> ParseCpuList(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  if (text.empty()) return std::vector<int>();
  const std::vector<int> allowed = AllowedCpus();
  if (text == "all") return allowed;
  auto bad = [&](absl::string_view item, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CPU list \"", text, "\": \"", item, "\" ", why,
        " (expected \"all\" or CPU numbers and ranges such as \"0,2-3\")"));
  };
  std::vector<int> cpus;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    item = absl::StripAsciiWhitespace(item);
    std::vector<absl::string_view> ends = absl::StrSplit(item, '-');
    int first = 0;
    int last = 0;
    if (ends.size() > 2 || !absl::SimpleAtoi(ends.front(), &first) ||
        !absl::SimpleAtoi(ends.back(), &last) || first < 0 || last < first) {
      return bad(item, "is not a CPU number or an ascending range");
    }
    for (int cpu = first; cpu <= last; ++cpu) {
      if (!std::binary_search(allowed.begin(), allowed.end(), cpu)) {
        return bad(item, absl::StrCat("names CPU ", cpu,
                                      ", which this process may not use "
                                      "(allowed: ",
                                      absl::StrJoin(allowed, ","), ")"));
      }
      cpus.push_back(cpu);
    }
  }
  return cpus;
}

std::string DescribePinning(const std::vector<int>& cpus) {
  if (cpus.empty()) return "";
  return absl::StrCat(", compute threads pinned to CPUs ",
                      absl::StrJoin(cpus, ","));
}

absl::Status PinCurrentThread(int cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE) {
    return absl::InvalidArgumentError(
        absl::StrCat("CPU ", cpu, " is outside [0, ", CPU_SETSIZE, ")"));
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    return absl::InternalError(absl::StrCat("pinning a thread to CPU ", cpu,
                                            ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

namespace {

// setpriority(PRIO_PROCESS, tid) changes one thread on Linux: each thread
// is a schedulable task with its own nice value.
id_t CurrentThreadId() { return static_cast<id_t>(syscall(SYS_gettid)); }

}  // namespace

absl::Status LowerCurrentThreadPriority() {
  if (setpriority(PRIO_PROCESS, CurrentThreadId(), 19) != 0) {
    return absl::InternalError(absl::StrCat(
        "lowering a thread's priority to nice 19: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

int CurrentThreadNice() {
  errno = 0;
  return getpriority(PRIO_PROCESS, CurrentThreadId());
}

}  // namespace moe
