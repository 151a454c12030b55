// Waiting in tests: on a condition, with a deadline; never a bare sleep.
#ifndef UPKEEP_TESTS_SUPPORT_WAIT_H_
#define UPKEEP_TESTS_SUPPORT_WAIT_H_

#include <functional>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace upkeep::testing {

// Polls `condition` (every `poll`) until it holds or `timeout` passes. Returns whether it held.
inline bool WaitFor(const std::function<bool()>& condition,
                    absl::Duration timeout = absl::Seconds(10),
                    absl::Duration poll = absl::Milliseconds(5)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (condition()) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(poll);
  }
}

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_WAIT_H_
