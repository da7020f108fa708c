#include "core/expert_list.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace moe {
namespace {

constexpr int kMaxRange = 1000000;

bool ParseNonNegative(absl::string_view text, int* value) {
  return absl::SimpleAtoi(absl::StripAsciiWhitespace(text), value) &&
         *value >= 0;
}

}  // namespace

absl::StatusOr<ExpertList> ParseExpertList(absl::string_view text) {
  ExpertList out;
  text = absl::StripAsciiWhitespace(text);
  if (text == "all") {
    out.all = true;
    return out;
  }
  if (text == "none") {
    out.none = true;
    return out;
  }
  for (absl::string_view entry : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    entry = absl::StripAsciiWhitespace(entry);
    auto bad = [&] {
      return absl::InvalidArgumentError(absl::StrCat(
          "experts: entry \"", entry,
          "\" is not LAYER:EXPERT or LAYER:FIRST-LAST with non-negative "
          "integers"));
    };
    const std::pair<absl::string_view, absl::string_view> parts =
        absl::StrSplit(entry, absl::MaxSplits(':', 1));
    int layer = 0, first = 0, last = 0;
    if (!ParseNonNegative(parts.first, &layer)) return bad();
    const std::pair<absl::string_view, absl::string_view> range =
        absl::StrSplit(parts.second, absl::MaxSplits('-', 1));
    if (!ParseNonNegative(range.first, &first)) return bad();
    last = first;
    if (!range.second.empty() || absl::StrContains(parts.second, '-')) {
      if (!ParseNonNegative(range.second, &last)) return bad();
    }
    if (last < first) {
      return absl::InvalidArgumentError(absl::StrCat(
          "experts: entry \"", entry, "\" has FIRST > LAST"));
    }
    if (last - first >= kMaxRange) {
      return absl::InvalidArgumentError(absl::StrCat(
          "experts: entry \"", entry, "\" spans more than ", kMaxRange,
          " experts"));
    }
    for (int e = first; e <= last; ++e) out.experts.emplace(layer, e);
  }
  if (out.experts.empty()) {
    return absl::InvalidArgumentError(
        "experts: empty list (give LAYER:EXPERT,..., \"all\" or \"none\")");
  }
  return out;
}

std::string FormatExpertList(const std::set<std::pair<int, int>>& experts) {
  std::string out;
  auto it = experts.begin();
  while (it != experts.end()) {
    const int layer = it->first, first = it->second;
    int last = first;
    auto next = std::next(it);
    while (next != experts.end() && next->first == layer &&
           next->second == last + 1) {
      last = next->second;
      ++next;
    }
    if (!out.empty()) out += ',';
    absl::StrAppend(&out, layer, ":", first);
    if (last != first) absl::StrAppend(&out, "-", last);
    it = next;
  }
  return out;
}

}  // namespace moe
