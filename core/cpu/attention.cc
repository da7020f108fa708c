#include "core/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace moe::cpu {

void WriteKv(KvCache& cache, int layer, absl::Span<const int32_t> block_table,
             int first_pos, int64_t tokens, const float* k, const float* v,
             int64_t ld) {
  const int bs = cache.shape().block_size;
  const int64_t row = int64_t{cache.shape().num_kv_heads} * cache.shape().head_dim;
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t pos = first_pos + t;
    const int32_t block = block_table[pos / bs];
    const int slot = static_cast<int>(pos % bs);
    std::copy(k + t * ld, k + t * ld + row, cache.KRow(layer, block, slot));
    std::copy(v + t * ld, v + t * ld + row, cache.VRow(layer, block, slot));
  }
}

namespace {

// Dot product with eight partial sums (vectorisable without fast-math).
inline float Dot(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
            ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// One (token, head): out = softmax(q·K^T * scale) V over positions
// [start, pos].
void AttendOne(const float* q, float* out, int pos, int start,
               absl::Span<const int32_t> table, const AttentionParams& p,
               int kv_head, const KvCache& cache, std::vector<float>& scores) {
  const int bs = cache.shape().block_size;
  const int d = p.head_dim;
  const int64_t head_off = int64_t{kv_head} * d;
  const int n = pos - start + 1;
  scores.resize(n);
  float max = -INFINITY;
  for (int j = 0; j < n; ++j) {
    const int kp = start + j;
    const float* krow = cache.KRow(p.layer, table[kp / bs], kp % bs) + head_off;
    const float s = Dot(q, krow, d) * p.scale;
    scores[j] = s;
    max = std::max(max, s);
  }
  double sum = 0;
  for (int j = 0; j < n; ++j) {
    scores[j] = std::exp(scores[j] - max);
    sum += scores[j];
  }
  const float inv = static_cast<float>(1.0 / sum);
  std::fill(out, out + d, 0.0f);
  for (int j = 0; j < n; ++j) {
    const int kp = start + j;
    const float* vrow = cache.VRow(p.layer, table[kp / bs], kp % bs) + head_off;
    const float w = scores[j] * inv;
    for (int i = 0; i < d; ++i) out[i] += w * vrow[i];
  }
}

}  // namespace

void PagedAttention(absl::Span<const AttentionSegment> segments,
                    const AttentionParams& params, const KvCache& cache,
                    ThreadPool* pool) {
  // Work items: (segment, token, head), numbered segment-major.
  std::vector<int64_t> start(segments.size() + 1, 0);
  for (size_t s = 0; s < segments.size(); ++s) {
    start[s + 1] = start[s] + segments[s].tokens * params.num_heads;
  }
  const int group = params.num_heads / params.num_kv_heads;
  auto run = [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;
    size_t s = 0;
    for (int64_t item = begin; item < end; ++item) {
      while (start[s + 1] <= item) ++s;
      const AttentionSegment& seg = segments[s];
      const int64_t local = item - start[s];
      const int64_t t = local / params.num_heads;
      const int h = static_cast<int>(local % params.num_heads);
      const int pos = seg.first_pos + static_cast<int>(t);
      const int first =
          params.sliding_window > 0 ? std::max(0, pos - params.sliding_window + 1) : 0;
      AttendOne(seg.q + t * seg.ldq + int64_t{h} * params.head_dim,
                seg.out + t * seg.ldo + int64_t{h} * params.head_dim, pos,
                first, seg.block_table, params, h / group, cache, scores);
    }
  };
  if (pool == nullptr) {
    run(0, start.back());
  } else {
    pool->ParallelFor(start.back(), 4, run);
  }
}

}  // namespace moe::cpu
