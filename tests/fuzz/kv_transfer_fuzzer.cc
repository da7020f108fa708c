// The decode server's side of a K/V transfer (AttentionService.TransferKv):
// the input is the stream's chunks, each a length-delimited
// moe.v1.KvTransferChunk, handed one by one to ApplyKvChunk (as KvReceiver
// does) for a real reservation of an AttentionEngine of a small Mixtral
// model (2 layers, 8-token KV blocks of 2048 bytes per layer). Each input
// gets a fresh 6-token prompt (one block) awaiting its K/V with
// max_tokens 4; the stream stops at the first error or the last chunk, a
// stream that ends without one fails the transfer (as a broken call does),
// and the sequence must then finish, with at most max_tokens tokens.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "attention_server/kv_receiver.h"
#include "core/local_moe_executor.h"
#include "core/model_weights.h"
#include "core/thread_pool.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/util/delimited_message_util.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

constexpr int kMaxTokens = 4;

struct Engine {
  moe::ModelWeights weights;
  std::unique_ptr<moe::ThreadPool> pool;
  std::unique_ptr<moe::LocalMoeExecutor> moe;
  std::unique_ptr<moe::AttentionEngine> engine;
};

Engine& GetEngine() {
  static Engine* e = [] {
    moe::fuzz::QuietProtobufLogs();  // ParseDelimitedFromCodedStream's too
    auto* out = new Engine();
    const std::string& dir =
        moe::fuzz::SmallModelDir(moe::ModelFamily::kMixtral);
    moe::WeightSelection experts;
    experts.non_expert = false;
    auto weights = moe::LoadModelWeightsFromDir(dir, experts, false);
    moe::fuzz::CheckOk(weights.status(), "loading the experts");
    out->weights = *std::move(weights);
    out->pool = std::make_unique<moe::ThreadPool>(1);
    out->moe = std::make_unique<moe::LocalMoeExecutor>(&out->weights,
                                                       out->pool.get());
    moe::AttentionEngineOptions options;
    options.model_dir = dir;
    options.num_threads = 1;
    options.spin_microseconds = 0;
    options.kv_block_size = 8;
    options.kv_cache_bytes = 1 << 20;
    options.prefix_cache = false;
    auto engine = moe::AttentionEngine::Load(options, out->moe.get());
    moe::fuzz::CheckOk(engine.status(), "loading the attention engine");
    out->engine = *std::move(engine);
    return out;
  }();
  return *e;
}

class Observer : public moe::SequenceObserver {
 public:
  void OnReserved(const moe::KvReservation& reservation) override {
    reservation_ = reservation;
    reserved_.Notify();
  }
  void OnToken(const moe::GeneratedToken& token) override {
    absl::MutexLock lock(&mu_);
    ++tokens_;
  }
  void OnFinish(const absl::Status& status, moe::FinishReason reason,
                const moe::SequenceUsage& usage) override {
    finished_.Notify();
  }

  // False if the sequence finished (failed) instead of reserving.
  bool WaitReserved() {
    while (!reserved_.WaitForNotificationWithTimeout(absl::Milliseconds(1))) {
      if (finished_.HasBeenNotified()) return false;
    }
    return true;
  }
  void WaitFinished() { finished_.WaitForNotification(); }
  const moe::KvReservation& reservation() const { return reservation_; }
  int tokens() {
    absl::MutexLock lock(&mu_);
    return tokens_;
  }

 private:
  absl::Notification reserved_, finished_;
  moe::KvReservation reservation_;
  absl::Mutex mu_;
  int tokens_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moe::AttentionEngine& engine = *GetEngine().engine;
  moe::SequenceSpec spec;
  spec.request.prompt = {1, 15, 27, 300, 42, 7};
  spec.request.max_tokens = kMaxTokens;
  spec.request.ignore_eos = true;
  spec.role = moe::SequenceRole::kRemotePrefill;
  auto observer = std::make_shared<Observer>();
  absl::StatusOr<moe::AttentionEngine::SequenceId> id =
      engine.Submit(spec, observer);
  moe::fuzz::CheckOk(id.status(), "submitting the sequence");
  moe::fuzz::Check(observer->WaitReserved(), "the sequence was not reserved");
  moe::fuzz::Check(observer->reservation().id == *id &&
                       observer->reservation().num_blocks == 1,
                   "unexpected reservation");

  google::protobuf::io::CodedInputStream in(data, static_cast<int>(size));
  bool ended = false;  // the last chunk came, or a chunk failed
  for (;;) {
    moe::v1::KvTransferChunk chunk;
    bool clean_eof = false;
    if (!google::protobuf::util::ParseDelimitedFromCodedStream(&chunk, &in,
                                                               &clean_eof)) {
      break;  // the end of the stream, or bytes that are no chunk
    }
    const absl::Status status = moe::ApplyKvChunk(engine, *id, chunk);
    if (chunk.has_done() || !status.ok()) {
      ended = true;
      // A failed data chunk makes KvReceiver fail the transfer.
      if (!chunk.has_done()) engine.FailKvTransfer(*id, status);
      break;
    }
  }
  if (!ended) {
    engine.FailKvTransfer(*id, absl::UnavailableError("the stream ended"));
  }
  observer->WaitFinished();
  moe::fuzz::Check(observer->tokens() <= kMaxTokens,
                   "a sequence streamed more than max_tokens tokens");
  return 0;
}
