#include "attention_server/direct_moe_executor.h"

#include <unistd.h>

#include <chrono>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "attention_server/moe_response.h"
#include "core/rpc/channel_util.h"
#include "core/rpc/tensor_codec.h"
#include "core/status_macros.h"
#include "moe/v1/router.grpc.pb.h"
#include "router/dispatch_config.h"

namespace moe {
namespace {

// This process as a follower of the router's placement.
std::string FollowerName() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return absl::StrCat("attention_server@", host, ":", getpid());
}

absl::StatusOr<v1::DispatchConfig> FetchDispatchConfig(
    const DirectMoeOptions& options, const std::string& follower) {
  absl::Status serving = WaitForServing(options.router_address,
                                        options.connect_timeout_seconds);
  if (!serving.ok()) {
    return absl::UnavailableError(
        absl::StrCat("router ", options.router_address, ": ",
                     serving.message()));
  }
  auto stub = v1::RouterService::NewStub(MakeChannel(options.router_address));
  grpc::ClientContext context;
  context.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(
          static_cast<int64_t>(options.connect_timeout_seconds * 1000)));
  v1::DispatchConfig config;
  v1::GetDispatchConfigRequest request;
  request.set_follower(follower);
  const grpc::Status status =
      stub->GetDispatchConfig(&context, request, &config);
  if (!status.ok()) {
    return absl::UnavailableError(
        absl::StrCat("router ", options.router_address,
                     ": GetDispatchConfig failed: ", status.error_message()));
  }
  return config;
}

}  // namespace

// One MoE step in flight. Shared with the dispatcher's callback, which may
// run on a gRPC thread after StartMoe returned.
struct DirectMoeExecutor::Call {
  int layer = 0;
  int64_t tokens = 0;
  float* out = nullptr;
  v1::RunMoeRequest request;
  v1::RunMoeResponse response;
  absl::Status status;  // written before `done` is notified
  absl::Notification done;
};

absl::StatusOr<std::unique_ptr<DirectMoeExecutor>> DirectMoeExecutor::Create(
    const DirectMoeOptions& options, prometheus::Registry& registry) {
  const std::string follower = FollowerName();
  ASSIGN_OR_RETURN(const v1::DispatchConfig wire,
                   FetchDispatchConfig(options, follower));
  absl::StatusOr<DispatchConfig> config = ReadDispatchConfig(wire);
  if (!config.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("router ", options.router_address,
                     ": dispatch config: ", config.status().message()));
  }
  std::unique_ptr<DirectMoeExecutor> executor(new DirectMoeExecutor());
  executor->options_ = options;
  RouterEngineOptions engine_options;
  engine_options.model_dir = options.model_dir;
  engine_options.capacity = config->capacity;
  engine_options.num_threads = 1;
  ASSIGN_OR_RETURN(executor->engine_,
                   RouterEngine::Load(engine_options, config->placement));
  executor->hidden_size_ = executor->engine_->config().hidden_size;
  executor->metrics_ = std::make_unique<RouterMetrics>(
      registry, executor->engine_->config(), *executor->engine_->placement(),
      config->expert_servers, /*per_expert=*/true);
  std::vector<std::unique_ptr<ExpertConnection>> connections;
  for (const std::string& address : config->expert_servers) {
    connections.push_back(
        std::make_unique<ExpertConnection>(address, options.shared_memory));
  }
  AttachSharedMemoryAtStart(connections, "attention_server",
                            absl::Seconds(options.connect_timeout_seconds));
  executor->dispatcher_ = std::make_unique<MoeDispatcher>(
      executor->engine_.get(), std::move(connections),
      config->fanout_timeout_seconds, config->health_probe_seconds,
      executor->metrics_.get());
  executor->follower_ = std::make_unique<PlacementFollower>(
      options.router_address, follower, config->placement_version,
      executor->engine_.get(), executor->metrics_.get());
  return executor;
}

DirectMoeExecutor::~DirectMoeExecutor() {
  for (auto& [id, call] : calls_) call->done.WaitForNotification();
}

absl::StatusOr<uint64_t> DirectMoeExecutor::StartMoe(int layer, const float* x,
                                                     int64_t tokens,
                                                     float* out) {
  auto call = std::make_shared<Call>();
  call->layer = layer;
  call->tokens = tokens;
  call->out = out;
  call->request.set_layer(layer);
  EncodeRows(x, tokens, hidden_size_, options_.wire_dtype,
             call->request.mutable_hidden());
  const uint64_t id = next_call_id_++;
  calls_.emplace(id, call);
  const auto deadline =
      std::chrono::system_clock::now() +
      std::chrono::microseconds(
          static_cast<int64_t>(options_.call_timeout_seconds * 1e6));
  dispatcher_->Dispatch(call->request, deadline, &call->response,
                        [call](absl::Status status) {
                          call->status = std::move(status);
                          call->done.Notify();
                        });
  return id;
}

namespace {
// How long one HelpReceive may wait before WaitMoe looks again at whether
// its step is done (a failed step ends without an answer to wait for).
constexpr absl::Duration kHelpReceiveWait = absl::Milliseconds(50);
}  // namespace

absl::Status DirectMoeExecutor::WaitMoe(uint64_t handle,
                                        MoeTokenFailures* failed) {
  auto it = calls_.find(handle);
  if (it == calls_.end()) {
    return absl::InternalError(
        absl::StrCat("no MoE call ", handle, " in flight"));
  }
  std::shared_ptr<Call> call = std::move(it->second);
  calls_.erase(it);
  // With no other step in flight, every answer the expert servers still
  // owe belongs to this step: take the shared-memory ones on this thread,
  // which saves the receiver thread's hand-off to it (a wake-up per MoE
  // layer, tens of microseconds on a busy or virtual machine).
  while (calls_.empty() && !call->done.HasBeenNotified() &&
         dispatcher_->HelpReceive(kHelpReceiveWait)) {
  }
  call->done.WaitForNotification();
  const std::string source =
      absl::StrCat("direct dispatch (router ", options_.router_address, ")");
  if (!call->status.ok()) {
    return absl::Status(call->status.code(),
                        absl::StrCat(source, ": layer ", call->layer, ": ",
                                     call->status.message()));
  }
  MoeTokenFailures failures;
  RETURN_IF_ERROR(ReadMoeResponse(call->response, source, call->layer,
                                  hidden_size_, call->tokens, call->out,
                                  &failures));
  if (failures.tokens.empty()) return absl::OkStatus();
  if (failed == nullptr) return failures.status;
  *failed = std::move(failures);
  return absl::OkStatus();
}

absl::Status DirectMoeExecutor::RunMoe(int layer, const float* x,
                                       int64_t tokens, float* out) {
  ASSIGN_OR_RETURN(const uint64_t handle, StartMoe(layer, x, tokens, out));
  return WaitMoe(handle, nullptr);
}

}  // namespace moe
