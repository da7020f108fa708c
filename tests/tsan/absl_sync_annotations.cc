// TSan builds only (MOE_SANITIZE=thread): makes Debian's Abseil
// synchronization visible to ThreadSanitizer.
//
// Why: Debian's libabsl_synchronization is not built with TSan, so absl::Mutex,
// CondVar and Notification synchronize through atomics and futexes TSan never
// sees. Every access guarded by an absl::Mutex (ours, and gRPC's, whose gpr_mu
// is an absl::Mutex) then looks like a data race. This library, linked ahead
// of Abseil into every TSan executable, interposes those methods: each calls
// the real one (found with dlsym(RTLD_NEXT)) and tells TSan about the
// happens-before edge it creates (__tsan_release before giving a mutex up,
// __tsan_acquire after taking it), as Abseil itself does when compiled with
// TSan. No report is suppressed by this; it only restores the edges.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);

namespace {

// The next definition of `symbol` (Abseil's), or abort naming it.
void* Next(const char* symbol) {
  void* fn = dlsym(RTLD_NEXT, symbol);
  if (fn == nullptr) {
    std::fprintf(stderr, "absl_sync_annotations: %s not found: %s\n", symbol,
                 dlerror());
    std::abort();
  }
  return fn;
}

// Symbols are Debian's (inline namespace debian3): a different Abseil fails
// loudly at the first call rather than silently.
#define MOE_REAL(type, symbol) \
  static const auto real = reinterpret_cast<type>(Next(symbol))

// Notification keeps its flag after its mutex; HasBeenNotified() reads the
// flag inline (in instrumented code), so the edge goes on both addresses.
void* NotificationFlag(const absl::Notification* n) {
  return const_cast<char*>(reinterpret_cast<const char*>(n)) +
         sizeof(absl::Mutex);
}

// A waiter's Condition is evaluated inside the real call, with the mutex
// held but outside the annotations around the call (before Await gives the
// mutex up, or while LockWhen takes it): the wrapped condition acquires
// before and releases after evaluating, so what it reads is ordered after
// the last holder's writes and before the next holder's.
struct AnnotatedCondition {
  const absl::Condition* condition;
  absl::Mutex* mu;
};

bool EvalAnnotated(void* arg) {
  auto* annotated = static_cast<AnnotatedCondition*>(arg);
  __tsan_acquire(annotated->mu);
  const bool met = annotated->condition->Eval();
  __tsan_release(annotated->mu);
  return met;
}

}  // namespace

#define MOE_WRAP_CONDITION(cond)                       \
  AnnotatedCondition annotated{&(cond), this};         \
  const Condition wrapped(&EvalAnnotated, &annotated)

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  MOE_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex4LockEv");
  real(this);
  __tsan_acquire(this);
}

void Mutex::ReaderLock() {
  MOE_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex10ReaderLockEv");
  real(this);
  __tsan_acquire(this);
}

bool Mutex::TryLock() {
  MOE_REAL(bool (*)(Mutex*), "_ZN4absl7debian35Mutex7TryLockEv");
  const bool locked = real(this);
  if (locked) __tsan_acquire(this);
  return locked;
}

bool Mutex::ReaderTryLock() {
  MOE_REAL(bool (*)(Mutex*), "_ZN4absl7debian35Mutex13ReaderTryLockEv");
  const bool locked = real(this);
  if (locked) __tsan_acquire(this);
  return locked;
}

void Mutex::Unlock() {
  MOE_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex6UnlockEv");
  __tsan_release(this);
  real(this);
}

void Mutex::ReaderUnlock() {
  MOE_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex12ReaderUnlockEv");
  __tsan_release(this);
  real(this);
}

void Mutex::LockWhen(const Condition& cond) {
  MOE_REAL(void (*)(Mutex*, const Condition&),
           "_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  MOE_WRAP_CONDITION(cond);
  real(this, wrapped);
  __tsan_acquire(this);
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  MOE_REAL(void (*)(Mutex*, const Condition&),
           "_ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE");
  MOE_WRAP_CONDITION(cond);
  real(this, wrapped);
  __tsan_acquire(this);
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  MOE_REAL(bool (*)(Mutex*, const Condition&, Duration),
           "_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_"
           "8DurationE");
  MOE_WRAP_CONDITION(cond);
  const bool met = real(this, wrapped, timeout);
  __tsan_acquire(this);
  return met;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  MOE_REAL(bool (*)(Mutex*, const Condition&, Time),
           "_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_"
           "4TimeE");
  MOE_WRAP_CONDITION(cond);
  const bool met = real(this, wrapped, deadline);
  __tsan_acquire(this);
  return met;
}

void Mutex::Await(const Condition& cond) {
  MOE_REAL(void (*)(Mutex*, const Condition&),
           "_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  __tsan_release(this);
  MOE_WRAP_CONDITION(cond);
  real(this, wrapped);
  __tsan_acquire(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  MOE_REAL(bool (*)(Mutex*, const Condition&, Duration),
           "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_"
           "8DurationE");
  __tsan_release(this);
  MOE_WRAP_CONDITION(cond);
  const bool met = real(this, wrapped, timeout);
  __tsan_acquire(this);
  return met;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  MOE_REAL(bool (*)(Mutex*, const Condition&, Time),
           "_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_"
           "4TimeE");
  __tsan_release(this);
  MOE_WRAP_CONDITION(cond);
  const bool met = real(this, wrapped, deadline);
  __tsan_acquire(this);
  return met;
}

void CondVar::Wait(Mutex* mu) {
  MOE_REAL(void (*)(CondVar*, Mutex*),
           "_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  __tsan_release(mu);
  real(this, mu);
  __tsan_acquire(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  MOE_REAL(bool (*)(CondVar*, Mutex*, Duration),
           "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  __tsan_release(mu);
  const bool timed_out = real(this, mu, timeout);
  __tsan_acquire(mu);
  return timed_out;
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  MOE_REAL(bool (*)(CondVar*, Mutex*, Time),
           "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  __tsan_release(mu);
  const bool timed_out = real(this, mu, deadline);
  __tsan_acquire(mu);
  return timed_out;
}

void Notification::Notify() {
  MOE_REAL(void (*)(Notification*), "_ZN4absl7debian312Notification6NotifyEv");
  __tsan_release(this);
  __tsan_release(NotificationFlag(this));
  real(this);
}

void Notification::WaitForNotification() const {
  MOE_REAL(void (*)(const Notification*),
           "_ZNK4absl7debian312Notification19WaitForNotificationEv");
  real(this);
  __tsan_acquire(const_cast<Notification*>(this));
}

bool Notification::WaitForNotificationWithTimeout(Duration timeout) const {
  MOE_REAL(bool (*)(const Notification*, Duration),
           "_ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_"
           "8DurationE");
  const bool notified = real(this, timeout);
  if (notified) __tsan_acquire(const_cast<Notification*>(this));
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(Time deadline) const {
  MOE_REAL(bool (*)(const Notification*, Time),
           "_ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_"
           "4TimeE");
  const bool notified = real(this, deadline);
  if (notified) __tsan_acquire(const_cast<Notification*>(this));
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
