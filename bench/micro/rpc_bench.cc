// One router -> expert call over loopback gRPC, made the router's way: the
// rows encoded into a RunExpertsRequest, sent over an ExpertConnection
// stream to a real ExpertServer in this process, the output decoded. The
// expert's FFN is narrow (width 64) so that the time is the transport and
// the server's dispatch; the FFN time the server reports is a counter.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "bench/micro/micro_util.h"
#include "benchmark/benchmark.h"
#include "core/model_generator.h"
#include "core/rpc/tensor_codec.h"
#include "expert_server/expert_server.h"
#include "router/expert_connection.h"

namespace moe::microbench {
namespace {

constexpr int kHidden = 4096;
constexpr int kExpertWidth = 64;

// A server hosting expert (0, 0) of a generated one-layer model, and the
// router's connection to it. Members are destroyed bottom-up: the
// connection's stream ends before the server shuts down.
struct ExpertFixture {
  std::unique_ptr<ExpertServer> server;
  std::unique_ptr<ExpertConnection> connection;
};

absl::StatusOr<std::unique_ptr<ExpertFixture>> StartExpert() {
  if (ScratchDir().empty()) {
    return absl::InternalError("no scratch directory for the model");
  }
  // Only the expert matters; attention and vocabulary are as small as the
  // format allows, so the model (~2 MB) is written in milliseconds.
  GeneratorSpec spec;
  spec.config = SmallConfig(ModelFamily::kMixtral);
  spec.config.hidden_size = kHidden;
  spec.config.num_layers = 1;
  spec.config.num_heads = 1;
  spec.config.num_kv_heads = 1;
  spec.config.head_dim = 64;
  spec.config.vocab_size = 64;
  spec.config.num_experts = 2;
  spec.config.num_experts_per_tok = 1;
  spec.config.expert_intermediate_size = kExpertWidth;
  spec.dtype = DType::kBF16;
  spec.seed = 61;
  const std::string dir = ScratchDir() + "/rpc-model";
  if (absl::Status s = GenerateModel(dir, spec); !s.ok()) return s;

  ExpertServerOptions options;
  options.engine.model_dir = dir;
  options.engine.experts = {{0, 0}};
  options.engine.num_threads = 1;
  auto fixture = std::make_unique<ExpertFixture>();
  absl::StatusOr<std::unique_ptr<ExpertServer>> server =
      ExpertServer::Start(options);
  if (!server.ok()) return server.status();
  fixture->server = std::move(*server);
  fixture->connection = std::make_unique<ExpertConnection>(
      absl::StrCat("127.0.0.1:", fixture->server->port()));
  return fixture;
}

// Arg: tokens in the call's one group.
void BM_ExpertRoundTrip(benchmark::State& state) {
  absl::StatusOr<ExpertFixture*> fixture =
      SharedFixture<ExpertFixture>(StartExpert);
  if (!fixture.ok()) {
    state.SkipWithError(fixture.status().ToString().c_str());
    return;
  }
  const int64_t tokens = state.range(0);
  const std::vector<float> x = RandomFloats(tokens * kHidden, /*seed=*/62);
  double compute_seconds = 0;
  int64_t wire_bytes = 0;
  for (auto _ : state) {
    auto request = std::make_unique<v1::RunExpertsRequest>();
    v1::ExpertGroup* group = request->add_groups();
    group->set_layer(0);
    group->set_expert(0);
    EncodeF32(x.data(), tokens, kHidden, group->mutable_hidden());
    const int64_t request_bytes = static_cast<int64_t>(request->ByteSizeLong());
    absl::Notification done;
    absl::StatusOr<std::unique_ptr<v1::RunExpertsResponse>> answer;
    (*fixture)->connection->Call(
        std::move(request),
        std::chrono::system_clock::now() + std::chrono::seconds(10),
        [&](absl::StatusOr<std::unique_ptr<v1::RunExpertsResponse>> a) {
          answer = std::move(a);
          done.Notify();
        });
    done.WaitForNotification();
    if (!answer.ok()) {
      state.SkipWithError(answer.status().ToString().c_str());
      return;
    }
    absl::StatusOr<F32Rows> rows =
        DecodeF32Rows((*answer)->outputs(0), kHidden, "outputs[0]");
    if (!rows.ok() || rows->rows != tokens) {
      state.SkipWithError("the expert server returned a malformed output");
      return;
    }
    benchmark::DoNotOptimize(rows->data);
    compute_seconds += (*answer)->compute_seconds();
    wire_bytes +=
        request_bytes + static_cast<int64_t>((*answer)->ByteSizeLong());
  }
  state.SetBytesProcessed(wire_bytes);  // request and response
  state.counters["server_compute_us"] = benchmark::Counter(
      compute_seconds * 1e6, benchmark::Counter::kAvgIterations);
}
BENCHMARK(BM_ExpertRoundTrip)
    ->ArgName("tokens")
    ->Arg(1)
    ->Arg(16)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace moe::microbench
