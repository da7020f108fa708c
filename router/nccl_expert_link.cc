#include "router/nccl_expert_link.h"

#include <algorithm>
#include <cstdio>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/rpc/tensor_codec.h"
#include "grpcpp/client_context.h"

namespace moe {
namespace {

// The server's answer to a control message, awaited by the link's thread
// while its exchange runs.
class AnswerSlot {
 public:
  using Answer = absl::StatusOr<std::unique_ptr<v1::RunExpertsResponse>>;

  void Set(Answer answer) {
    absl::MutexLock lock(&mu_);
    failed_.store(!answer.ok());
    answer_ = std::move(answer);
    arrived_ = true;
  }
  // Polled by the exchange: the server refused (or never got) the control
  // message, so it will not take part.
  bool failed() const { return failed_.load(); }

  // The answer; DEADLINE_EXCEEDED if none came by `deadline` (the
  // connection's own deadline normally answers first).
  Answer Wait(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    if (!mu_.AwaitWithDeadline(absl::Condition(&arrived_), deadline)) {
      return absl::DeadlineExceededError("no answer to the control message");
    }
    return std::move(answer_);
  }

 private:
  absl::Mutex mu_;
  bool arrived_ ABSL_GUARDED_BY(mu_) = false;
  Answer answer_ ABSL_GUARDED_BY(mu_) = absl::UnknownError("not answered");
  std::atomic<bool> failed_{false};
};

}  // namespace

absl::StatusOr<std::unique_ptr<NcclExpertLink>> NcclExpertLink::Join(
    v1::ExpertService::Stub& stub, std::string peer, const DeviceSpec& device,
    int64_t hidden, double timeout_seconds) {
  if (absl::Status usable = CheckNcclUsable(device); !usable.ok()) {
    return usable;
  }
  absl::StatusOr<std::string> id = NewNcclUniqueId();
  if (!id.ok()) return id.status();
  absl::BitGen random;
  const uint64_t link_id =
      absl::Uniform<uint64_t>(absl::IntervalClosed, random, 1, UINT64_MAX);

  // The server's join and ours each wait for the other: ours runs on a
  // thread while this one makes the call, and gives up as soon as the call
  // has failed.
  std::atomic<bool> call_failed{false};
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> communicator =
      absl::UnknownError("not joined");
  NcclJoinOptions options;
  options.unique_id = *id;
  options.nranks = 2;
  options.rank = 0;
  options.device = device;
  options.peer = peer;
  options.timeout = absl::Seconds(timeout_seconds);
  options.cancelled = [&call_failed] { return call_failed.load(); };
  std::thread joiner([&communicator, &options] {
    communicator = JoinNcclCommunicator(options);
  });

  v1::JoinDataPlaneRequest request;
  request.set_nccl_unique_id(*id);
  request.set_nranks(2);
  request.set_rank(1);
  request.set_link(link_id);
  request.set_timeout_seconds(timeout_seconds);
  v1::JoinDataPlaneResponse response;
  grpc::ClientContext context;
  // The server answers once its join ended, at most `timeout_seconds` on.
  context.set_deadline(absl::ToChronoTime(
      absl::Now() + absl::Seconds(timeout_seconds) + absl::Seconds(10)));
  const grpc::Status call = stub.JoinDataPlane(&context, request, &response);
  if (!call.ok()) call_failed.store(true);
  joiner.join();
  if (!call.ok()) {
    return absl::Status(
        static_cast<absl::StatusCode>(call.error_code()),
        absl::StrCat(
            peer, " did not join the NCCL data plane: ", call.error_message()));
  }
  if (!communicator.ok()) {
    return absl::Status(communicator.status().code(),
                        absl::StrCat("joining the NCCL data plane with ", peer,
                                     ": ", communicator.status().message()));
  }
  std::printf("router: NCCL data plane to %s: %s here, %s there (BF16 rows)\n",
              peer.c_str(), device.ToString().c_str(),
              response.device().c_str());
  std::fflush(stdout);
  return std::make_unique<NcclExpertLink>(*std::move(communicator), link_id,
                                          std::move(peer), hidden);
}

NcclExpertLink::NcclExpertLink(std::unique_ptr<NcclCommunicator> communicator,
                               uint64_t link_id, std::string peer,
                               int64_t hidden)
    : communicator_(std::move(communicator)),
      link_id_(link_id),
      peer_(std::move(peer)),
      hidden_(hidden) {}

NcclExpertLink::~NcclExpertLink() {
  {
    absl::MutexLock lock(&mu_);
    stopping_.store(true);
  }
  if (thread_.joinable()) thread_.join();
  // Never started: nothing ran, but queued calls still get their answer.
  std::deque<Job> left;
  {
    absl::MutexLock lock(&mu_);
    left.swap(queue_);
  }
  for (Job& job : left) {
    job.done(absl::UnavailableError(
        absl::StrCat("the router is shutting down its link to ", peer_)));
  }
}

void NcclExpertLink::Start(SendFn send,
                           std::function<void(const absl::Status&)> on_broken) {
  send_ = std::move(send);
  on_broken_ = std::move(on_broken);
  thread_ = std::thread([this] { Loop(); });
}

void NcclExpertLink::Call(std::unique_ptr<v1::RunExpertsRequest> request,
                          std::chrono::system_clock::time_point deadline,
                          Done done) {
  absl::MutexLock lock(&mu_);
  queue_.push_back({std::move(request), deadline, std::move(done)});
}

bool NcclExpertLink::HasJobOrStopping() const {
  return stopping_.load() || !queue_.empty();
}

void NcclExpertLink::Loop() {
  for (;;) {
    Job job;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &NcclExpertLink::HasJobOrStopping));
      if (stopping_.load()) return;  // the destructor fails what is queued
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    if (broken_.load()) {
      // Queued before the link broke: over gRPC like every later call.
      send_(std::move(job.request), job.deadline, std::move(job.done));
      continue;
    }
    Exchange(std::move(job));
  }
}

