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
#include "agent/observe/observer.h"
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
};

class AgentClient {
 public:
  // `observer` and `executor` are not owned and must outlive the client.
  AgentClient(AgentClientOptions options, StackObserver* observer, Executor* executor)
      : options_(std::move(options)), observer_(observer), executor_(executor) {}
  ~AgentClient() { Shutdown(); }

  absl::Status Start();
  void Shutdown();
  bool connected() const;

  struct Link;  // what the client and one stream's reactor share

 private:
  class Stream;

  void SuperviseLoop();
  void ActionLoop();
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
  std::optional<std::vector<upkeep::v1::Stack>> desired_ ABSL_GUARDED_BY(mu_);
  std::deque<upkeep::v1::Action> actions_ ABSL_GUARDED_BY(mu_);
  std::deque<upkeep::v1::ActionResult> unsent_ ABSL_GUARDED_BY(mu_);
  std::thread supervisor_;
  std::thread action_thread_;
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_DAEMON_AGENT_CLIENT_H_
