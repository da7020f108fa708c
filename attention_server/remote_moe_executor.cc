#include "attention_server/remote_moe_executor.h"

#include <atomic>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/rpc/channel_util.h"
#include "core/rpc/tensor_codec.h"

namespace moe {

RemoteMoeExecutor::RemoteMoeExecutor(const std::string& router_address,
                                     int64_t hidden_size,
                                     double timeout_seconds)
    : address_(router_address),
      hidden_size_(hidden_size),
      timeout_seconds_(timeout_seconds),
      stub_(v1::RouterService::NewStub(MakeChannel(router_address))) {}

RemoteMoeExecutor::~RemoteMoeExecutor() { CloseStream(); }

void RemoteMoeExecutor::CloseStream() {
  if (stream_ == nullptr) return;
  stream_->WritesDone();
  context_->TryCancel();  // nothing is in flight; don't wait for the router
  stream_->Finish();
  stream_.reset();
  context_.reset();
}

absl::Status RemoteMoeExecutor::RunMoe(int layer, const float* x,
                                       int64_t tokens, float* out) {
  if (stream_ == nullptr) {
    context_ = std::make_shared<grpc::ClientContext>();
    stream_ = stub_->MoeStream(context_.get());
  }
  const uint64_t call_id = next_call_id_++;
  request_.set_layer(layer);
  request_.set_call_id(call_id);
  EncodeF32(x, tokens, hidden_size_, request_.mutable_hidden());
  response_.Clear();

  // A stuck router must not block the batch forever: past the timeout the
  // watchdog cancels the stream, which fails the Read below.
  auto expired = std::make_shared<std::atomic<bool>>(false);
  const DeadlineWatchdog::Handle deadline = watchdog_.Arm(
      absl::Now() + absl::Seconds(timeout_seconds_),
      [context = context_, expired] {
        expired->store(true);
        context->TryCancel();
      });
  const bool ok = stream_->Write(request_) && stream_->Read(&response_);
  const bool timer_fired = !watchdog_.Cancel(deadline);
  if (!ok || response_.call_id() != call_id) {
    const std::string why =
        expired->load()
            ? absl::StrCat("no answer within ", timeout_seconds_, " s")
            : (ok ? "answer to another call" : "the stream broke");
    CloseStream();
    return absl::UnavailableError(absl::StrCat(
        "router ", address_, " failed the MoE step of layer ", layer, ": ",
        why));
  }
  // The answer came, but the timeout raced it and is cancelling the stream:
  // open a fresh one for the next call.
  if (timer_fired) CloseStream();
  if (response_.error_code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(response_.error_code()),
                        absl::StrCat("router ", address_, ": layer ", layer,
                                     ": ", response_.error_message()));
  }
  absl::StatusOr<F32Rows> rows =
      DecodeF32Rows(response_.output(), hidden_size_, "router output");
  if (!rows.ok()) return absl::InternalError(rows.status().message());
  if (rows->rows != tokens) {
    return absl::InternalError(absl::StrCat("router returned ", rows->rows,
                                            " rows for ", tokens, " tokens"));
  }
  std::memcpy(out, rows->data,
              static_cast<size_t>(tokens * hidden_size_) * sizeof(float));
  return absl::OkStatus();
}

}  // namespace moe
