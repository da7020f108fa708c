#include "core/expert_ffn.h"

#include "core/cpu/kernels.h"

namespace moe {

void GroupedFfnRunner::Run(absl::Span<const FfnGroup> groups,
                           ThreadPool* pool) {
  // Scratch offsets: group g's [tokens, intermediate] rows start at offset[g].
  std::vector<int64_t> offset(groups.size() + 1, 0);
  for (size_t g = 0; g < groups.size(); ++g) {
    offset[g + 1] = offset[g] + groups[g].tokens * groups[g].weights->gate.rows();
  }
  if (static_cast<int64_t>(gate_.size()) < offset.back()) {
    gate_.resize(offset.back());
    up_.resize(offset.back());
  }
  std::vector<cpu::MatMulJob> jobs;
  jobs.reserve(2 * groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    const FfnGroup& grp = groups[g];
    const int64_t inter = grp.weights->gate.rows();
    const int64_t hidden = grp.weights->gate.cols();
    jobs.push_back({grp.x, grp.tokens, hidden, &grp.weights->gate,
                    gate_.data() + offset[g], inter});
    jobs.push_back({grp.x, grp.tokens, hidden, &grp.weights->up,
                    up_.data() + offset[g], inter});
  }
  cpu::MatMul(jobs, pool);
  cpu::SiluMul(gate_.data(), up_.data(), gate_.data(), offset.back());
  jobs.clear();
  for (size_t g = 0; g < groups.size(); ++g) {
    const FfnGroup& grp = groups[g];
    const int64_t inter = grp.weights->gate.rows();
    const int64_t hidden = grp.weights->down.rows();
    jobs.push_back({gate_.data() + offset[g], grp.tokens, inter,
                    &grp.weights->down, grp.out, hidden});
  }
  cpu::MatMul(jobs, pool);
}

}  // namespace moe
