// The same-host transport between a client (router or attention server) and
// an expert server: one POSIX shared-memory segment with a fixed number of
// slots, each carrying one call's serialized RunExpertsRequest and then its
// RunExpertsResponse, and two futex event counters (requests posted,
// responses posted) with which each side wakes the other's waiting thread
// directly, with no network stack and no gRPC thread in between.
//
// The client creates the segment (ShmSegment::Create) and names it to the
// server over gRPC (ExpertService.AttachSharedMemory); the server opens it
// (ShmSegment::Attach) and checks that it carries the nonce the client
// named. A server on another host or in another container (another
// /dev/shm) cannot open it, and the client keeps using gRPC.
//
// Neither side trusts the other's bytes: sizes are checked against the
// slot, and the messages are protobufs parsed with their own checks.
//
// Slot protocol: kFree --client writes a request--> kRequest --server takes
// it--> kServing --server writes the response--> kResponse --client reads
// it--> kFree. A state change is published with a release store after the
// bytes it announces, and the writer then signals the matching counter.
#ifndef MOE_CORE_RPC_SHM_SEGMENT_H_
#define MOE_CORE_RPC_SHM_SEGMENT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace moe {

inline constexpr uint64_t kShmMagic = 0x316d68732d656f6dULL;  // "moe-shm1"
inline constexpr uint32_t kShmVersion = 1;
inline constexpr int kShmMaxSlots = 64;
inline constexpr uint64_t kShmMaxSlotBytes = uint64_t{256} << 20;

enum ShmSlotState : uint32_t {
  kShmSlotFree = 0,
  kShmSlotRequest = 1,
  kShmSlotServing = 2,
  kShmSlotResponse = 3,
};

static_assert(std::atomic<uint32_t>::is_always_lock_free,
              "futex words must be plain 32-bit atomics");

// An event counter in shared memory: Signal bumps it and wakes waiters;
// Wait returns once it differs from the value the waiter last saw.
struct ShmEvent {
  std::atomic<uint32_t> sequence{0};
  std::atomic<uint32_t> waiters{0};

  // Wakes every thread waiting on this event (in any process).
  void Signal();
  // Returns when `sequence` != `observed` or after `timeout`. Spins for
  // `spin` first (a wake-up costs tens of µs on a virtual machine), then
  // sleeps in the kernel.
  void Wait(uint32_t observed, absl::Duration timeout, absl::Duration spin);
};

// The segment's first bytes. Written by the creator before it names the
// segment; the events are the only fields that change afterwards.
struct ShmHeader {
  uint64_t magic;
  uint32_t version;
  uint32_t num_slots;
  uint64_t slot_bytes;  // each of a slot's two areas
  uint64_t nonce;
  alignas(64) ShmEvent requests;   // signalled by the client
  alignas(64) ShmEvent responses;  // signalled by the server
};

// Precedes each slot's request area and response area.
struct alignas(64) ShmSlotHeader {
  std::atomic<uint32_t> state;
  uint32_t reserved;
  uint64_t call_id;
  uint64_t posted;  // the client's post order: the server serves oldest first
  uint64_t request_bytes;
  uint64_t response_bytes;
};

class ShmSegment {
 public:
  // Creates a segment of `num_slots` slots whose request and response areas
  // hold `slot_bytes` each, with a random name and nonce, and reserves its
  // memory (a full /dev/shm fails here, not later with SIGBUS).
  static absl::StatusOr<std::unique_ptr<ShmSegment>> Create(
      int num_slots, uint64_t slot_bytes);
  // Opens and maps the segment `name` created by a client, checking its
  // owner (this user), header, size and nonce. NOT_FOUND when there is no
  // such segment here; INVALID_ARGUMENT naming what does not match.
  static absl::StatusOr<std::unique_ptr<ShmSegment>> Attach(
      const std::string& name, uint64_t nonce);
  // Unmaps, and removes the name if it is still there.
  ~ShmSegment();
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;

  const std::string& name() const { return name_; }
  uint64_t nonce() const { return nonce_; }
  // As checked when created or attached (the header's copy is the peer's
  // to scribble on; these are what the mapping was sized by).
  int num_slots() const { return num_slots_; }
  uint64_t slot_bytes() const { return slot_bytes_; }

  // Removes the name (both sides have it mapped by then; the memory goes
  // when the last mapping does). Idempotent.
  void Unlink();

  ShmHeader& header() { return *header_; }
  ShmSlotHeader& slot(int i);
  char* request_area(int i);
  char* response_area(int i);

  // The segment's size for these dimensions.
  static uint64_t SizeFor(int num_slots, uint64_t slot_bytes);

 private:
  ShmSegment() = default;
  std::string name_;
  bool linked_ = false;  // Unlink has not run yet
  void* base_ = nullptr;
  uint64_t size_ = 0;
  int num_slots_ = 0;
  uint64_t slot_bytes_ = 0;
  uint64_t nonce_ = 0;
  ShmHeader* header_ = nullptr;
};

// True when `name` has the form the creator gives it ("/moe-shm-" and 32
// lowercase hex digits): a server opens nothing else.
bool IsShmSegmentName(const std::string& name);

}  // namespace moe

#endif  // MOE_CORE_RPC_SHM_SEGMENT_H_
