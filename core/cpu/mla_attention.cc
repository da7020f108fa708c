#include "core/cpu/mla_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace moe::cpu {
namespace {

// Dot product with eight independent partial sums (vectorisable without
// reassociation flags).
float Dot(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  }
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
            ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// One (token, head) of one segment.
struct WorkItem {
  int segment;
  int64_t token;
  int head;
};

}  // namespace

void MlaPagedAttention(absl::Span<const MlaSegment> segments,
                       const MlaParams& p, const KvCache& cache,
                       ThreadPool* pool) {
  std::vector<WorkItem> items;
  for (size_t s = 0; s < segments.size(); ++s) {
    for (int64_t t = 0; t < segments[s].tokens; ++t) {
      for (int h = 0; h < p.num_heads; ++h) {
        items.push_back({static_cast<int>(s), t, h});
      }
    }
  }
  const int block_size = cache.shape().block_size;
  const int lora = p.kv_lora_rank;
  auto run = [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t i = begin; i < end; ++i) {
      const WorkItem& w = items[i];
      const MlaSegment& seg = segments[w.segment];
      const int last = seg.first_pos + static_cast<int>(w.token);
      const float* ql = seg.q_latent + w.token * p.ld_q_latent + w.head * lora;
      const float* qp =
          seg.q_pe + w.token * p.ld_q_pe + w.head * p.q_pe_head_stride;
      float* out = seg.out_latent + w.token * p.ld_out + w.head * lora;
      scores.resize(last + 1);
      float max_score = -INFINITY;
      for (int j = 0; j <= last; ++j) {
        const float* row =
            cache.KRow(p.layer, seg.block_table[j / block_size], j % block_size);
        const float s =
            (Dot(ql, row, lora) + Dot(qp, row + lora, p.rope_dim)) * p.scale;
        scores[j] = s;
        max_score = std::max(max_score, s);
      }
      float sum = 0;
      for (int j = 0; j <= last; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        sum += scores[j];
      }
      const float inv = 1.0f / sum;
      std::fill(out, out + lora, 0.0f);
      for (int j = 0; j <= last; ++j) {
        const float* row =
            cache.KRow(p.layer, seg.block_table[j / block_size], j % block_size);
        const float weight = scores[j] * inv;
        for (int c = 0; c < lora; ++c) out[c] += weight * row[c];
      }
    }
  };
  if (pool == nullptr) {
    run(0, static_cast<int64_t>(items.size()));
  } else {
    pool->ParallelFor(static_cast<int64_t>(items.size()), 1, run);
  }
}

void WriteLatent(KvCache& cache, int layer,
                 absl::Span<const int32_t> block_table, int first_pos,
                 int64_t tokens, const float* latent, int64_t ld) {
  const int block_size = cache.shape().block_size;
  const int64_t dim = int64_t{cache.shape().num_kv_heads} * cache.shape().head_dim;
  for (int64_t t = 0; t < tokens; ++t) {
    const int pos = first_pos + static_cast<int>(t);
    std::memcpy(cache.KRow(layer, block_table[pos / block_size], pos % block_size),
                latent + t * ld, dim * sizeof(float));
  }
}

void ApplyInterleavedRope(float* x, int64_t tokens, int64_t ld, int64_t heads,
                          int64_t head_stride, int64_t offset,
                          absl::Span<const float> inv_freq,
                          float cos_sin_scale, const int32_t* positions) {
  const int64_t half = static_cast<int64_t>(inv_freq.size());
  std::vector<float> cos_v(half), sin_v(half);
  for (int64_t t = 0; t < tokens; ++t) {
    const float pos = static_cast<float>(positions[t]);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      cos_v[i] = std::cos(angle) * cos_sin_scale;
      sin_v[i] = std::sin(angle) * cos_sin_scale;
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + t * ld + offset + h * head_stride;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * cos_v[i] - b * sin_v[i];
        v[2 * i + 1] = b * cos_v[i] + a * sin_v[i];
      }
    }
  }
}

}  // namespace moe::cpu
