// The server side of a long-lived bidirectional stream of independent calls
// (RouterService.MoeStream, ExpertService.ExpertStream): every request read
// is handed to a handler that answers it later, from any thread, with one
// response; responses are written in the order the answers arrive. Several
// calls may be in flight at once.
//
// Lifetime: gRPC owns the reactor until OnDone; each pending reply closure
// holds a reference too, so answering after the stream has ended is safe
// (the answer is dropped). The stream finishes with OK once the client has
// closed its side and every call has been answered and written, or with
// CANCELLED when the client cancels.
#ifndef MOE_CORE_RPC_CALL_STREAM_REACTOR_H_
#define MOE_CORE_RPC_CALL_STREAM_REACTOR_H_

#include <deque>
#include <functional>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/server_callback.h"

namespace moe {

template <typename Request, typename Response>
class CallStreamReactor
    : public grpc::ServerBidiReactor<Request, Response> {
 public:
  using Reply = std::function<void(std::unique_ptr<Response>)>;
  // Called on a gRPC thread for each request; must not block. `reply` must
  // be called exactly once.
  using Handler = std::function<void(std::unique_ptr<Request>, Reply)>;

  // The reactor to return from the service method.
  static grpc::ServerBidiReactor<Request, Response>* Start(Handler handler) {
    std::shared_ptr<CallStreamReactor> reactor(
        new CallStreamReactor(std::move(handler)));
    reactor->self_ = reactor;
    reactor->ReadNext();
    return reactor.get();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      absl::MutexLock lock(&mu_);
      reads_done_ = true;
      MaybeFinishLocked();
      return;
    }
    std::unique_ptr<Request> request = std::move(reading_);
    {
      absl::MutexLock lock(&mu_);
      ++in_flight_;
    }
    std::shared_ptr<CallStreamReactor> self = self_;
    handler_(std::move(request),
             [self](std::unique_ptr<Response> response) {
               self->Answer(std::move(response));
             });
    ReadNext();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) broken_ = true;
    PumpLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    MaybeFinishLocked();
  }

  void OnDone() override {
    // Drop gRPC's reference last: this may delete the reactor.
    std::shared_ptr<CallStreamReactor> self = std::move(self_);
  }

 private:
  explicit CallStreamReactor(Handler handler) : handler_(std::move(handler)) {}

  void ReadNext() {
    reading_ = std::make_unique<Request>();
    this->StartRead(reading_.get());
  }

  void Answer(std::unique_ptr<Response> response) {
    absl::MutexLock lock(&mu_);
    --in_flight_;
    if (!finished_ && !broken_ && !cancelled_) {
      queue_.push_back(std::move(response));
    }
    PumpLocked();
  }

  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return;
    if (!queue_.empty() && !broken_ && !cancelled_) {
      writing_response_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      this->StartWrite(writing_response_.get());
      return;
    }
    MaybeFinishLocked();
  }

  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_ || in_flight_ > 0) return;
    if (cancelled_ || broken_) {
      finished_ = true;
      this->Finish(grpc::Status::CANCELLED);
    } else if (reads_done_ && queue_.empty()) {
      finished_ = true;
      this->Finish(grpc::Status::OK);
    }
  }

  Handler handler_;
  std::unique_ptr<Request> reading_;  // the read in flight (reader only)
  absl::Mutex mu_;
  std::deque<std::unique_ptr<Response>> queue_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Response> writing_response_;  // owned by gRPC while writing_
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<CallStreamReactor> self_;
};

}  // namespace moe

#endif  // MOE_CORE_RPC_CALL_STREAM_REACTOR_H_
