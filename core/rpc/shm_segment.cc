#include "core/rpc/shm_segment.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <new>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moe {
namespace {

constexpr char kNamePrefix[] = "/moe-shm-";
constexpr size_t kNameHexDigits = 32;

uint64_t RoundUp64(uint64_t n) { return (n + 63) / 64 * 64; }

uint64_t HeaderBytes() { return RoundUp64(sizeof(ShmHeader)); }

uint64_t SlotStride(uint64_t slot_bytes) {
  return sizeof(ShmSlotHeader) + 2 * RoundUp64(slot_bytes);
}

long Futex(std::atomic<uint32_t>* word, int op, uint32_t value,
           const timespec* timeout) {
  // Shared (not FUTEX_PRIVATE) operations: the word is in memory mapped by
  // two processes.
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, value,
                 timeout, nullptr, 0);
}

std::string ErrnoText(int error) { return std::strerror(error); }

}  // namespace

void ShmEvent::Signal() {
  sequence.fetch_add(1, std::memory_order_seq_cst);
  if (waiters.load(std::memory_order_seq_cst) != 0) {
    Futex(&sequence, FUTEX_WAKE, INT_MAX, nullptr);
  }
}

void ShmEvent::Wait(uint32_t observed, absl::Duration timeout,
                    absl::Duration spin) {
  if (sequence.load(std::memory_order_seq_cst) != observed) return;
  const auto spin_end = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(spin);
  while (std::chrono::steady_clock::now() < spin_end) {
    if (sequence.load(std::memory_order_acquire) != observed) return;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  // Announce the waiter before the last check: a Signal after it sees the
  // waiter and wakes it; one before it changed the word, which the kernel
  // compares before sleeping.
  waiters.fetch_add(1, std::memory_order_seq_cst);
  if (sequence.load(std::memory_order_seq_cst) == observed) {
    const timespec ts = absl::ToTimespec(timeout);
    Futex(&sequence, FUTEX_WAIT, observed, &ts);
  }
  waiters.fetch_sub(1, std::memory_order_seq_cst);
}

uint64_t ShmSegment::SizeFor(int num_slots, uint64_t slot_bytes) {
  return HeaderBytes() +
         static_cast<uint64_t>(num_slots) * SlotStride(slot_bytes);
}

bool IsShmSegmentName(const std::string& name) {
  const size_t prefix = sizeof(kNamePrefix) - 1;
  if (name.size() != prefix + kNameHexDigits) return false;
  if (name.compare(0, prefix, kNamePrefix) != 0) return false;
  for (size_t i = prefix; i < name.size(); ++i) {
    const char c = name[i];
    if (!absl::ascii_isdigit(c) && (c < 'a' || c > 'f')) return false;
  }
  return true;
}

absl::StatusOr<std::unique_ptr<ShmSegment>> ShmSegment::Create(
    int num_slots, uint64_t slot_bytes) {
  if (num_slots < 1 || num_slots > kShmMaxSlots) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory: slots must be in [1, ", kShmMaxSlots, "], got ",
        num_slots));
  }
  if (slot_bytes < 1024 || slot_bytes > kShmMaxSlotBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory: slot bytes must be in [1024, ", kShmMaxSlotBytes,
        "], got ", slot_bytes));
  }
  absl::BitGen random;
  const uint64_t nonce = absl::Uniform<uint64_t>(random);
  const std::string name =
      absl::StrCat(kNamePrefix, absl::StrFormat("%016x%016x",
                                                absl::Uniform<uint64_t>(random),
                                                absl::Uniform<uint64_t>(random)));
  const int fd = shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat(
        "shared memory: cannot create ", name, ": ", ErrnoText(errno)));
  }
  const uint64_t size = SizeFor(num_slots, slot_bytes);
  auto fail = [&](const std::string& what, int error) {
    close(fd);
    shm_unlink(name.c_str());
    return absl::UnavailableError(absl::StrCat(
        "shared memory: ", what, " ", name, " (", size, " bytes): ",
        ErrnoText(error)));
  };
  // posix_fallocate reserves the pages now: on a full /dev/shm this fails
  // here instead of a later write faulting with SIGBUS.
  if (const int error = posix_fallocate(fd, 0, static_cast<off_t>(size));
      error != 0) {
    return fail("cannot reserve", error);
  }
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return fail("cannot map", errno);
  close(fd);
  std::unique_ptr<ShmSegment> segment(new ShmSegment());
  segment->name_ = name;
  segment->linked_ = true;
  segment->base_ = base;
  segment->size_ = size;
  segment->num_slots_ = num_slots;
  segment->slot_bytes_ = slot_bytes;
  segment->nonce_ = nonce;
  segment->header_ = new (base) ShmHeader();
  segment->header_->magic = kShmMagic;
  segment->header_->version = kShmVersion;
  segment->header_->num_slots = static_cast<uint32_t>(num_slots);
  segment->header_->slot_bytes = slot_bytes;
  segment->header_->nonce = nonce;
  for (int i = 0; i < num_slots; ++i) {
    ShmSlotHeader* slot = new (&segment->slot(i)) ShmSlotHeader();
    slot->state.store(kShmSlotFree, std::memory_order_relaxed);
  }
  std::atomic_thread_fence(std::memory_order_release);
  return segment;
}

