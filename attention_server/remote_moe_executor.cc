#include "attention_server/remote_moe_executor.h"

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

absl::Status RemoteMoeExecutor::RunMoe(int layer, const float* x,
                                       int64_t tokens, float* out) {
  request_.set_layer(layer);
  EncodeF32(x, tokens, hidden_size_, request_.mutable_hidden());
  response_.Clear();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::microseconds(
                           static_cast<int64_t>(timeout_seconds_ * 1e6)));
  const grpc::Status status = stub_->RunMoe(&context, request_, &response_);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "router ", address_, " failed the MoE step of layer ", layer, ": ",
        status.error_message()));
  }
  absl::StatusOr<F32Rows> rows =
      DecodeF32Rows(response_.output(), hidden_size_, "router output");
  if (!rows.ok()) return absl::InternalError(rows.status().message());
  if (rows->rows != tokens) {
    return absl::InternalError(absl::StrCat("router returned ", rows->rows,
                                            " rows for ", tokens, " tokens"));
  }
  std::memcpy(out, rows->data, static_cast<size_t>(tokens * hidden_size_) *
                                   sizeof(float));
  return absl::OkStatus();
}

}  // namespace moe
