// DockerRuntime: the Runtime (agent/runtime/runtime.h) for Docker containers, over the Docker
// Engine API on its unix socket (libcurl), with an /events subscription for instant change
// notification.
#ifndef UPKEEP_AGENT_RUNTIME_DOCKER_DOCKER_RUNTIME_H_
#define UPKEEP_AGENT_RUNTIME_DOCKER_DOCKER_RUNTIME_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/runtime/runtime.h"

namespace upkeep::agent {

// Containers are found by compose labels (ServiceSpec.container.compose: project/service, the
// running one or else the newest) or by name (container.name, else the service name). The API
// version is min(server ApiVersion, 1.41). One runtime serves every Docker stack on the host:
// each Watch is its own subscription. While the events stream is up, the container a service
// resolved to is remembered until a container is created, destroyed or renamed, so an Inspect or
// an action is one request to dockerd, not a list and a request (a crash heals that much sooner).
// The first Watch starts one thread on GET /events (container events, matched to each
// subscription's services client-side) that reconnects with backoff (100ms..2s) and, after a
// reconnect, reports every watched service as changed.
//
// An exit the stream saw is inspected without asking dockerd: dockerd publishes `die` (with the
// exit code in its attributes) while it still holds the container's lock for its clean-up
// (unmounts, network, its state written to disk; 20-30 ms on a loaded 2-core machine), and an
// Inspect sent then waits for all of it before the observer can report the crash. So while the
// stream is live, the runtime keeps the last Inspect of each running container that has no
// restart policy, and after its `die` answers Inspect from those two (running false, pid 0, the
// event's exit code and time as FinishedAt, OOMKilled from an `oom` event of the run) for
// 250 ms after the event was read, unless a start of the container or an action of this runtime
// on it comes first; after that dockerd answers at once again and is asked (a start by someone
// else is known only once its event is read: the bound keeps that lag short-lived). A `start`
// sent at once then queues behind dockerd's clean-up instead of after an Inspect and a report.
// A container with a restart policy, or one not inspected running since the stream came up, is
// asked as before.
//
// A person's stop (`ServiceObservation.stopped_by_person`): a container that is not running is
// reported stopped by a person when the run that ended was stopped or killed through the Engine
// API by someone else than this runtime (`docker stop`, `docker compose stop`, `docker kill`).
// Docker logs `kill` (with the signal) before `die` for those, and only `die` (plus `oom`) for a
// crash. The runtime keeps the recent kill/die/stop/start/oom events of each container from the
// /events stream and, for an exit the stream did not see whole (no Watch yet, an agent restart,
// an Inspect that raced the stream), replays that run once from dockerd's own event buffer
// (`/events?since=<StartedAt>&until=<now>`, one bounded request per exit: dockerd keeps its last
// 256 events in memory). Its own Stop/Restart calls are marked while they run: events stamped
// within one are its own, never a person's (kept in memory only: after an agent restart an own
// stop replayed from dockerd counts as outside). When the stream breaks or dockerd cannot be
// reached, the events are forgotten (a dockerd that shuts down stops its containers as `docker
// stop` would; after it comes back those exits are judged from the new daemon's events: none).
//
// `socket_path` e.g. /var/run/docker.sock. Fails only on unusable arguments; an unreachable
// daemon shows up as ServiceObservation.error (and the events stream keeps reconnecting).
absl::StatusOr<std::unique_ptr<Runtime>> CreateDockerRuntime(const std::string& socket_path);

// Decodes Docker's multiplexed log stream (8-byte headers: stream, 0, 0, 0, big-endian size)
// into the concatenated payload; input that is not multiplexed is returned as is.
std::string DemuxDockerStream(const std::string& raw);

namespace docker_internal {

// One container event as the runtime keeps it.
struct ContainerEvent {
  std::string action;  // kill, die, stop, start, restart, oom
  absl::Time at;       // dockerd's timeNano
  int signal = 0;      // kill: the signal sent
};

// A Stop or Restart this runtime made on a container: [begin, end]; end is InfiniteFuture while
// it runs. An event stamped within one is the runtime's own.
struct OwnCall {
  absl::Time begin;
  absl::Time end;
};

// What Inspect says about the run that ended.
struct ExitFacts {
  absl::Time started_at;
  int exit_code = 0;
  bool oom_killed = false;
  int stop_signal = 15;  // Config.StopSignal, SIGTERM when unset
};

// Why the run that began at `exit.started_at` ended by a person's stop or kill; "" when it did
// not (a crash, the OOM killer, this runtime's own stop). Outside events that count: a `stop`;
// a `kill` with SIGKILL or with the container's stop signal (what `docker stop` sends first, and
// what Docker itself takes as a manual stop); a `kill` with another signal only when the exit
// code says that signal ended it (128+N). Any `oom` in the run, or OOMKilled, rules it out: a
// false "stopped by a person" would leave the service down. `events` need not be sorted.
std::string OutsideStopCause(const std::vector<ContainerEvent>& events,
                             const std::vector<OwnCall>& own, const ExitFacts& exit);

// Config.StopSignal ("SIGQUIT", "QUIT", "3"; "" is SIGTERM) as a number; 0 when unknown.
int ParseStopSignal(const std::string& s);

}  // namespace docker_internal

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_RUNTIME_DOCKER_DOCKER_RUNTIME_H_
