// Makes Debian's absl::Mutex, CondVar and Notification visible to ThreadSanitizer.
//
// Why: libabsl is built without -fsanitize=thread, so its ABSL_TSAN_MUTEX_* annotations are
// compiled out and it blocks with raw futex syscalls that TSan does not intercept. TSan then
// sees no happens-before edge through an absl::Mutex, and every field we guard with one (most
// of the controller and agent) reads as a data race. gRPC's own mutexes are absl::Mutex too.
//
// How: a TSan build (UPKEEP_SANITIZE=thread) links this shared library ahead of libabsl into
// every binary, so the dynamic linker binds these definitions for our code and for libgrpc
// alike. Each one forwards to the real function (dlsym RTLD_NEXT) and tells TSan about the
// edge: __tsan_release before a mutex can pass to another thread, __tsan_acquire after it has
// been (re)taken. Conditions are wrapped so that their evaluation, which abseil may run on
// another thread or before the lock call returns, also acquires first. This file is compiled
// without -fsanitize=thread (the wrapper objects it hands to abseil live on the waiter's stack
// and are read by other threads through abseil's own, invisible, queue). Only edges are added,
// never removed: the shim can hide a race between two holders of the same mutex (there is
// none) but cannot invent one. It contains no logic of ours and is not linked into normal
// builds.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/base/options.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);

