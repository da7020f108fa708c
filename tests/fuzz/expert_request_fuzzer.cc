// The expert server's RunExperts decoding (DecodeRunExpertsRequest, which
// ExpertServiceImpl runs before queueing work) on arbitrary
// moe.v1.RunExpertsRequest messages, against an engine of a small Mixtral
// model (hidden size 64) that hosts experts 0-3 of layer 0 and 4-7 of
// layer 1. Accepted work is then computed, as the server would.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "expert_server/expert_service.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

moe::ExpertEngine& Engine() {
  static moe::ExpertEngine* engine = [] {
    moe::ExpertEngineOptions options;
    options.model_dir = moe::fuzz::SmallModelDir(moe::ModelFamily::kMixtral);
    for (int e = 0; e < 4; ++e) options.experts.insert({0, e});
    for (int e = 4; e < 8; ++e) options.experts.insert({1, e});
    options.num_threads = 1;
    options.spin_microseconds = 0;
    auto loaded = moe::ExpertEngine::Load(options);
    moe::fuzz::CheckOk(loaded.status(), "loading the expert engine");
    return loaded->release();
  }();
  return *engine;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto request = moe::fuzz::ParseProto<moe::v1::RunExpertsRequest>(data, size);
  if (!request) return 0;
  moe::ExpertEngine& engine = Engine();
  absl::StatusOr<moe::DecodedExpertRequest> decoded =
      moe::DecodeRunExpertsRequest(*request, engine);
  if (!decoded.ok()) {
    // Malformed: INVALID_ARGUMENT. Well formed but naming an expert this
    // server does not host: FAILED_PRECONDITION (the router routes around
    // the server until its experts are reloaded).
    const absl::StatusCode code = decoded.status().code();
    moe::fuzz::Check(code == absl::StatusCode::kInvalidArgument ||
                         (code == absl::StatusCode::kFailedPrecondition &&
                          absl::StrContains(decoded.status().message(),
                                            "is not hosted")),
                     "a bad request is neither INVALID_ARGUMENT nor an "
                     "unhosted expert's FAILED_PRECONDITION");
    return 0;
  }
  const int64_t hidden = engine.config().hidden_size;
  int64_t total_tokens = 0;
  for (const moe::ExpertWork& w : decoded->work) total_tokens += w.tokens;
  // Bounded by the input size, but keep each run fast.
  if (total_tokens > 256) return 0;
  std::vector<std::vector<float>> outputs;
  outputs.reserve(decoded->work.size());
  for (moe::ExpertWork& w : decoded->work) {
    outputs.emplace_back(static_cast<size_t>(w.tokens * hidden));
    w.out = outputs.back().data();
  }
  absl::Notification done;
  absl::Status status;
  engine.Submit(std::move(decoded->work),
                [&](absl::Status s, double /*seconds*/) {
                  status = std::move(s);
                  done.Notify();
                });
  done.WaitForNotification();
  moe::fuzz::CheckOk(status, "computing validated expert work");
  return 0;
}
