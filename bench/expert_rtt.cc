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
#include "core/rpc/call_stream_reactor.h"
#include "core/rpc/channel_util.h"
#include "core/rpc/server_util.h"
#include "core/rpc/tensor_codec.h"
#include "expert_server/expert_server.h"
#include "moe/bench/echo.grpc.pb.h"
#include "router/expert_connection.h"

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

  grpc::ServerBidiReactor<EchoMessage, EchoMessage>* EchoStream(
      grpc::CallbackServerContext* context) override {
    using Reactor = CallStreamReactor<EchoMessage, EchoMessage>;
    return Reactor::Start(
        [](std::unique_ptr<EchoMessage> message, Reactor::Reply reply) {
          reply(std::move(message));
        });
  }
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A small model with one layer of two experts of hidden `options.hidden`.
std::string GenerateRttModel(const ExpertRttOptions& options) {
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
  const std::string dir = options.work_dir + "/rtt-model";
  if (absl::Status s = GenerateModel(dir, spec); !s.ok()) {
    Die(absl::StrCat("generating the RTT model: ", s.ToString()));
  }
  return dir;
}

}  // namespace

ExpertRttResult MeasureExpertRtt(const ExpertRttOptions& options) {
  ExpertServerOptions expert_options;
  expert_options.engine.model_dir = GenerateRttModel(options);
  expert_options.engine.experts = {{0, 0}};
  expert_options.engine.num_threads = 1;
  absl::StatusOr<std::unique_ptr<ExpertServer>> expert =
      ExpertServer::Start(expert_options);
  if (!expert.ok()) Die(absl::StrCat("expert server: ", expert.status().ToString()));
  EchoService echo_service;
  absl::StatusOr<StartedServer> echo_server =
      StartGrpcServer("echo", "127.0.0.1:0", {&echo_service});
  if (!echo_server.ok()) Die(echo_server.status().ToString());

  const std::string expert_address =
      absl::StrCat("127.0.0.1:", (*expert)->port());
  // The router's connection as it runs by default: shared memory with a
  // server on this host. And one kept on the ExpertStream, the way calls to
  // another host travel.
  ShmLinkOptions shared_memory;
  shared_memory.enabled = true;
  ExpertConnection connection(expert_address, shared_memory);
  if (absl::Status attached = connection.WaitForSharedMemory(absl::Seconds(30));
      !attached.ok()) {
    Die(absl::StrCat("shared memory to the expert server: ",
                     attached.ToString()));
  }
  ExpertConnection stream_connection(expert_address);
  auto echo_stub = Echo::NewStub(
      MakeChannel(absl::StrCat("127.0.0.1:", echo_server->port)));
  grpc::ClientContext echo_stream_context;
  auto echo_stream = echo_stub->EchoStream(&echo_stream_context);

  // A batch of hidden states from which the group's rows are gathered, as
  // the router gathers a group from the attention server's batch.
  const int64_t h = options.hidden;
  std::vector<float> batch(static_cast<size_t>(2 * options.tokens * h));
  std::mt19937 rng(7);
  std::normal_distribution<float> dist;
  for (float& v : batch) v = dist(rng);

  ExpertRttResult result;
  std::string bytes;  // the tensor bytes of the last call, for the echoes
  // One call the router's way: gather, send over `via`, decode. Returns the
  // round trip and the server-reported FFN time, in seconds.
  auto router_call = [&](ExpertConnection& via) -> std::pair<double, double> {
    const Clock::time_point start = Clock::now();
    auto request = std::make_unique<v1::RunExpertsRequest>();
    v1::ExpertGroup* group = request->add_groups();
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
    result.request_bytes = static_cast<int64_t>(request->ByteSizeLong());
    absl::Notification done;
    absl::StatusOr<std::unique_ptr<v1::RunExpertsResponse>> answer;
    via.Call(std::move(request),
             std::chrono::system_clock::now() + std::chrono::seconds(10),
             [&](absl::StatusOr<std::unique_ptr<v1::RunExpertsResponse>> a) {
               answer = std::move(a);
               done.Notify();
             });
    done.WaitForNotification();
    if (!answer.ok()) Die(absl::StrCat("expert call: ", answer.status().ToString()));
    absl::StatusOr<F32Rows> rows = DecodeF32Rows((*answer)->outputs(0), h, "out");
    if (!rows.ok() || rows->rows != options.tokens) {
      Die("the expert server returned a malformed output");
    }
    return {SecondsSince(start), (*answer)->compute_seconds()};
  };
  bytes.assign(static_cast<size_t>(options.tokens * h) * sizeof(float), '\0');
  for (int r = 0; r < options.tokens; ++r) {
    std::memcpy(bytes.data() + r * h * sizeof(float), batch.data() + 2 * r * h,
                h * sizeof(float));
  }

  std::vector<double> expert_us, compute_us, transport_us, stream_us, unary_us;
  std::vector<double> expert_stream_us, stream_transport_us;
  for (int it = -20; it < options.iterations; ++it) {  // 20 warm-up calls
    const auto [expert_seconds, compute_seconds] = router_call(connection);
    const auto [over_stream_seconds, over_stream_compute] =
        router_call(stream_connection);

    // Each echo, like the expert call, starts by putting the bytes in its
    // message.
    const Clock::time_point stream_start = Clock::now();
    EchoMessage ping;
    ping.set_payload(bytes);
    EchoMessage pong;
    if (!echo_stream->Write(ping) || !echo_stream->Read(&pong)) {
      Die("the echo stream broke");
    }
    const double stream_seconds = SecondsSince(stream_start);

    const Clock::time_point unary_start = Clock::now();
    ping.set_payload(bytes);
    grpc::ClientContext unary_context;
    const grpc::Status status = echo_stub->Echo(&unary_context, ping, &pong);
    if (!status.ok()) Die(absl::StrCat("Echo: ", status.error_message()));
    const double unary_seconds = SecondsSince(unary_start);
    if (it < 0) continue;
    expert_us.push_back(expert_seconds * 1e6);
    compute_us.push_back(compute_seconds * 1e6);
    transport_us.push_back((expert_seconds - compute_seconds) * 1e6);
    expert_stream_us.push_back(over_stream_seconds * 1e6);
    stream_transport_us.push_back((over_stream_seconds - over_stream_compute) * 1e6);
    stream_us.push_back(stream_seconds * 1e6);
    unary_us.push_back(unary_seconds * 1e6);
  }
  if (connection.stream_calls() != 0) {
    Die(absl::StrCat(connection.stream_calls(),
                     " shared-memory calls fell back to the stream"));
  }
  echo_stream->WritesDone();
  echo_stream->Finish();
  result.expert_median_us = Median(expert_us);
  result.compute_median_us = Median(compute_us);
  result.transport_median_us = Median(transport_us);
  result.expert_stream_median_us = Median(expert_stream_us);
  result.stream_transport_median_us = Median(stream_transport_us);
  result.echo_stream_median_us = Median(stream_us);
  result.echo_unary_median_us = Median(unary_us);
  echo_server->server->Shutdown();
  return result;
}

}  // namespace moe::bench
