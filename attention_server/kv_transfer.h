// What moves between a prefill server and a decode server for one request:
// the K/V blocks of the prompt, layer by layer while the prefill runs, and a
// summary once the first token is sampled. The engines see only these
// types; the gRPC adapters carry them (AttentionService.TransferKv).
#ifndef MOE_ATTENTION_SERVER_KV_TRANSFER_H_
#define MOE_ATTENTION_SERVER_KV_TRANSFER_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "core/logprobs.h"
#include "core/sequence_state.h"

namespace moe {

// The end of a prefill, as the decode server needs it.
struct KvTransferSummary {
  int num_tokens = 0;                 // prompt tokens whose K/V was sent
  std::vector<int32_t> tokens;        // sampled on the prefill server
  std::optional<TokenLogprobs> logprobs;  // of the first token, if asked
  int cached_tokens = 0;              // prompt tokens from its prefix cache
  double queue_seconds = 0;           // on the prefill server
  double prefill_seconds = 0;
};

// The outgoing side, implemented by the prefill server's gRPC adapter. The
// engine calls it on its executor thread; every call copies what it needs,
// so the engine may reuse or free the blocks as soon as it returns.
class KvTransferSink {
 public:
  virtual ~KvTransferSink() = default;
  // K/V of layer `layer` for the prompt's blocks first_block,
  // first_block + 1, ...: blocks[i] points at block_bytes contiguous bytes
  // (KvCache::BlockData). A block may be sent again, fuller, by a later
  // call (a prefill chunk can end inside a block).
  virtual void SendBlocks(int layer, int first_block,
                          absl::Span<const float* const> blocks,
                          int64_t block_bytes) = 0;
  // Every block has been sent; the decode server may start.
  virtual void Finish(const KvTransferSummary& summary) = 0;
  // The prefill failed or was cancelled; nothing more will be sent.
  virtual void Abort(const absl::Status& status) = 0;
};

// What a decode server reserved for a request whose prefill runs elsewhere.
struct KvReservation {
  uint64_t id = 0;        // the sequence id on the decode server
  int num_blocks = 0;     // blocks the prompt's K/V fills
  int block_size = 0;     // tokens per block
  int num_layers = 0;
  int64_t block_bytes = 0;  // bytes of one block of one layer
};

}  // namespace moe

#endif  // MOE_ATTENTION_SERVER_KV_TRANSFER_H_