void NcclExpertLink::Exchange(Job job) {
  const v1::RunExpertsRequest& request = *job.request;
  const int groups = request.groups_size();
  // The rows, viewed in the request's bytes; the outputs' bytes, filled by
  // the exchange and moved into the answer.
  std::vector<F32Rows> rows;
  rows.reserve(groups);
  std::vector<absl::Span<const float>> inputs;
  std::vector<std::string> output_bytes(groups);
  std::vector<absl::Span<float>> outputs;
  auto control = std::make_unique<v1::RunExpertsRequest>();
  for (int i = 0; i < groups; ++i) {
    const v1::ExpertGroup& group = request.groups(i);
    absl::StatusOr<F32Rows> decoded = DecodeF32Rows(
        group.hidden(), hidden_, absl::StrCat("groups[", i, "].hidden"));
    if (!decoded.ok()) {
      // The router's own request is malformed; nothing was sent.
      job.done(decoded.status());
      return;
    }
    rows.push_back(*std::move(decoded));
    const size_t count = static_cast<size_t>(rows.back().rows * hidden_);
    inputs.emplace_back(rows.back().data, count);
    output_bytes[i].resize(count * sizeof(float));
    outputs.emplace_back(reinterpret_cast<float*>(output_bytes[i].data()),
                         count);
    v1::ExpertGroup* g = control->add_groups();
    g->set_layer(group.layer());
    g->set_expert(group.expert());
    // The control message describes float rows whatever the caller's wire
    // dtype: the data plane moves them (as BF16) and answers in F32.
    g->mutable_hidden()->set_dtype(v1::DTYPE_F32);
    *g->mutable_hidden()->mutable_shape() = group.hidden().shape();
  }
  const absl::Time deadline = absl::FromChrono(job.deadline);
  v1::NcclTransfer* transfer = control->mutable_nccl();
  transfer->set_link(link_id_);
  transfer->set_sequence(++sequence_);
  transfer->set_timeout_ms(
      std::max<int64_t>(1, absl::ToInt64Milliseconds(deadline - absl::Now())));

  // The control message goes first, then the rows (module comment).
  auto answer = std::make_shared<AnswerSlot>();
  send_(std::move(control), job.deadline,
        [answer](AnswerSlot::Answer a) { answer->Set(std::move(a)); });
  const absl::Status exchanged = communicator_->Exchange(
      1, inputs, outputs, deadline,
      [this, &answer] { return stopping_.load() || answer->failed(); });
  AnswerSlot::Answer reply = answer->Wait(deadline + absl::Seconds(10));
  if (!exchanged.ok()) {
    Break(exchanged);
    if (!reply.ok() &&
        reply.status().code() == absl::StatusCode::kInvalidArgument) {
      job.done(reply.status());  // the router's own bug, as over gRPC
      return;
    }
    job.done(absl::UnavailableError(absl::StrCat(
        "NCCL data plane to ", peer_, " failed: ", exchanged.message(),
        reply.ok() ? ""
                   : absl::StrCat(" (the server answered: ",
                                  reply.status().message(), ")"),
        "; its calls go over gRPC from now on")));
    return;
  }
  if (!reply.ok()) {
    // The rows went both ways; only the control message failed (its
    // deadline, or the stream broke after the server answered over NCCL).
    job.done(reply.status());
    return;
  }
  v1::RunExpertsResponse& response = **reply;
  // A miscounted or misshapen answer keeps no bytes, so the dispatcher's
  // checks refuse it as they would over gRPC.
  for (int i = 0; i < std::min(groups, response.outputs_size()); ++i) {
    v1::Tensor* out = response.mutable_outputs(i);
    if (out->dtype() == v1::DTYPE_F32 && out->shape_size() == 2 &&
        out->shape(0) == rows[i].rows && out->shape(1) == hidden_ &&
        out->data().empty()) {
      out->set_data(std::move(output_bytes[i]));
    }
  }
  job.done(std::move(reply));
}

void NcclExpertLink::Break(const absl::Status& why) {
  if (broken_.exchange(true)) return;
  std::fprintf(stderr,
               "router: NCCL data plane to %s broke (%s); its calls go over "
               "gRPC bytes from now on\n",
               peer_.c_str(), std::string(why.message()).c_str());
  if (on_broken_) on_broken_(why);
}

}  // namespace moe
