// Clock: the only source of "now" for code that must be testable in simulated time.
// RealClock reads the system clock; SimulatedClock only moves when a test advances it.
// Both are thread-safe.
#ifndef UPKEEP_CORE_CLOCK_H_
#define UPKEEP_CORE_CLOCK_H_

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace upkeep {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
  // The process-wide real clock.
  static Clock* Real();
};

class SimulatedClock : public Clock {
 public:
  explicit SimulatedClock(absl::Time start = absl::UnixEpoch() + absl::Hours(24 * 365 * 50))
      : now_(start) {}
  absl::Time Now() const override;
  void Advance(absl::Duration d);
  void Set(absl::Time t);

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace upkeep

#endif  // UPKEEP_CORE_CLOCK_H_
