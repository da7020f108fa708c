// The same-host transport's segment and event (core/rpc/shm_segment.h):
// what the creator writes the attacher sees, every mismatch is refused
// naming it, and a Signal wakes a Wait in another process.
#include "core/rpc/shm_segment.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

// Long enough never to end a wait that a signal is meant to end.
constexpr absl::Duration kNever = absl::Hours(1);

TEST(ShmSegmentTest, TheAttacherSeesTheCreatorsSlots) {
  absl::StatusOr<std::unique_ptr<ShmSegment>> created =
      ShmSegment::Create(3, 4096);
  ASSERT_TRUE(created.ok()) << created.status();
  ShmSegment& a = **created;
  EXPECT_TRUE(IsShmSegmentName(a.name())) << a.name();
  EXPECT_EQ(a.num_slots(), 3);
  EXPECT_EQ(a.slot_bytes(), 4096u);

  absl::StatusOr<std::unique_ptr<ShmSegment>> attached =
      ShmSegment::Attach(a.name(), a.nonce());
  ASSERT_TRUE(attached.ok()) << attached.status();
  ShmSegment& b = **attached;
  EXPECT_EQ(b.num_slots(), 3);
  EXPECT_EQ(b.slot_bytes(), 4096u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(b.slot(i).state.load(), kShmSlotFree);
    std::memset(a.request_area(i), 'a' + i, 4096);
    std::memset(b.response_area(i), 'A' + i, 4096);
  }
  a.slot(2).call_id = 77;
  a.slot(2).state.store(kShmSlotRequest);
  EXPECT_EQ(b.slot(2).call_id, 77u);
  EXPECT_EQ(b.slot(2).state.load(), kShmSlotRequest);
  for (int i = 0; i < 3; ++i) {
    // The two areas of every slot are distinct and do not overlap.
    EXPECT_EQ(b.request_area(i)[0], 'a' + i);
    EXPECT_EQ(b.request_area(i)[4095], 'a' + i);
    EXPECT_EQ(a.response_area(i)[0], 'A' + i);
    EXPECT_EQ(a.response_area(i)[4095], 'A' + i);
  }
}

TEST(ShmSegmentTest, UnlinkRemovesTheNameNotTheMapping) {
  absl::StatusOr<std::unique_ptr<ShmSegment>> created =
      ShmSegment::Create(1, 1024);
  ASSERT_TRUE(created.ok()) << created.status();
  absl::StatusOr<std::unique_ptr<ShmSegment>> attached =
      ShmSegment::Attach((*created)->name(), (*created)->nonce());
  ASSERT_TRUE(attached.ok()) << attached.status();
  (*attached)->Unlink();
  (*created)->slot(0).call_id = 5;
  EXPECT_EQ((*attached)->slot(0).call_id, 5u);
  absl::StatusOr<std::unique_ptr<ShmSegment>> again =
      ShmSegment::Attach((*created)->name(), (*created)->nonce());
  EXPECT_TRUE(absl::IsNotFound(again.status())) << again.status();
}

