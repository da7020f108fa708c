// gRPC adapter of the attention server: Generate streams a sequence of the
// AttentionEngine to the caller (the gateway), GetLoad reports the engine's
// load. Never blocks inside a callback.
#ifndef MOE_ATTENTION_SERVER_ATTENTION_SERVICE_H_
#define MOE_ATTENTION_SERVER_ATTENTION_SERVICE_H_

#include "attention_server/attention_engine.h"
#include "moe/v1/attention.grpc.pb.h"

namespace moe {

class AttentionServiceImpl final
    : public v1::AttentionService::CallbackService {
 public:
  // `engine` is borrowed and must outlive the service.
  explicit AttentionServiceImpl(AttentionEngine* engine) : engine_(engine) {}

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context,
      const v1::AttentionGenerateRequest* request) override;

  grpc::ServerUnaryReactor* GetLoad(grpc::CallbackServerContext* context,
                                    const v1::GetLoadRequest* request,
                                    v1::AttentionLoad* response) override;

 private:
  AttentionEngine* engine_;
};

}  // namespace moe

#endif  // MOE_ATTENTION_SERVER_ATTENTION_SERVICE_H_
