#include "bench/expert_rtt.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "bench/bench_common.h"
#include "core/model_generator.h"
#include "core/rpc/channel_util.h"
#include "core/rpc/server_util.h"
#include "core/rpc/tensor_codec.h"
#include "expert_server/expert_server.h"
#include "grpcpp/server_builder.h"
#include "moe/bench/echo.grpc.pb.h"
#include "moe/v1/expert.grpc.pb.h"

namespace moe::bench {
namespace {

class EchoService final : public moe::bench::Echo::CallbackService {
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const EchoMessage* request,
                                 EchoMessage* response) override {
    response->set_payload(request->payload());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One call through the callback API, as the router makes it; returns when
// the reply has arrived.
template <typename Call>
grpc::Status CallAndWait(Call call) {
  absl::Notification done;
  grpc::Status result;
  call([&](grpc::Status status) {
    result = std::move(status);
    done.Notify();
  });
  done.WaitForNotification();
  return result;
}

}  // namespace

ExpertRttResult MeasureExpertRtt(const ExpertRttOptions& options) {
  GeneratorSpec spec;
  spec.config = SmallConfig(ModelFamily::kMixtral);
  spec.config.hidden_size = options.hidden;
  spec.config.num_layers = 1;
  spec.config.num_heads = 32;
  spec.config.num_kv_heads = 8;
  spec.config.head_dim = options.hidden / 32;
  spec.config.vocab_size = 64;
  spec.config.num_experts = 2;
  spec.config.num_experts_per_tok = 1;
  spec.config.expert_intermediate_size = options.intermediate;
  spec.dtype = DType::kBF16;
  spec.seed = 3;
  const std::string model_dir = options.work_dir + "/rtt-model";
  if (absl::Status s = GenerateModel(model_dir, spec); !s.ok()) {
    Die(absl::StrCat("generating the RTT model: ", s.ToString()));
  }

  ExpertServerOptions expert_options;
  expert_options.engine.model_dir = model_dir;
  expert_options.engine.experts = {{0, 0}};
  expert_options.engine.num_threads = 1;
  absl::StatusOr<std::unique_ptr<ExpertServer>> expert =
      ExpertServer::Start(expert_options);
  if (!expert.ok()) Die(absl::StrCat("expert server: ", expert.status().ToString()));

  EchoService echo_service;
  absl::StatusOr<StartedServer> echo_server =
      StartGrpcServer("echo", "127.0.0.1:0", {&echo_service});
  if (!echo_server.ok()) Die(echo_server.status().ToString());
  const int echo_port = echo_server->port;

  auto expert_stub = v1::ExpertService::NewStub(
      MakeChannel(absl::StrCat("127.0.0.1:", (*expert)->port())));
  auto echo_stub =
      Echo::NewStub(MakeChannel(absl::StrCat("127.0.0.1:", echo_port)));

  // A batch of hidden states from which the group's rows are gathered, as
  // the router gathers a group from the attention server's batch.
  const int64_t h = options.hidden;
  std::vector<float> batch(static_cast<size_t>(2 * options.tokens * h));
  std::mt19937 rng(7);
  std::normal_distribution<float> dist;
  for (float& v : batch) v = dist(rng);

  ExpertRttResult result;
  std::vector<double> expert_us, echo_us, compute_us;
  for (int it = -20; it < options.iterations; ++it) {  // 20 warm-up calls
    const Clock::time_point start = Clock::now();
    v1::RunExpertsRequest request;
    v1::ExpertGroup* group = request.add_groups();
    group->set_layer(0);
    group->set_expert(0);
    v1::Tensor* t = group->mutable_hidden();
    t->set_dtype(v1::DTYPE_F32);
    t->add_shape(options.tokens);
    t->add_shape(h);
    std::string* data = t->mutable_data();
    data->resize(static_cast<size_t>(options.tokens * h) * sizeof(float));
    float* dst = reinterpret_cast<float*>(data->data());
    for (int r = 0; r < options.tokens; ++r) {  // every other row
      std::memcpy(dst + r * h, batch.data() + 2 * r * h, h * sizeof(float));
    }
    v1::RunExpertsResponse response;
    grpc::ClientContext context;
    const grpc::Status status = CallAndWait([&](auto done) {
      expert_stub->async()->RunExperts(&context, &request, &response, done);
    });
    if (!status.ok()) Die(absl::StrCat("RunExperts: ", status.error_message()));
    absl::StatusOr<F32Rows> rows = DecodeF32Rows(response.outputs(0), h, "out");
    if (!rows.ok() || rows->rows != options.tokens) {
      Die("RunExperts returned a malformed output");
    }
    const double expert_seconds = SecondsSince(start);
    result.request_bytes = static_cast<int64_t>(request.ByteSizeLong());

    const Clock::time_point echo_start = Clock::now();
    EchoMessage ping;
    ping.mutable_payload()->resize(request.ByteSizeLong());
    std::memcpy(ping.mutable_payload()->data(), dst,
                std::min(ping.payload().size(), data->size()));
    EchoMessage pong;
    grpc::ClientContext echo_context;
    const grpc::Status echo_status = CallAndWait([&](auto done) {
      echo_stub->async()->Echo(&echo_context, &ping, &pong, done);
    });
    if (!echo_status.ok()) Die(absl::StrCat("Echo: ", echo_status.error_message()));
    const double echo_seconds = SecondsSince(echo_start);
    if (it < 0) continue;
    expert_us.push_back(expert_seconds * 1e6);
    echo_us.push_back(echo_seconds * 1e6);
    compute_us.push_back(response.compute_seconds() * 1e6);
  }
  result.expert_median_us = Median(expert_us);
  result.echo_median_us = Median(echo_us);
  result.compute_median_us = Median(compute_us);
  echo_server->server->Shutdown();
  return result;
}

}  // namespace moe::bench
