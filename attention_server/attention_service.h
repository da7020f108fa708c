// gRPC adapter of an attention server: Generate streams a sequence of the
// AttentionEngine to the caller (the gateway), Prefill runs a prompt here and
// ships its K/V to a decode server, TransferKv receives such K/V, GetLoad
// reports the engine's load. Never blocks inside a callback.
#ifndef MOE_ATTENTION_SERVER_ATTENTION_SERVICE_H_
#define MOE_ATTENTION_SERVER_ATTENTION_SERVICE_H_

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "attention_server/attention_engine.h"
#include "attention_server/attention_metrics.h"
#include "attention_server/kv_transfer.h"
#include "core/attention_role.h"
#include "core/kv_cache.h"
#include "core/model_config.h"
#include "core/rpc/generate_codec.h"
#include "moe/v1/attention.grpc.pb.h"

namespace moe {

// A validated Prefill request.
struct DecodedPrefillRequest {
  DecodedGenerateRequest request;
  std::string address;  // the decode server
  KvReservation reservation;
};

// Validates a Prefill request for a server of model `config` whose KV cache
// has shape `shape`: the request as DecodeGenerateRequest does
// (INVALID_ARGUMENT), destination.address present (INVALID_ARGUMENT), and a
// reservation whose K/V layout matches this server's and the prompt's block
// count (FAILED_PRECONDITION naming both layouts).
absl::StatusOr<DecodedPrefillRequest> DecodePrefillRequest(
    const v1::PrefillRequest& request, const ModelConfig& config,
    const KvCacheShape& shape);

class AttentionServiceImpl final
    : public v1::AttentionService::CallbackService {
 public:
  // `engine` is borrowed and must outlive the service. A role serves: both,
  // everything; prefill, Prefill; decode, Generate with await_transfer and
  // TransferKv. Other calls get FAILED_PRECONDITION naming the role.
  // K/V transfers this server sends or receives are recorded in `metrics`
  // (borrowed, must outlive the service).
  AttentionServiceImpl(AttentionEngine* engine, AttentionRole role,
                       AttentionMetrics* metrics)
      : engine_(engine), role_(role), metrics_(metrics) {}

  grpc::ServerWriteReactor<v1::AttentionGenerateResponse>* Generate(
      grpc::CallbackServerContext* context,
      const v1::AttentionGenerateRequest* request) override;
  grpc::ServerUnaryReactor* Prefill(grpc::CallbackServerContext* context,
                                    const v1::PrefillRequest* request,
                                    v1::PrefillResult* response) override;
  grpc::ServerReadReactor<v1::KvTransferChunk>* TransferKv(
      grpc::CallbackServerContext* context,
      v1::KvTransferAck* response) override;
  grpc::ServerUnaryReactor* GetLoad(grpc::CallbackServerContext* context,
                                    const v1::GetLoadRequest* request,
                                    v1::AttentionLoad* response) override;

 private:
  // A stub for the decode server at `address`, created on first use.
  v1::AttentionService::Stub* DecodeStub(const std::string& address);

  AttentionEngine* engine_;
  const AttentionRole role_;
  AttentionMetrics* metrics_;
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<v1::AttentionService::Stub>>
      decode_stubs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_ATTENTION_SERVER_ATTENTION_SERVICE_H_
