#include "core/forward_pass.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace moe {

absl::Status AppendChunksToCache(const ModelConfig& config, KvCache& cache,
                                 absl::Span<const SequenceChunk> chunks,
                                 std::vector<BatchSegment>* segments,
                                 std::vector<int32_t>* positions) {
  // Validate everything before touching the cache.
  int64_t total = 0;
  int blocks_needed = 0;
  for (const SequenceChunk& chunk : chunks) {
    if (!cache.HasSequence(chunk.seq)) {
      return absl::NotFoundError(
          absl::StrCat("sequence ", chunk.seq, " has no KV state"));
    }
    if (chunk.tokens.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", chunk.seq, ": empty chunk"));
    }
    for (int32_t id : chunk.tokens) {
      if (id < 0 || id >= config.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " is outside the vocabulary [0, ",
                         config.vocab_size, ")"));
      }
    }
    const int64_t have = cache.NumTokens(chunk.seq);
    if (have + static_cast<int64_t>(chunk.tokens.size()) >
        config.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence ", chunk.seq, " would reach ", have + chunk.tokens.size(),
          " tokens, over max_position_embeddings ",
          config.max_position_embeddings));
    }
    blocks_needed += cache.BlocksFor(have + chunk.tokens.size()) -
                     static_cast<int>(cache.BlockTable(chunk.seq).size());
    total += chunk.tokens.size();
  }
  if (blocks_needed > cache.num_free_blocks()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache full: this step needs ", blocks_needed,
                     " blocks, ", cache.num_free_blocks(), " free"));
  }

  segments->clear();
  positions->resize(total);
  int64_t row = 0;
  for (const SequenceChunk& chunk : chunks) {
    const int first_pos = cache.NumTokens(chunk.seq);
    RETURN_IF_ERROR(cache.Append(chunk.seq, chunk.tokens.size()));
    segments->push_back({row, static_cast<int64_t>(chunk.tokens.size()),
                         first_pos, cache.BlockTable(chunk.seq),
                         chunk.want_logits});
    for (size_t t = 0; t < chunk.tokens.size(); ++t) {
      (*positions)[row + t] = first_pos + static_cast<int>(t);
    }
    row += chunk.tokens.size();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> ForwardPass::Forward(
    absl::Span<const SequenceChunk> chunks,
    const std::function<void(int layer)>& after_layer_kv) {
  RETURN_IF_ERROR(Begin(chunks));
  for (int l = 0; l < num_layers(); ++l) {
    absl::Status status = AttentionLayer(l);
    if (status.ok() && after_layer_kv) after_layer_kv(l);
    if (status.ok()) status = StartFfn(l);
    if (status.ok()) status = FinishFfn(l);
    if (!status.ok()) {
      Abandon();
      return status;
    }
  }
  return End();
}

void ForwardPass::RecordFailedTokens(const MoeTokenFailures& failed,
                                     absl::Span<const BatchSegment> segments) {
  for (int64_t row : failed.tokens) {
    // The segment holding `row`: the last one starting at or before it.
    auto it = std::upper_bound(
        segments.begin(), segments.end(), row,
        [](int64_t r, const BatchSegment& s) { return r < s.first_row; });
    if (it == segments.begin()) continue;
    const size_t chunk = static_cast<size_t>(it - segments.begin()) - 1;
    auto pos = std::lower_bound(
        failed_chunks_.begin(), failed_chunks_.end(), chunk,
        [](const FailedChunk& f, size_t c) { return f.chunk < c; });
    if (pos != failed_chunks_.end() && pos->chunk == chunk) continue;
    failed_chunks_.insert(pos, {chunk, failed.status});
  }
}

}  // namespace moe
