#include "tests/background_stream.h"

#include <algorithm>
#include <chrono>

#include "grpcpp/client_context.h"

namespace moe::testing {

BackgroundStream::BackgroundStream(v1::Inference::Stub& stub,
                                   v1::GenerateRequest request)
    : thread_([this, &stub, request = std::move(request)] {
        Read(stub, request);
      }) {}

BackgroundStream::~BackgroundStream() { Finish(); }

void BackgroundStream::Read(v1::Inference::Stub& stub,
                            const v1::GenerateRequest& request) {
  using Clock = std::chrono::steady_clock;
  grpc::ClientContext context;
  // Against hangs only: several long streams share this machine.
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(300));
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  Clock::time_point last = Clock::now();
  while (reader->Read(&response)) {
    const double gap =
        std::chrono::duration<double>(Clock::now() - last).count();
    last = Clock::now();
    if (response.token_ids_size() > 0 && count_.load() > 0) {
      max_gap_ = std::max(max_gap_, gap);
    }
    for (int32_t t : response.token_ids()) result_.tokens.push_back(t);
    count_.store(static_cast<int>(result_.tokens.size()));
    if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      ++result_.finish_messages;
      result_.finish_reason = response.finish_reason();
      result_.usage = response.usage();
    }
  }
  result_.status = reader->Finish();
}

const StreamResult& BackgroundStream::Finish() {
  if (thread_.joinable()) thread_.join();
  return result_;
}

}  // namespace moe::testing
