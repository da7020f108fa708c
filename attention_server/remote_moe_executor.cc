#include "attention_server/remote_moe_executor.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "attention_server/moe_response.h"
#include "core/rpc/channel_util.h"
#include "core/rpc/tensor_codec.h"
#include "core/status_macros.h"

namespace moe {

RemoteMoeExecutor::RemoteMoeExecutor(const std::string& router_address,
                                     int64_t hidden_size,
                                     double timeout_seconds,
                                     v1::DType wire_dtype)
    : address_(router_address),
      hidden_size_(hidden_size),
      timeout_seconds_(timeout_seconds),
      wire_dtype_(wire_dtype),
      stub_(v1::RouterService::NewStub(MakeChannel(router_address))) {}

RemoteMoeExecutor::~RemoteMoeExecutor() {
  if (stream_ == nullptr) return;
  stream_->WritesDone();
  context_->TryCancel();  // nothing is awaited any more
  stream_->Finish();
}

void RemoteMoeExecutor::BreakStream(const std::string& why) {
  for (auto& [id, call] : calls_) {
    if (call.done) continue;
    watchdog_.Cancel(call.deadline);
    call.done = true;
    call.status = absl::UnavailableError(absl::StrCat(
        "router ", address_, " failed the MoE step of layer ", call.layer,
        ": ", why));
  }
  if (stream_ != nullptr) {
    context_->TryCancel();
    stream_->Finish();
  }
  stream_.reset();
  context_.reset();
}

absl::StatusOr<uint64_t> RemoteMoeExecutor::StartMoe(int layer, const float* x,
                                                     int64_t tokens,
                                                     float* out) {
  // A timeout cancelled the stream (perhaps racing an answer): start afresh.
  if (stream_ != nullptr && expired_->load()) {
    BreakStream("a call timed out and cancelled the stream");
  }
  if (stream_ == nullptr) {
    context_ = std::make_shared<grpc::ClientContext>();
    expired_ = std::make_shared<std::atomic<bool>>(false);
    stream_ = stub_->MoeStream(context_.get());
  }
  const uint64_t id = next_call_id_++;
  Call& call = calls_[id];
  call.layer = layer;
  call.tokens = tokens;
  call.out = out;
  // A stuck router must not block the batch forever: past the timeout the
  // watchdog cancels the stream, which fails the reads.
  call.deadline = watchdog_.Arm(absl::Now() + absl::Seconds(timeout_seconds_),
                                [context = context_, expired = expired_] {
                                  expired->store(true);
                                  context->TryCancel();
                                });
  request_.set_layer(layer);
  request_.set_call_id(id);
  EncodeRows(x, tokens, hidden_size_, wire_dtype_, request_.mutable_hidden());
  if (!stream_->Write(request_)) {
    BreakStream("the stream broke");
    absl::Status status = calls_[id].status;
    calls_.erase(id);
    return status;
  }
  return id;
}

void RemoteMoeExecutor::Deliver(const v1::RunMoeResponse& response) {
  auto it = calls_.find(response.call_id());
  if (it == calls_.end() || it->second.done) return;  // not ours any more
  Call& call = it->second;
  call.done = true;
  watchdog_.Cancel(call.deadline);
  call.status = ReadMoeResponse(response, absl::StrCat("router ", address_),
                                call.layer, hidden_size_, call.tokens, call.out,
                                &call.failed);
}

absl::Status RemoteMoeExecutor::WaitMoe(uint64_t handle,
                                        MoeTokenFailures* failed) {
  auto it = calls_.find(handle);
  if (it == calls_.end()) {
    return absl::InternalError(absl::StrCat("no MoE call ", handle, " in flight"));
  }
  while (!it->second.done) {
    response_.Clear();
    if (!stream_->Read(&response_)) {
      BreakStream(expired_->load()
                      ? absl::StrCat("no answer within ", timeout_seconds_, " s")
                      : "the stream broke");
      break;
    }
    Deliver(response_);
  }
  absl::Status status = it->second.status;
  if (status.ok() && !it->second.failed.tokens.empty()) {
    if (failed == nullptr) {
      status = it->second.failed.status;
    } else {
      *failed = std::move(it->second.failed);
    }
  }
  calls_.erase(it);
  return status;
}

absl::Status RemoteMoeExecutor::RunMoe(int layer, const float* x,
                                       int64_t tokens, float* out) {
  ASSIGN_OR_RETURN(const uint64_t handle, StartMoe(layer, x, tokens, out));
  return WaitMoe(handle, nullptr);
}

}  // namespace moe
