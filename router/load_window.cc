#include "router/load_window.h"

#include <algorithm>
#include <utility>

namespace moe {

void LoadWindow::Record(absl::Time at, LayerExpertCounts counts) {
  samples_.push_back({at, std::move(counts)});
  // Keep the newest sample at or before the boundary, drop older ones.
  const absl::Time boundary = at - window_;
  while (samples_.size() >= 2 && samples_[1].at <= boundary) {
    samples_.pop_front();
  }
}

LayerExpertCounts LoadWindow::Tokens(absl::Time now,
                                     const LayerExpertCounts& now_counts,
                                     absl::Duration* covered) const {
  if (samples_.empty()) {
    *covered = absl::ZeroDuration();
    return now_counts;
  }
  const absl::Time boundary = now - window_;
  const Sample* base = &samples_.front();
  for (const Sample& s : samples_) {
    if (s.at > boundary) break;
    base = &s;
  }
  *covered = std::max(absl::ZeroDuration(), now - base->at);
  LayerExpertCounts out = now_counts;
  for (size_t l = 0; l < out.size(); ++l) {
    for (size_t e = 0; e < out[l].size(); ++e) {
      const int64_t before = l < base->counts.size() &&
                                     e < base->counts[l].size()
                                 ? base->counts[l][e]
                                 : 0;
      out[l][e] = std::max<int64_t>(out[l][e] - before, 0);
    }
  }
  return out;
}

}  // namespace moe