absl::StatusOr<std::unique_ptr<ShmSegment>> ShmSegment::Attach(
    const std::string& name, uint64_t nonce) {
  if (!IsShmSegmentName(name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory: name \"", absl::CEscape(name), "\" is not \"",
        kNamePrefix, "\" followed by ", kNameHexDigits, " hex digits"));
  }
  const int fd = shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) {
    const int error = errno;
    if (error == ENOENT) {
      return absl::NotFoundError(absl::StrCat(
          "shared memory: no segment ", name,
          " here (the client runs on another host or in another container)"));
    }
    return absl::UnavailableError(absl::StrCat(
        "shared memory: cannot open ", name, ": ", ErrnoText(error)));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat(
        "shared memory: cannot stat ", name, ": ", ErrnoText(error)));
  }
  if (st.st_uid != geteuid()) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory: ", name, " belongs to uid ", st.st_uid,
        ", not to this server's uid ", geteuid()));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < HeaderBytes()) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory: ", name, " has ", size,
        " bytes, fewer than its header's ", HeaderBytes()));
  }
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int map_error = errno;
  close(fd);
  if (base == MAP_FAILED) {
    return absl::UnavailableError(absl::StrCat(
        "shared memory: cannot map ", name, ": ", ErrnoText(map_error)));
  }
  std::unique_ptr<ShmSegment> segment(new ShmSegment());
  segment->name_ = name;
  segment->base_ = base;
  segment->size_ = size;
  segment->header_ = static_cast<ShmHeader*>(base);
  // Copies: the client could change the header while it is checked.
  const uint64_t magic = segment->header_->magic;
  const uint32_t version = segment->header_->version;
  const uint32_t num_slots = segment->header_->num_slots;
  const uint64_t slot_bytes = segment->header_->slot_bytes;
  const uint64_t segment_nonce = segment->header_->nonce;
  if (magic != kShmMagic || version != kShmVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory: ", name, " is not a version ", kShmVersion,
        " moe-cluster segment"));
  }
  if (num_slots < 1 || num_slots > kShmMaxSlots || slot_bytes < 1024 ||
      slot_bytes > kShmMaxSlotBytes || SizeFor(num_slots, slot_bytes) != size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory: ", name, " claims ", num_slots, " slots of ",
        slot_bytes, " bytes, which does not match its size of ", size,
        " bytes (or is out of range)"));
  }
  if (segment_nonce != nonce) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory: ", name, " does not carry the nonce named in the "
        "request"));
  }
  segment->num_slots_ = static_cast<int>(num_slots);
  segment->slot_bytes_ = slot_bytes;
  segment->nonce_ = nonce;
  // Only now: a refused attach leaves the creator's name alone.
  segment->linked_ = true;
  return segment;
}

ShmSegment::~ShmSegment() {
  Unlink();
  if (base_ != nullptr) munmap(base_, size_);
}

void ShmSegment::Unlink() {
  if (!linked_) return;
  linked_ = false;
  shm_unlink(name_.c_str());
}

ShmSlotHeader& ShmSegment::slot(int i) {
  char* base = static_cast<char*>(base_) + HeaderBytes() +
               static_cast<uint64_t>(i) * SlotStride(slot_bytes_);
  return *reinterpret_cast<ShmSlotHeader*>(base);
}

char* ShmSegment::request_area(int i) {
  return reinterpret_cast<char*>(&slot(i)) + sizeof(ShmSlotHeader);
}

char* ShmSegment::response_area(int i) {
  return request_area(i) + RoundUp64(slot_bytes_);
}

}  // namespace moe
