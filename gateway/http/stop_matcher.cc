#include "gateway/http/stop_matcher.h"

#include <algorithm>
#include <utility>

namespace moe {

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (std::string& stop : stops) {
    if (!stop.empty()) stops_.push_back(std::move(stop));
  }
}

std::string StopMatcher::Feed(absl::string_view text) {
  if (stopped_) return "";
  if (stops_.empty()) return std::string(text);
  pending_.append(text.data(), text.size());
  const absl::string_view all(pending_);
  // The earliest occurrence of any stop string ends the text.
  size_t first = absl::string_view::npos;
  for (const std::string& stop : stops_) {
    first = std::min(first, all.find(stop));
  }
  if (first != absl::string_view::npos) {
    std::string out(all.substr(0, first));
    pending_.clear();
    stopped_ = true;
    return out;
  }
  // Hold back the longest tail that is a proper prefix of a stop string.
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    const size_t longest = std::min(stop.size() - 1, all.size());
    for (size_t n = longest; n > hold; --n) {
      if (absl::string_view(stop).substr(0, n) == all.substr(all.size() - n)) {
        hold = n;
        break;
      }
    }
  }
  std::string out(all.substr(0, all.size() - hold));
  pending_.erase(0, all.size() - hold);
  return out;
}

std::string StopMatcher::Finish() {
  if (stopped_) return "";
  std::string out = std::move(pending_);
  pending_.clear();
  return out;
}

}  // namespace moe
