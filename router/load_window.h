// A sliding window over cumulative per-(layer, expert) token counts: the
// rebalancer records the counts every so often, and asks for the tokens of
// the last W seconds as "counts now minus counts W seconds ago". Pure data
// structure; not thread-safe (the owner locks).
#ifndef MOE_ROUTER_LOAD_WINDOW_H_
#define MOE_ROUTER_LOAD_WINDOW_H_

#include <cstdint>
#include <deque>
#include <vector>

#include "absl/time/time.h"

namespace moe {

// Tokens per [layer][expert], cumulative since the router started.
using LayerExpertCounts = std::vector<std::vector<int64_t>>;

class LoadWindow {
 public:
  // `window`: how far back the load reaches (> 0).
  explicit LoadWindow(absl::Duration window) : window_(window) {}

  // Records `counts` taken at `at` (times ascending). Drops samples that no
  // window ending at `at` or later needs: all older than the newest sample
  // at or before `at - window`.
  void Record(absl::Time at, LayerExpertCounts counts);

  // The tokens of the window ending at `now` given the counts `now_counts`:
  // now_counts minus the newest sample at or before now - window (or the
  // oldest sample when none is that old: the window then starts at it).
  // Negative differences (a counter that went back) count as 0. Also sets
  // `*covered` to the seconds the result spans (0 without samples, when
  // the result is `now_counts` itself).
  LayerExpertCounts Tokens(absl::Time now, const LayerExpertCounts& now_counts,
                           absl::Duration* covered) const;

  size_t samples() const { return samples_.size(); }

 private:
  struct Sample {
    absl::Time at;
    LayerExpertCounts counts;
  };
  absl::Duration window_;
  std::deque<Sample> samples_;
};

}  // namespace moe

#endif  // MOE_ROUTER_LOAD_WINDOW_H_
