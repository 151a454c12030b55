// AgentClient: the agent's side of AgentService.Connect. Says hello, applies the desired state
// the controller pushes (observer + executor), streams observations (event-driven at once,
// periodic otherwise), runs actions on its own worker thread (never on the stream's reader),
// and sends their results — also those that finished while disconnected. When the stream
// breaks it reconnects with jittered exponential backoff (100 ms .. 10 s) and resumes; the
// executor's journal makes a re-sent action id replay its result instead of running twice.
// Thread-safe; Start() spawns the threads, Shutdown() joins them.
#ifndef UPKEEP_AGENT_DAEMON_AGENT_CLIENT_H_
#define UPKEEP_AGENT_DAEMON_AGENT_CLIENT_H_

#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "agent/act/executor.h"
#include "agent/observe/observer.h"
#include "grpcpp/grpcpp.h"
#include "upkeep/v1/agent_service.grpc.pb.h"

namespace upkeep::agent {

struct AgentClientOptions {
  std::string controller;  // host:port
  std::string host_id;
  std::string data_dir;
  std::string docker_socket;
  std::string version = "0.1.0";
};

class AgentClient {
 public:
  explicit AgentClient(AgentClientOptions options) : options_(std::move(options)) {}
  ~AgentClient() { Shutdown(); }

  absl::Status Start();
  void Shutdown();
  bool connected() const;

 private:
  void ConnectLoop();
  void ActionLoop();
  bool Write(const upkeep::v1::AgentMessage& msg);
  void OnObservation(const upkeep::v1::StackObservation& o, bool event_driven);

  const AgentClientOptions options_;
  std::unique_ptr<StackObserver> observer_;
  std::unique_ptr<Executor> executor_;
  std::shared_ptr<grpc::Channel> channel_;

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool observing_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  grpc::ClientReaderWriter<upkeep::v1::AgentMessage, upkeep::v1::ControllerMessage>* stream_
      ABSL_GUARDED_BY(mu_) = nullptr;
  std::deque<upkeep::v1::Action> actions_ ABSL_GUARDED_BY(mu_);
  std::deque<upkeep::v1::ActionResult> unsent_ ABSL_GUARDED_BY(mu_);
  absl::Mutex write_mu_;  // one writer on the stream at a time
  std::thread connect_thread_;
  std::thread action_thread_;
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_DAEMON_AGENT_CLIENT_H_
