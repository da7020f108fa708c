// The public moe.v1.Inference service: validates every request against the
// model config (INVALID_ARGUMENT naming the field), applies admission
// control (RESOURCE_EXHAUSTED over the in-flight limit, UNAVAILABLE while
// draining), checks the bearer token when it has one (UNAUTHENTICATED before
// anything else, on every method), relays Generate to the attention servers, and serves Abort and
// GetModelInfo. Never blocks inside a callback.
//
// Colocated: one attention server of role both runs the request, chosen
// cache-aware (AttentionPool). Disaggregated: the least-loaded decode server
// reserves the K/V and a cache-aware choice of prefill server fills it.
//
// Migration: when the server streaming a request's tokens (role both, or
// decode) fails with UNAVAILABLE and no longer answers its health check,
// the request continues on another server of that kind (up to
// kMaxMigrations times): the tokens already streamed join the prompt, the
// sampler resumes where it was, and the client's stream goes on with no gap
// and no repeated token. A server that still answers failed the request
// itself; its error goes to the client.
//
// Over the in-flight limit, Generate fails with RESOURCE_EXHAUSTED and a
// retry hint: how long until a slot is likely free, in the message and in
// gRPC's server-pushback trailer (kRetryPushbackKey, milliseconds).
#ifndef MOE_GATEWAY_GATEWAY_SERVICE_H_
#define MOE_GATEWAY_GATEWAY_SERVICE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/model_config.h"
#include "gateway/attention_pool.h"
#include "gateway/gateway_metrics.h"
#include "gateway/generate_relay.h"
#include "gateway/text_front.h"
#include "moe/v1/generate.grpc.pb.h"

namespace moe {

inline constexpr absl::string_view kRetryPushbackKey = "grpc-retry-pushback-ms";

class GatewayServiceImpl final : public v1::Inference::CallbackService {
 public:
  static constexpr int kMaxMigrations = 2;
  static constexpr double kMigrationHealthCheckSeconds = 1.0;

  // The servers a request goes to: `colocated` (role both), or `prefill`
  // and `decode`; the pools are borrowed and the unused ones null. At most
  // `max_in_flight` Generate calls run at once. A non-empty `bearer_token`
  // must come with every call (core/security/bearer_token.h). Calls are
  // recorded in `metrics` (borrowed, must outlive the service). `text`
  // (not null) encodes text prompts and decodes the streamed text;
  // `model_name` is what GetModelInfo reports.
  struct Pools {
    AttentionPool* colocated = nullptr;
    AttentionPool* prefill = nullptr;
    AttentionPool* decode = nullptr;
  };
  GatewayServiceImpl(ModelConfig config, Pools pools, int max_in_flight,
                     std::string bearer_token, GatewayMetrics* metrics,
                     std::unique_ptr<TextFront> text, std::string model_name);

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context,
      const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* context,
                                  const v1::AbortRequest* request,
                                  v1::AbortResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(
      grpc::CallbackServerContext* context,
      const v1::GetModelInfoRequest* request,
      v1::ModelInfo* response) override;

  // New Generate calls get UNAVAILABLE from now on.
  void StopAccepting();
  int64_t InFlight() const;

 private:
  // False (and the refusal counted) when a token is required and `context`
  // does not carry it; `generate` says whether the call is a Generate.
  bool Authorized(const grpc::CallbackServerContext& context, bool generate);
  // One accepted Generate call, across its migrations.
  struct Run {
    std::string id;
    const grpc::CallbackServerContext* context = nullptr;
    absl::Time started;
    v1::AttentionGenerateRequest upstream;  // as first sent
    std::shared_ptr<PublicWriter> writer;
    // Changed only between relays (one relay runs at a time).
    std::vector<int32_t> streamed;    // tokens the client has
    int migrations = 0;
    std::vector<int> failed_servers;  // in the streaming pool
  };

  std::string NewRequestId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts a relay for `run` (the first, or the next after a migration).
  void StartAttempt(const std::shared_ptr<Run>& run);
  // A relay ended: the request is done, or it failed on `server` of `pool`
  // (the streaming pool) and is migrated or closed with the error.
  void OnAttemptDone(const std::shared_ptr<Run>& run, AttentionPool* pool,
                     int server, std::optional<RelayFailure> failure);
  // Closes `run` when its streamed tokens already end it (max_tokens, a
  // stop token); true if so.
  bool FinishedByStreamedTokens(Run& run);
  void CancelRelay(const std::string& request_id);
  void Unregister(const std::string& request_id, absl::Duration duration);
  absl::Duration RetryHintLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ModelConfig config_;
  const std::string model_name_;
  const Pools pools_;
  const int max_in_flight_;
  const std::string bearer_token_;  // empty: none required
  GatewayMetrics* metrics_;
  const std::unique_ptr<TextFront> text_;

  mutable absl::Mutex mu_;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  // Running requests by id, for Abort. `relay` is null between admission and
  // the upstream call's start; an Abort sets abort_requested, which a relay
  // started after it (the first, or a migration's) honours at once.
  struct Running {
    std::shared_ptr<GenerateRelay> relay;
    bool abort_requested = false;
  };
  absl::flat_hash_map<std::string, Running> running_ ABSL_GUARDED_BY(mu_);
  double mean_request_seconds_ ABSL_GUARDED_BY(mu_) = 1.0;
};

}  // namespace moe

#endif  // MOE_GATEWAY_GATEWAY_SERVICE_H_
