// What the router -> expert hop costs before and after the wire: the tensor
// codec (core/rpc/tensor_codec.h) and protobuf (de)serialisation of a
// RunExpertsRequest holding 16 tokens of hidden 4096 (256 KiB of F32).
#include <cstdint>
#include <string>
#include <vector>

#include "bench/micro/micro_util.h"
#include "benchmark/benchmark.h"
#include "core/rpc/tensor_codec.h"
#include "moe/v1/expert.pb.h"
#include "moe/v1/tensor.pb.h"

namespace moe::microbench {
namespace {

constexpr int64_t kHidden = 4096;

// F32 rows -> v1::Tensor (one copy of the rows), `tokens` x 4096.
void BM_EncodeF32(benchmark::State& state) {
  const int64_t tokens = state.range(0);
  const std::vector<float> x = RandomFloats(tokens * kHidden, /*seed=*/51);
  v1::Tensor tensor;
  for (auto _ : state) {
    EncodeF32(x.data(), tokens, kHidden, &tensor);
    benchmark::DoNotOptimize(tensor.data().data());
  }
  state.SetBytesProcessed(state.iterations() * tokens * kHidden *
                          int64_t{sizeof(float)});
}
BENCHMARK(BM_EncodeF32)->ArgName("tokens")->Arg(1)->Arg(16)->Arg(128);

// v1::Tensor -> checked F32 rows: a view of the message's (aligned) bytes,
// so this is the cost of the checks alone, whatever the tensor's size.
void BM_DecodeF32Rows(benchmark::State& state) {
  const int64_t tokens = state.range(0);
  const std::vector<float> x = RandomFloats(tokens * kHidden, /*seed=*/52);
  v1::Tensor tensor;
  EncodeF32(x.data(), tokens, kHidden, &tensor);
  for (auto _ : state) {
    absl::StatusOr<F32Rows> rows = DecodeF32Rows(tensor, kHidden, "hidden");
    if (!rows.ok()) {
      state.SkipWithError(rows.status().ToString().c_str());
      return;
    }
    benchmark::DoNotOptimize(rows->data);
  }
}
BENCHMARK(BM_DecodeF32Rows)->ArgName("tokens")->Arg(16);

// A request of `groups` (layer 0, expert g) of `tokens_per_group` rows each,
// encoded as the attention and router side encode hidden states.
v1::RunExpertsRequest MakeRequest(int groups, int64_t tokens_per_group) {
  const std::vector<float> x =
      RandomFloats(groups * tokens_per_group * kHidden, /*seed=*/53);
  v1::RunExpertsRequest request;
  request.set_call_id(1);
  for (int g = 0; g < groups; ++g) {
    v1::ExpertGroup* group = request.add_groups();
    group->set_layer(0);
    group->set_expert(g);
    EncodeF32(x.data() + g * tokens_per_group * kHidden, tokens_per_group,
              kHidden, group->mutable_hidden());
  }
  return request;
}

// Args: groups, tokens per group. {1, 16} is one expert's 16 tokens; {8, 2}
// the same 16 rows spread over 8 experts (more, smaller tensors).
void BM_RunExpertsRequestSerialize(benchmark::State& state) {
  const v1::RunExpertsRequest request =
      MakeRequest(static_cast<int>(state.range(0)), state.range(1));
  std::string wire;
  for (auto _ : state) {
    if (!request.SerializeToString(&wire)) {
      state.SkipWithError("SerializeToString failed");
      return;
    }
    benchmark::DoNotOptimize(wire.data());
  }
  state.SetBytesProcessed(state.iterations() *
                          static_cast<int64_t>(request.ByteSizeLong()));
}
BENCHMARK(BM_RunExpertsRequestSerialize)
    ->ArgNames({"groups", "tokens"})
    ->Args({1, 16})
    ->Args({8, 2});

void BM_RunExpertsRequestParse(benchmark::State& state) {
  const std::string wire =
      MakeRequest(static_cast<int>(state.range(0)), state.range(1))
          .SerializeAsString();
  v1::RunExpertsRequest parsed;
  for (auto _ : state) {
    if (!parsed.ParseFromString(wire)) {
      state.SkipWithError("ParseFromString failed");
      return;
    }
    benchmark::DoNotOptimize(parsed.groups(0).hidden().data().data());
  }
  state.SetBytesProcessed(state.iterations() *
                          static_cast<int64_t>(wire.size()));
}
BENCHMARK(BM_RunExpertsRequestParse)
    ->ArgNames({"groups", "tokens"})
    ->Args({1, 16})
    ->Args({8, 2});

}  // namespace
}  // namespace moe::microbench
