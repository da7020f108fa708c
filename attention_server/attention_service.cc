#include "attention_server/attention_service.h"

#include <memory>
#include <random>
#include <utility>

#include "core/rpc/generate_codec.h"
#include "core/rpc/grpc_status.h"
#include "core/rpc/token_stream_writer.h"

namespace moe {
namespace {

// Forwards one engine sequence's tokens and end to the call's writer.
class StreamObserver : public SequenceObserver {
 public:
  explicit StreamObserver(std::shared_ptr<TokenStreamWriter> writer)
      : writer_(std::move(writer)) {}

  void OnToken(const GeneratedToken& token) override {
    v1::GenerateResponse part;
    part.add_token_ids(token.token);
    if (token.logprobs.has_value()) AppendLogprobs(*token.logprobs, &part);
    writer_->Append(part);
  }

  void OnFinish(const absl::Status& status, FinishReason reason,
                const SequenceUsage& usage) override {
    v1::Usage out;
    out.set_prompt_tokens(usage.prompt_tokens);
    out.set_completion_tokens(usage.completion_tokens);
    out.set_cached_tokens(usage.cached_tokens);
    out.set_queue_seconds(usage.queue_seconds);
    out.set_prefill_seconds(usage.prefill_seconds);
    out.set_decode_seconds(usage.decode_seconds);
    writer_->Close(ToGrpcStatus(status), ToProto(reason), out);
  }

 private:
  std::shared_ptr<TokenStreamWriter> writer_;
};

uint64_t RandomSeed() {
  std::random_device device;
  return (uint64_t{device()} << 32) | device();
}

}  // namespace

grpc::ServerWriteReactor<v1::GenerateResponse>* AttentionServiceImpl::Generate(
    grpc::CallbackServerContext* context,
    const v1::AttentionGenerateRequest* request) {
  std::shared_ptr<TokenStreamWriter> writer =
      TokenStreamWriter::Create(request->request().request_id());
  absl::StatusOr<DecodedGenerateRequest> decoded =
      DecodeGenerateRequest(request->request(), engine_->config());
  if (!decoded.ok()) {
    writer->Close(ToGrpcStatus(decoded.status()), v1::FINISH_REASON_UNSPECIFIED,
                  v1::Usage());
    return writer.get();
  }
  SequenceSpec spec;
  spec.request = std::move(decoded->generation);
  spec.logprobs = decoded->logprobs;
  if (!decoded->has_seed) spec.request.sampling.seed = RandomSeed();
  absl::StatusOr<AttentionEngine::SequenceId> id = engine_->Submit(
      std::move(spec), std::make_shared<StreamObserver>(writer));
  if (!id.ok()) {
    writer->Close(ToGrpcStatus(id.status()), v1::FINISH_REASON_UNSPECIFIED,
                  v1::Usage());
    return writer.get();
  }
  writer->SetCancelHandler(
      [engine = engine_, id = *id] { engine->Cancel(id); });
  return writer.get();
}

grpc::ServerUnaryReactor* AttentionServiceImpl::GetLoad(
    grpc::CallbackServerContext* context, const v1::GetLoadRequest* /*request*/,
    v1::AttentionLoad* response) {
  const AttentionLoadInfo load = engine_->Load();
  response->set_running(load.running);
  response->set_waiting(load.waiting);
  response->set_kv_blocks_total(load.kv_blocks_total);
  response->set_kv_blocks_free(load.kv_blocks_free);
  response->set_kv_block_size(load.kv_block_size);
  response->set_kv_blocks_reserved(load.kv_blocks_reserved);
  response->set_steps(load.steps);
  response->set_generated_tokens(load.generated_tokens);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace moe
