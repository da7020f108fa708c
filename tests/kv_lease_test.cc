// The decode side's K/V lease (AttentionEngineOptions::kv_lease_seconds),
// on a clock the test moves: a reservation fails once no new K/V has come
// for a whole lease, counted from the reservation and from each arrival of
// new blocks, so a slow prefill that keeps sending is never cut off while a
// stalled one still is. Nothing here depends on how fast the machine runs:
// the lease clock only moves when the test moves it.
#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "attention_server/attention_engine.h"
#include "core/local_moe_executor.h"
#include "core/model_weights.h"
#include "core/thread_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::testing::HasSubstr;
using SteadyClock = std::chrono::steady_clock;

constexpr double kLeaseSeconds = 10;

// A steady clock that stands still until Advance.
class FakeClock {
 public:
  SteadyClock::time_point Now() const {
    return start_ + std::chrono::nanoseconds(offset_ns_.load());
  }
  // Moves the clock to `seconds` after its start.
  void Set(double seconds) {
    offset_ns_.store(static_cast<int64_t>(seconds * 1e9));
  }

 private:
  const SteadyClock::time_point start_ = SteadyClock::now();
  std::atomic<int64_t> offset_ns_{0};
};

class LeaseObserver : public SequenceObserver {
 public:
  void OnReserved(const KvReservation& reservation) override {
    absl::MutexLock lock(&mu_);
    reservation_ = reservation;
    reserved_ = true;
  }
  void OnFinish(const absl::Status& status, FinishReason,
                const SequenceUsage&) override {
    {
      absl::MutexLock lock(&mu_);
      status_ = status;
    }
    finished_.Notify();
  }

  // The reservation; fails the test if the sequence finished instead.
  KvReservation WaitReserved() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](LeaseObserver* o) ABSL_EXCLUSIVE_LOCKS_REQUIRED(o->mu_) {
          return o->reserved_ || o->finished_.HasBeenNotified();
        },
        this));
    EXPECT_TRUE(reserved_) << "finished before reserving: " << status_;
    return reservation_;
  }
  absl::Status WaitFinished() {
    finished_.WaitForNotification();
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  absl::Mutex mu_;
  bool reserved_ ABSL_GUARDED_BY(mu_) = false;
  KvReservation reservation_ ABSL_GUARDED_BY(mu_);
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  absl::Notification finished_;
};

class KvLeaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = testing::FixtureDir("tiny-mixtral");
    WeightSelection experts;
    experts.non_expert = false;
    absl::StatusOr<ModelWeights> weights =
        LoadModelWeightsFromDir(dir, experts, false);
    ASSERT_TRUE(weights.ok()) << weights.status();
    weights_ = *std::move(weights);
    pool_ = std::make_unique<ThreadPool>(1);
    moe_ = std::make_unique<LocalMoeExecutor>(&weights_, pool_.get());
    AttentionEngineOptions options;
    options.model_dir = dir;
    options.num_threads = 1;
    options.spin_microseconds = 0;
    options.kv_block_size = 8;
    options.kv_cache_bytes = int64_t{4} << 20;
    options.prefix_cache = false;
    options.kv_lease_seconds = kLeaseSeconds;
    options.lease_clock = [this] { return clock_.Now(); };
    absl::StatusOr<std::unique_ptr<AttentionEngine>> engine =
        AttentionEngine::Load(options, moe_.get());
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }

  // Reserves a 20-token prompt (3 blocks of 8 tokens) on the decode side.
  void Reserve() {
    SequenceSpec spec;
    spec.request.prompt.assign(20, 5);
    spec.request.max_tokens = 4;
    spec.request.ignore_eos = true;
    spec.role = SequenceRole::kRemotePrefill;
    observer_ = std::make_shared<LeaseObserver>();
    absl::StatusOr<AttentionEngine::SequenceId> id =
        engine_->Submit(spec, observer_);
    ASSERT_TRUE(id.ok()) << id.status();
    id_ = *id;
    reservation_ = observer_->WaitReserved();
    ASSERT_EQ(reservation_.num_blocks, 3);
  }

  // One block of layer `layer`, as the prefill server would send it.
  absl::Status Send(int layer, int block) {
    const std::string data(reservation_.block_bytes, '\0');
    return engine_->ReceiveKv(id_, layer, block, 1, data);
  }

  FakeClock clock_;
  ModelWeights weights_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<LocalMoeExecutor> moe_;
  std::unique_ptr<AttentionEngine> engine_;
  std::shared_ptr<LeaseObserver> observer_;
  AttentionEngine::SequenceId id_ = 0;
  KvReservation reservation_;
};

TEST_F(KvLeaseTest, AReservationWithoutKvFailsWhenItsLeaseRunsOut) {
  Reserve();
  clock_.Set(kLeaseSeconds);
  engine_->ExpireLeases();
  ASSERT_TRUE(absl::IsNotFound(Send(0, 0)));
  const absl::Status status = observer_->WaitFinished();
  EXPECT_TRUE(absl::IsDeadlineExceeded(status)) << status;
  EXPECT_THAT(status.message(), HasSubstr("lease"));
}

TEST_F(KvLeaseTest, NewKvRenewsTheLeaseAndBlocksSentAgainDoNot) {
  Reserve();
  clock_.Set(0.8 * kLeaseSeconds);
  ASSERT_TRUE(Send(0, 0).ok());  // renews until 1.8 leases
  // Past the first lease: counted from the reservation alone, the request
  // would have failed here.
  clock_.Set(1.5 * kLeaseSeconds);
  engine_->ExpireLeases();
  ASSERT_TRUE(Send(0, 1).ok());  // renews until 2.5 leases
  clock_.Set(2.4 * kLeaseSeconds);
  engine_->ExpireLeases();
  ASSERT_TRUE(Send(1, 0).ok());  // renews until 3.4 leases
  // The same block again: accepted, but no progress, so no renewal.
  clock_.Set(3.3 * kLeaseSeconds);
  ASSERT_TRUE(Send(1, 0).ok());
  clock_.Set(3.4 * kLeaseSeconds);
  engine_->ExpireLeases();
  ASSERT_TRUE(absl::IsNotFound(Send(1, 1)));
  const absl::Status status = observer_->WaitFinished();
  EXPECT_TRUE(absl::IsDeadlineExceeded(status)) << status;
  EXPECT_THAT(status.message(), HasSubstr("lease"));
}

}  // namespace
}  // namespace moe
