#include "tools/moe_loadgen/stream_call.h"

#include <memory>
#include <utility>

namespace moe::loadgen {
namespace {

class StreamCall : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  StreamCall(v1::GenerateRequest request, double timeout_seconds,
             std::function<void(RequestResult)> done)
      : request_(std::move(request)), done_(std::move(done)) {
    context_.set_deadline(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(
                              static_cast<int64_t>(timeout_seconds * 1000)));
    result_.prompt_tokens = request_.prompt_ids_size();
  }

  void Start(v1::Inference::Stub* stub) {
    stub->async()->Generate(&context_, &request_, this);
    StartRead(&response_);
    start_ = Clock::now();
    last_ = start_;
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    const Clock::time_point now = Clock::now();
    const int n = response_.token_ids_size();
    if (n > 0) {
      if (result_.output_tokens == 0) {
        result_.ttft = Seconds(start_, now);
      } else {
        result_.itl.push_back(Seconds(last_, now));
      }
      for (int i = 1; i < n; ++i) result_.itl.push_back(0.0);
      result_.output_tokens += n;
      last_ = now;
    }
    if (response_.has_usage()) {
      result_.cached_tokens = response_.usage().cached_tokens();
    }
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    result_.e2e = Seconds(start_, Clock::now());
    result_.code = status.error_code();
    if (!status.ok()) result_.error = status.error_message();
    std::function<void(RequestResult)> done = std::move(done_);
    RequestResult result = std::move(result_);
    delete this;
    done(std::move(result));
  }

 private:
  static double Seconds(Clock::time_point from, Clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
  }

  v1::GenerateRequest request_;
  std::function<void(RequestResult)> done_;
  grpc::ClientContext context_;
  v1::GenerateResponse response_;
  RequestResult result_;
  Clock::time_point start_;
  Clock::time_point last_;
};

}  // namespace

void StartStreamCall(v1::Inference::Stub* stub, v1::GenerateRequest request,
                     double timeout_seconds,
                     std::function<void(RequestResult)> done) {
  auto* call =
      new StreamCall(std::move(request), timeout_seconds, std::move(done));
  call->Start(stub);
}

}  // namespace moe::loadgen
