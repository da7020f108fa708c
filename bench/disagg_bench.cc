#include "bench/disagg_bench.h"

#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_cluster.h"
#include "bench/bench_common.h"
#include "core/rpc/channel_util.h"
#include "moe/v1/attention.grpc.pb.h"

namespace moe::bench {
namespace {

std::vector<int32_t> Prompt(std::mt19937& rng, int length, int vocab) {
  return RandomPrompt(rng, length, vocab);
}

v1::GenerateRequest Request(const std::vector<int32_t>& prompt, int max_tokens,
                            const std::string& id) {
  v1::GenerateRequest request;
  request.set_request_id(id);
  for (int32_t t : prompt) request.add_prompt_ids(t);
  request.set_max_tokens(max_tokens);
  request.set_ignore_eos(true);
  request.mutable_sampling()->set_seed(1);
  return request;
}

struct DirectRun {
  v1::PrefillResult prefill;
  double ttft_seconds = 0;
};

// What the gateway does for one disaggregated request, by hand: reserve on
// the decode server, prefill into the reservation, read the decode stream.
DirectRun RunDisaggregated(v1::AttentionService::Stub& prefill,
                           v1::AttentionService::Stub& decode,
                           const std::string& decode_address,
                           const v1::GenerateRequest& request) {
  DirectRun run;
  grpc::ClientContext decode_context;
  v1::AttentionGenerateRequest generate;
  *generate.mutable_request() = request;
  generate.set_await_transfer(true);
  const Clock::time_point start = Clock::now();
  auto reader = decode.Generate(&decode_context, generate);
  v1::AttentionGenerateResponse response;
  if (!reader->Read(&response) || !response.has_reservation()) {
    Die(absl::StrCat("the decode server did not reserve: ",
                     reader->Finish().error_message()));
  }
  v1::PrefillRequest prefill_request;
  *prefill_request.mutable_request() = request;
  prefill_request.mutable_destination()->set_address(decode_address);
  *prefill_request.mutable_destination()->mutable_reservation() =
      response.reservation();
  grpc::Status prefill_status;
  std::thread prefill_call([&] {
    grpc::ClientContext context;
    prefill_status =
        prefill.Prefill(&context, prefill_request, &run.prefill);
  });
  bool first = true;
  while (reader->Read(&response)) {
    if (first && response.response().token_ids_size() > 0) {
      run.ttft_seconds = SecondsSince(start);
      first = false;
    }
  }
  const grpc::Status status = reader->Finish();
  prefill_call.join();
  if (!prefill_status.ok()) {
    Die(absl::StrCat("prefill failed: ", prefill_status.error_message()));
  }
  if (!status.ok()) Die(absl::StrCat("decode failed: ", status.error_message()));
  return run;
}

}  // namespace

KvTransferResult MeasureKvTransfer(const std::string& prefill_address,
                                   const std::string& decode_address,
                                   int vocab, int prompt_tokens, int repeats) {
  auto prefill = v1::AttentionService::NewStub(MakeChannel(prefill_address));
  auto decode = v1::AttentionService::NewStub(MakeChannel(decode_address));
  std::mt19937 rng(4096);
  std::vector<double> gbps, transfer, ttft, tail, overlapped, share;
  KvTransferResult result;
  for (int r = -1; r < repeats; ++r) {  // run -1 warms up
    const std::vector<int32_t> prompt = Prompt(rng, prompt_tokens, vocab);
    // Uncached: the transfer overlaps the prefill; what is left after it
    // ends is what the first token waits for.
    const DirectRun cold = RunDisaggregated(
        *prefill, *decode, decode_address,
        Request(prompt, 2, absl::StrCat("kv-cold-", r)));
    // Cached: the prefill computes one block and ships everything at once.
    const DirectRun warm = RunDisaggregated(
        *prefill, *decode, decode_address,
        Request(prompt, 2, absl::StrCat("kv-warm-", r)));
    if (r < 0) continue;
    result.bytes = cold.prefill.transfer_bytes();
    const double pure = cold.prefill.transfer_busy_seconds();
    Note(absl::StrFormat(
        "K/V transfer, %d tokens: run %d/%d: %.1f MB; uncached: TTFT %.3f s, "
        "prefill %.3f s, transfer %.3f s (%.3f s after the prefill, %.3f s "
        "moving bytes = %.2f GB/s); cached prompt: TTFT %.3f s, transfer "
        "%.3f s (%.3f s moving bytes = %.2f GB/s)",
        prompt_tokens, r + 1, repeats, cold.prefill.transfer_bytes() / 1e6,
        cold.ttft_seconds, cold.prefill.prefill_seconds(),
        cold.prefill.transfer_seconds(), cold.prefill.transfer_tail_seconds(),
        pure, pure > 0 ? cold.prefill.transfer_bytes() / pure / 1e9 : 0,
        warm.ttft_seconds, warm.prefill.transfer_seconds(),
        warm.prefill.transfer_busy_seconds(),
        warm.prefill.transfer_busy_seconds() > 0
            ? warm.prefill.transfer_bytes() /
                  warm.prefill.transfer_busy_seconds() / 1e9
            : 0));
    gbps.push_back(pure > 0 ? cold.prefill.transfer_bytes() / pure / 1e9 : 0);
    transfer.push_back(pure);
    ttft.push_back(cold.ttft_seconds);
    tail.push_back(cold.prefill.transfer_tail_seconds());
    overlapped.push_back(cold.prefill.transfer_seconds() -
                         cold.prefill.transfer_tail_seconds());
    share.push_back(cold.ttft_seconds > 0
                        ? cold.prefill.transfer_tail_seconds() / cold.ttft_seconds
                        : 0);
  }
  result.gbps = Median(gbps);
  result.transfer_seconds = Median(transfer);
  result.ttft_seconds = Median(ttft);
  result.tail_seconds = Median(tail);
  result.overlapped_seconds = Median(overlapped);
  result.ttft_share = Median(share);
  return result;
}

PrefixHitResult MeasurePrefixHit(v1::Inference::Stub& gateway, int vocab,
                                 int prompt_tokens, double cached_fraction,
                                 int repeats) {
  std::mt19937 rng(2048);
  const int shared = static_cast<int>(prompt_tokens * cached_fraction);
  std::vector<double> uncached, cached, ratios;
  PrefixHitResult result;
  for (int r = -1; r < repeats; ++r) {  // run -1 warms up
    // Uncached: a prompt nobody sent before.
    GenerationRequest fresh;
    fresh.prompt = Prompt(rng, prompt_tokens, vocab);
    fresh.max_tokens = 2;
    const StreamTimes miss = RunStream(gateway, fresh);
    // Another prompt shares the first `shared` tokens, then ours comes.
    const std::vector<int32_t> base = Prompt(rng, prompt_tokens, vocab);
    GenerationRequest warm;
    warm.prompt = base;
    for (int i = shared; i < prompt_tokens; ++i) warm.prompt[i] = 3 + (i % 97);
    warm.max_tokens = 2;
    RunStream(gateway, warm);
    GenerationRequest hit_request;
    hit_request.prompt = base;
    hit_request.max_tokens = 2;
    const StreamTimes hit = RunStream(gateway, hit_request);
    if (!miss.status.ok() || !hit.status.ok()) {
      Die(absl::StrCat("prefix-hit stream failed: ", miss.status.error_message(),
                       hit.status.error_message()));
    }
    if (r < 0) continue;
    Note(absl::StrFormat(
        "prefix hit, %d tokens: run %d/%d: uncached TTFT %.3f s, %d cached "
        "tokens: TTFT %.3f s (%.3f)",
        prompt_tokens, r + 1, repeats, miss.ttft(), hit.usage.cached_tokens(),
        hit.ttft(), hit.ttft() / miss.ttft()));
    uncached.push_back(miss.ttft());
    cached.push_back(hit.ttft());
    ratios.push_back(hit.ttft() / miss.ttft());
    result.cached_tokens = hit.usage.cached_tokens();
  }
  result.uncached_ttft_seconds = Median(uncached);
  result.cached_ttft_seconds = Median(cached);
  result.ratio = Median(ratios);
  return result;
}

}  // namespace moe::bench
