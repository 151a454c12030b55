// AgentClient: the agent's side of AgentService.Connect, on the gRPC callback API. Says hello,
// applies the desired state the controller pushes (executor + observer), streams observations
// (event-driven at once, periodic otherwise), runs actions on its own worker thread and sends
// their results — also those that finished while disconnected. When the stream breaks it
// reconnects with jittered exponential backoff (100 ms .. 10 s); the executor's journal makes a
// re-sent action id replay its result instead of running twice.
//
// One reactor (a ClientBidiReactor) per stream: at most one read and one write in flight; every
// outbound message waits in the stream's queue; reactions never block and only enqueue (desired
// states and actions go to the client's inbox, handled on its own threads); the stream ends
// once (OnDone) and the reactor deletes itself there — nothing keeps a raw pointer to it past
// that. Thread-safe; Start() spawns the threads, Shutdown() joins them.
//
// Autonomy (docs/operations.md): every desired state is kept on disk (DesiredCache) and loaded
// at Start. When no stream has been up for `autonomous_after`, the client cancels any stream
// attempt and decides for its own host with a LocalDecider (agent/autonomy). Once the
// controller's channel is ready again, the supervisor stops local decisions first (queued local
// actions are dropped, the one in flight finishes), collects the Handback and only then says
// hello, with the handback in it — so there is never a moment with two deciders, and nothing
// the agent did is re-run by the controller. The handback is re-sent with every hello until a
// desired state proves the controller took it.
#ifndef UPKEEP_AGENT_DAEMON_AGENT_CLIENT_H_
#define UPKEEP_AGENT_DAEMON_AGENT_CLIENT_H_

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "agent/act/executor.h"
#include "agent/autonomy/desired_cache.h"
#include "agent/autonomy/local_decider.h"
#include "agent/observe/observer.h"
#include "core/clock.h"
#include "grpcpp/grpcpp.h"
#include "upkeep/v1/agent_service.grpc.pb.h"

namespace upkeep::agent {

struct AgentClientOptions {
  // host:port; or several, comma-separated (controller replicas on etcd): the agent connects
  // to one at a time and moves to the next whenever a stream ends, so it finds the leader
  // (followers do not serve AgentService) and follows it when leadership moves.
  std::string controller;
  std::string host_id;
  std::string data_dir;
  std::string docker_socket;
  std::string version = "0.1.0";
  size_t max_outbound_queue = 1024;
  // Mutual TLS to the controller (core/tls): all three set, or none (plaintext, loopback).
  std::string tls_ca, tls_cert, tls_key;
  bool insecure = false;  // allow plaintext to a non-loopback controller
  // Decide locally after this long without a controller stream; zero or less: never.
  absl::Duration autonomous_after = absl::Seconds(3);
  Clock* clock = Clock::Real();
  HandbackLimits handback;
};

// Queues `msg` on a stream's outbound queue, whose first `in_flight` messages are being
// written. An observation replaces the queued, unwritten observations of the same stacks and
// goes last, keeping their event_driven flag: the controller judges on the latest evidence,
// never works through a backlog (a burst of observations once had it act on ones 12 s old). An
// observation is refused (false) when the queue still holds `max` messages.
bool QueueOutbound(std::deque<upkeep::v1::AgentMessage>* queue, size_t in_flight, size_t max,
                   upkeep::v1::AgentMessage msg);

class AgentClient {
 public:
  // `observer` and `executor` are not owned and must outlive the client.
  AgentClient(AgentClientOptions options, StackObserver* observer, Executor* executor)
      : options_(std::move(options)), observer_(observer), executor_(executor) {}
  ~AgentClient() { Shutdown(); }

  absl::Status Start();
  void Shutdown();
  bool connected() const;
  // Whether the agent decides for its host on its own now.
  bool autonomous() const;
  // The local loop while autonomous (for tests and the standalone socket), else null.
  std::shared_ptr<LocalDecider> decider() const;

  struct Link;  // what the client and one stream's reactor share

 private:
  class Stream;

  void SuperviseLoop();
  void ActionLoop();
  void AutonomyLoop();
  // Starts deciding locally (autonomy thread). Holds transition_mu_.
  void EnterAutonomy();
  // Stops deciding locally and keeps the handback for the next hello (supervisor thread).
  void LeaveAutonomy();
  // Waits until the controller's channel is ready (or stop). False on stop.
  bool AwaitChannelReady();
  // A controller action decided before the last hand-back and not run yet: refused.
  bool Superseded(const upkeep::v1::Action& action);
  void ApplyDesired(const upkeep::v1::DesiredState& desired, bool save);
  void OnObservation(const upkeep::v1::StackObservation& o, bool event_driven);
  // From the reactor (a gRPC thread): only enqueue.
  void Inbox(const upkeep::v1::ControllerMessage& msg);
  void StreamDone(const std::shared_ptr<Link>& link);
  bool Send(upkeep::v1::AgentMessage msg);

  const AgentClientOptions options_;
  StackObserver* const observer_;
  Executor* const executor_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<upkeep::v1::AgentService::Stub> stub_;
  // With several controllers: a channel and stub per endpoint; stub_ is unused.
  std::vector<std::string> endpoints_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<upkeep::v1::AgentService::Stub>> stubs_;
  size_t current_ = 0;  // only the supervisor thread moves it
  upkeep::v1::AgentService::Stub* CurrentStub() {
    return stubs_.empty() ? stub_.get() : stubs_[current_ % stubs_.size()].get();
  }
  std::string CurrentController() const {
    return endpoints_.empty() ? options_.controller : endpoints_[current_ % endpoints_.size()];
  }

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<Link> link_ ABSL_GUARDED_BY(mu_);  // the current stream, if any
  bool link_done_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<upkeep::v1::DesiredState> desired_ ABSL_GUARDED_BY(mu_);  // not yet applied
  std::optional<upkeep::v1::DesiredState> last_desired_ ABSL_GUARDED_BY(mu_);
  // Since when no stream has been up (InfinitePast: one is up, or none was ever tried).
  absl::Time down_since_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool executing_ ABSL_GUARDED_BY(mu_) = false;
  bool executing_autonomous_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<LocalDecider> decider_ ABSL_GUARDED_BY(mu_);
  bool autonomous_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time autonomous_since_ ABSL_GUARDED_BY(mu_);
  std::vector<upkeep::v1::ActionResult> late_ ABSL_GUARDED_BY(mu_);    // after Stop deciding
  std::optional<upkeep::v1::Handback> handback_ ABSL_GUARDED_BY(mu_);  // until acknowledged
  absl::Time handed_back_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // Serialises entering autonomy against opening a stream (never two deciders).
  absl::Mutex transition_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::unique_ptr<DesiredCache> cache_;
  std::deque<upkeep::v1::Action> actions_ ABSL_GUARDED_BY(mu_);
  std::deque<upkeep::v1::ActionResult> unsent_ ABSL_GUARDED_BY(mu_);
  std::thread supervisor_;
  std::thread action_thread_;
  std::thread autonomy_thread_;
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_DAEMON_AGENT_CLIENT_H_
