// The exhaustive optimum of a small EPLB layer, the yardstick of the
// placement tests (eplb_test, eplb_hierarchical_test).
#ifndef MOE_TESTS_EPLB_EXHAUSTIVE_H_
#define MOE_TESTS_EPLB_EXHAUSTIVE_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

namespace moe {

// The smallest possible max server load over every placement: each server
// hosts any set of at most `slots` experts, every expert on at least one
// server, an expert's load split evenly over its servers.
inline double ExhaustiveBest(const std::vector<double>& load, int servers, int slots) {
  const int experts = static_cast<int>(load.size());
  std::vector<uint32_t> subsets;  // expert bitmasks of size <= slots
  for (uint32_t m = 0; m < (1u << experts); ++m) {
    if (__builtin_popcount(m) <= slots) subsets.push_back(m);
  }
  double best = 1e300;
  std::vector<uint32_t> chosen(servers);
  std::function<void(int)> search = [&](int s) {
    if (s == servers) {
      uint32_t covered = 0;
      for (uint32_t m : chosen) covered |= m;
      if (covered != (1u << experts) - 1) return;
      std::vector<int> count(experts, 0);
      for (uint32_t m : chosen) {
        for (int e = 0; e < experts; ++e) count[e] += (m >> e) & 1;
      }
      double worst = 0;
      for (uint32_t m : chosen) {
        double l = 0;
        for (int e = 0; e < experts; ++e) {
          if ((m >> e) & 1) l += load[e] / count[e];
        }
        worst = std::max(worst, l);
      }
      best = std::min(best, worst);
      return;
    }
    for (uint32_t m : subsets) {
      chosen[s] = m;
      search(s + 1);
    }
  };
  search(0);
  return best;
}

}  // namespace moe

#endif  // MOE_TESTS_EPLB_EXHAUSTIVE_H_
