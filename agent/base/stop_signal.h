// How a daemon's main thread sleeps until it is told to stop (SIGINT or SIGTERM): the handler
// writes to a self-pipe the main thread blocks on, so an idle agent never wakes for nothing
// (the daemon and the standalone agent each polled a flag every 100 ms). A self-pipe rather
// than signalfd: signalfd needs the signals blocked in every thread, and a blocked mask is
// inherited by the services and nginx the agent starts.
// Process-wide: InstallStopSignals once from main before WaitForStopSignal; both are
// called from the main thread only.
#ifndef UPKEEP_AGENT_BASE_STOP_SIGNAL_H_
#define UPKEEP_AGENT_BASE_STOP_SIGNAL_H_

#include "absl/status/status.h"

namespace upkeep::agent {

// Handles SIGINT and SIGTERM (they wake WaitForStopSignal) and ignores SIGPIPE.
absl::Status InstallStopSignals();

// Blocks until SIGINT or SIGTERM arrived (at once if one already did).
void WaitForStopSignal();

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_BASE_STOP_SIGNAL_H_
