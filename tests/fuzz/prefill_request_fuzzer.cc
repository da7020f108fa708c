// The attention server's Prefill validation (DecodePrefillRequest: the
// Generate request, the decode server's address and its K/V reservation
// layout) on arbitrary moe.v1.PrefillRequest messages, for a small Mixtral
// model with 16-token KV blocks. The Generate RPC of the attention server
// shares DecodeGenerateRequest, fuzzed by generate_request_fuzzer.
#include <cstddef>
#include <cstdint>

#include "attention_server/attention_service.h"
#include "core/model_generator.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const moe::ModelConfig config =
      moe::SmallConfig(moe::ModelFamily::kMixtral);
  static const moe::KvCacheShape shape = moe::KvCacheShape::ForModel(config, 16);
  auto request = moe::fuzz::ParseProto<moe::v1::PrefillRequest>(data, size);
  if (!request) return 0;
  absl::StatusOr<moe::DecodedPrefillRequest> decoded =
      moe::DecodePrefillRequest(*request, config, shape);
  if (!decoded.ok()) return 0;
  const moe::KvReservation& r = decoded->reservation;
  const int64_t prompt = decoded->request.generation.prompt.size();
  moe::fuzz::Check(!decoded->address.empty(), "accepted an empty address");
  moe::fuzz::Check(r.block_size == shape.block_size &&
                       r.num_layers == shape.num_layers &&
                       int64_t{r.num_blocks} * r.block_size >= prompt &&
                       int64_t{r.num_blocks - 1} * r.block_size < prompt,
                   "accepted a reservation that does not fit the prompt");
  return 0;
}