namespace {

#define UPKEEP_STR2(x) #x
#define UPKEEP_STR(x) UPKEEP_STR2(x)

// The Itanium mangling of absl::<inline namespace>::<cls>::<rest>, e.g. ("5Mutex", "4LockEv").
std::string Mangled(const char* cls, const char* rest, bool is_const = false) {
  std::string ns = UPKEEP_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  std::string name = is_const ? "_ZNK4absl" : "_ZN4absl";
  if (ABSL_OPTION_USE_INLINE_NAMESPACE) name += std::to_string(ns.size()) + ns;
  return name + cls + rest;
}

void* Real(const char* cls, const char* rest, bool is_const = false) {
  std::string name = Mangled(cls, rest, is_const);
  void* fn = dlsym(RTLD_NEXT, name.c_str());
  if (fn == nullptr) {
    std::fprintf(stderr, "absl_tsan: %s not found in libabsl (%s)\n", name.c_str(), dlerror());
    std::abort();
  }
  return fn;
}

// Resolves the real member function once; `Fn` is its type with `this` as first argument.
#define REAL(Fn, cls, rest, ...) \
  static const auto real = reinterpret_cast<Fn>(Real(cls, rest, ##__VA_ARGS__))

struct Guarded {
  const absl::Condition* cond;
  absl::Mutex* mu;
};

// Runs, with the mutex held, on whichever thread abseil evaluates the condition on. The waiter
// built `cond` (a release on its address, below) and other holders wrote what it reads (the
// mutex); the next holder must see these reads as before its writes (abseil may drop the
// mutex right after a false evaluation, without passing through Unlock).
bool EvalAfterAcquire(Guarded* g) {
  __tsan_acquire(const_cast<absl::Condition*>(g->cond));
  __tsan_acquire(g->mu);
  const bool holds = g->cond->Eval();
  __tsan_release(g->mu);
  return holds;
}

void Publish(const absl::Condition& cond) { __tsan_release(const_cast<absl::Condition*>(&cond)); }

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  REAL(void (*)(Mutex*), "5Mutex", "4LockEv");
  real(this);
  __tsan_acquire(this);
}

void Mutex::ReaderLock() {
  REAL(void (*)(Mutex*), "5Mutex", "10ReaderLockEv");
  real(this);
  __tsan_acquire(this);
}

bool Mutex::TryLock() {
  REAL(bool (*)(Mutex*), "5Mutex", "7TryLockEv");
  bool locked = real(this);
  if (locked) __tsan_acquire(this);
  return locked;
}

bool Mutex::ReaderTryLock() {
  REAL(bool (*)(Mutex*), "5Mutex", "13ReaderTryLockEv");
  bool locked = real(this);
  if (locked) __tsan_acquire(this);
  return locked;
}

void Mutex::Unlock() {
  REAL(void (*)(Mutex*), "5Mutex", "6UnlockEv");
  __tsan_release(this);
  real(this);
}

void Mutex::ReaderUnlock() {
  REAL(void (*)(Mutex*), "5Mutex", "12ReaderUnlockEv");
  __tsan_release(this);
  real(this);
}

// LockWhen*: return holding the lock; the condition may be evaluated on the unlocking thread.
void Mutex::LockWhen(const Condition& cond) {
  REAL(void (*)(Mutex*, const Condition&), "5Mutex", "8LockWhenERKNS0_9ConditionE");
  Guarded g{&cond, this};
  Publish(cond);
  real(this, Condition(&EvalAfterAcquire, &g));
  __tsan_acquire(this);
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  REAL(void (*)(Mutex*, const Condition&), "5Mutex", "14ReaderLockWhenERKNS0_9ConditionE");
  Guarded g{&cond, this};
  Publish(cond);
  real(this, Condition(&EvalAfterAcquire, &g));
  __tsan_acquire(this);
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, absl::Duration timeout) {
  REAL(bool (*)(Mutex*, const Condition&, absl::Duration), "5Mutex",
       "19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Guarded g{&cond, this};
  Publish(cond);
  bool ok = real(this, Condition(&EvalAfterAcquire, &g), timeout);
  __tsan_acquire(this);
  return ok;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  REAL(bool (*)(Mutex*, const Condition&, absl::Time), "5Mutex",
       "20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Guarded g{&cond, this};
  Publish(cond);
  bool ok = real(this, Condition(&EvalAfterAcquire, &g), deadline);
  __tsan_acquire(this);
  return ok;
}

bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, absl::Duration timeout) {
  REAL(bool (*)(Mutex*, const Condition&, absl::Duration), "5Mutex",
       "25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Guarded g{&cond, this};
  Publish(cond);
  bool ok = real(this, Condition(&EvalAfterAcquire, &g), timeout);
  __tsan_acquire(this);
  return ok;
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  REAL(bool (*)(Mutex*, const Condition&, absl::Time), "5Mutex",
       "26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Guarded g{&cond, this};
  Publish(cond);
  bool ok = real(this, Condition(&EvalAfterAcquire, &g), deadline);
  __tsan_acquire(this);
  return ok;
}

// Await*: may let other threads hold the mutex in between, so release first.
void Mutex::Await(const Condition& cond) {
  REAL(void (*)(Mutex*, const Condition&), "5Mutex", "5AwaitERKNS0_9ConditionE");
  Guarded g{&cond, this};
  Publish(cond);
  __tsan_release(this);
  real(this, Condition(&EvalAfterAcquire, &g));
  __tsan_acquire(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  REAL(bool (*)(Mutex*, const Condition&, absl::Duration), "5Mutex",
       "16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Guarded g{&cond, this};
  Publish(cond);
  __tsan_release(this);
  bool ok = real(this, Condition(&EvalAfterAcquire, &g), timeout);
  __tsan_acquire(this);
  return ok;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  REAL(bool (*)(Mutex*, const Condition&, absl::Time), "5Mutex",
       "17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Guarded g{&cond, this};
  Publish(cond);
  __tsan_release(this);
  bool ok = real(this, Condition(&EvalAfterAcquire, &g), deadline);
  __tsan_acquire(this);
  return ok;
}

void CondVar::Wait(Mutex* mu) {
  REAL(void (*)(CondVar*, Mutex*), "7CondVar", "4WaitEPNS0_5MutexE");
  __tsan_release(mu);
  real(this, mu);
  __tsan_acquire(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  REAL(bool (*)(CondVar*, Mutex*, absl::Duration), "7CondVar",
       "15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  __tsan_release(mu);
  bool timed_out = real(this, mu, timeout);
  __tsan_acquire(mu);
  return timed_out;
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  REAL(bool (*)(CondVar*, Mutex*, absl::Time), "7CondVar",
       "16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  __tsan_release(mu);
  bool timed_out = real(this, mu, deadline);
  __tsan_acquire(mu);
  return timed_out;
}

void Notification::Notify() {
  REAL(void (*)(Notification*), "12Notification", "6NotifyEv");
  __tsan_release(this);
  real(this);
}

void Notification::WaitForNotification() const {
  REAL(void (*)(const Notification*), "12Notification", "19WaitForNotificationEv", true);
  real(this);
  __tsan_acquire(const_cast<Notification*>(this));
}

bool Notification::WaitForNotificationWithTimeout(absl::Duration timeout) const {
  REAL(bool (*)(const Notification*, absl::Duration), "12Notification",
       "30WaitForNotificationWithTimeoutENS0_8DurationE", true);
  bool notified = real(this, timeout);
  __tsan_acquire(const_cast<Notification*>(this));
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(absl::Time deadline) const {
  REAL(bool (*)(const Notification*, absl::Time), "12Notification",
       "31WaitForNotificationWithDeadlineENS0_4TimeE", true);
  bool notified = real(this, deadline);
  __tsan_acquire(const_cast<Notification*>(this));
  return notified;
}

bool BlockingCounter::DecrementCount() {
  REAL(bool (*)(BlockingCounter*), "15BlockingCounter", "14DecrementCountEv");
  __tsan_release(this);
  return real(this);
}

void BlockingCounter::Wait() {
  REAL(void (*)(BlockingCounter*), "15BlockingCounter", "4WaitEv");
  real(this);
  __tsan_acquire(this);
}

ABSL_NAMESPACE_END
}  // namespace absl
