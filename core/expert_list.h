// The textual form of a set of (layer, expert) pairs, as given to
// `expert_server --experts` and written by the launcher:
//   "all"                       every expert of every MoE layer
//   "none"                      no expert: an expert server that joins a
//                               running cluster and hosts what the router
//                               assigns it (LoadExperts)
//   "0:1,0:3,1:5"               single pairs
//   "0:0-3,1:4-7"               inclusive ranges of experts within a layer
// Whitespace around entries is ignored.
#ifndef MOE_CORE_EXPERT_LIST_H_
#define MOE_CORE_EXPERT_LIST_H_

#include <set>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe {

struct ExpertList {
  bool all = false;                          // "all"
  bool none = false;                         // "none"
  std::set<std::pair<int, int>> experts;     // (layer, expert); empty if all
};

// INVALID_ARGUMENT naming the malformed entry (not LAYER:EXPERT or
// LAYER:FIRST-LAST with non-negative integers and FIRST <= LAST, a range
// over 1,000,000 experts) or an empty list ("none" is the explicit empty
// list).
absl::StatusOr<ExpertList> ParseExpertList(absl::string_view text);

// The compact form: one LAYER:FIRST-LAST entry per run of consecutive
// experts of a layer (LAYER:E for a run of one), ascending. Parses back to
// `experts`.
std::string FormatExpertList(const std::set<std::pair<int, int>>& experts);

}  // namespace moe

#endif  // MOE_CORE_EXPERT_LIST_H_
