// One public Generate stream read on a thread of its own, for tests that
// do something to the cluster (kill a server, rebalance experts) while a
// stream runs, and then check the stream's outcome.
#ifndef MOE_TESTS_BACKGROUND_STREAM_H_
#define MOE_TESTS_BACKGROUND_STREAM_H_

#include <atomic>
#include <thread>

#include "moe/v1/generate.grpc.pb.h"
#include "tests/generate_client.h"

namespace moe::testing {

class BackgroundStream {
 public:
  // Starts reading `request`'s stream from `stub` (which must outlive
  // this); each stream may take up to 300 s (a bound against hangs only).
  BackgroundStream(v1::Inference::Stub& stub, v1::GenerateRequest request);
  ~BackgroundStream();
  BackgroundStream(const BackgroundStream&) = delete;
  BackgroundStream& operator=(const BackgroundStream&) = delete;

  // Tokens received so far (while it runs).
  int tokens_so_far() const { return count_.load(); }
  // Joins the reader; the stream's outcome.
  const StreamResult& Finish();
  // Longest wait between two token messages (after the first); valid after
  // Finish.
  double max_gap_seconds() const { return max_gap_; }

 private:
  void Read(v1::Inference::Stub& stub, const v1::GenerateRequest& request);

  StreamResult result_;
  std::atomic<int> count_{0};
  double max_gap_ = 0;
  std::thread thread_;
};

}  // namespace moe::testing

#endif  // MOE_TESTS_BACKGROUND_STREAM_H_