TEST(ShmSegmentTest, AttachRefusesWhatIsNotTheNamedSegment) {
  absl::StatusOr<std::unique_ptr<ShmSegment>> created =
      ShmSegment::Create(2, 2048);
  ASSERT_TRUE(created.ok()) << created.status();
  const std::string name = (*created)->name();

  absl::StatusOr<std::unique_ptr<ShmSegment>> wrong_nonce =
      ShmSegment::Attach(name, (*created)->nonce() + 1);
  EXPECT_TRUE(absl::IsInvalidArgument(wrong_nonce.status()));
  EXPECT_THAT(wrong_nonce.status().message(), HasSubstr("nonce"));

  for (const std::string& bad : std::vector<std::string>{
           "/dev/shm/x", "/moe-shm-", "/moe-shm-0123456789ABCDEF0123456789abcdef",
        "/moe-shm-0123456789abcdef0123456789abcde/", "../../etc/passwd",
        std::string("/moe-shm-0123456789abcdef0123456789abcde\0", 41)}) {
    absl::StatusOr<std::unique_ptr<ShmSegment>> refused =
        ShmSegment::Attach(bad, 1);
    EXPECT_TRUE(absl::IsInvalidArgument(refused.status())) << bad;
    EXPECT_THAT(refused.status().message(), HasSubstr("hex digits")) << bad;
  }

  absl::StatusOr<std::unique_ptr<ShmSegment>> missing = ShmSegment::Attach(
      "/moe-shm-00000000000000000000000000000000", 1);
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  EXPECT_THAT(missing.status().message(), HasSubstr("another host"));

  // A header whose dimensions do not match the segment's size (a client
  // scribbling on it before naming it) is refused, not trusted.
  (*created)->header().num_slots = 9;
  absl::StatusOr<std::unique_ptr<ShmSegment>> resized =
      ShmSegment::Attach(name, (*created)->nonce());
  EXPECT_TRUE(absl::IsInvalidArgument(resized.status()));
  EXPECT_THAT(resized.status().message(), HasSubstr("9 slots"));
  (*created)->header().num_slots = 2;
  (*created)->header().magic = 1;
  absl::StatusOr<std::unique_ptr<ShmSegment>> foreign =
      ShmSegment::Attach(name, (*created)->nonce());
  EXPECT_TRUE(absl::IsInvalidArgument(foreign.status()));
  EXPECT_THAT(foreign.status().message(), HasSubstr("moe-cluster segment"));
}

TEST(ShmSegmentTest, CreateNamesBadDimensions) {
  absl::StatusOr<std::unique_ptr<ShmSegment>> none = ShmSegment::Create(0, 4096);
  EXPECT_TRUE(absl::IsInvalidArgument(none.status()));
  EXPECT_THAT(none.status().message(), HasSubstr("slots must be in [1, 64]"));
  absl::StatusOr<std::unique_ptr<ShmSegment>> tiny = ShmSegment::Create(1, 8);
  EXPECT_TRUE(absl::IsInvalidArgument(tiny.status()));
  EXPECT_THAT(tiny.status().message(), HasSubstr("slot bytes"));
}

TEST(ShmEventTest, WaitReturnsAtOnceWhenTheEventMovedAndOnSignal) {
  ShmEvent event;
  event.Signal();
  // Observed an older value: no wait at all.
  event.Wait(0, kNever, absl::ZeroDuration());
  const uint32_t seen = event.sequence.load();
  absl::Notification woke;
  std::thread waiter([&] {
    event.Wait(seen, kNever, absl::ZeroDuration());
    woke.Notify();
  });
  // The waiter is asleep in the kernel (or about to be): only the signal
  // can end its wait.
  while (event.waiters.load() == 0 && !woke.HasBeenNotified()) {
    std::this_thread::yield();
  }
  EXPECT_FALSE(woke.HasBeenNotified());
  event.Signal();
  woke.WaitForNotification();
  waiter.join();
  EXPECT_EQ(event.waiters.load(), 0u);
}

TEST(ShmEventTest, ASignalWakesAWaiterInAnotherProcess) {
  absl::StatusOr<std::unique_ptr<ShmSegment>> created =
      ShmSegment::Create(1, 1024);
  ASSERT_TRUE(created.ok()) << created.status();
  ShmHeader& header = (*created)->header();
  const uint32_t seen = header.requests.sequence.load();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Waits for the parent's request signal, then answers with its own.
    header.requests.Wait(seen, kNever, absl::ZeroDuration());
    header.responses.Signal();
    _exit(header.requests.sequence.load() != seen ? 0 : 1);
  }
  const uint32_t responses = header.responses.sequence.load();
  header.requests.Signal();
  header.responses.Wait(responses, kNever, absl::ZeroDuration());
  EXPECT_NE(header.responses.sequence.load(), responses);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace moe
