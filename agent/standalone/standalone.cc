#include "agent/standalone/standalone.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/base/stop_signal.h"
#include "agent/daemon/host.h"
#include "controller/api/fleet_service.h"
#include "core/log.h"
#include "core/manifest/loader.h"

namespace upkeep::agent {

namespace v1 = upkeep::v1;

namespace {

grpc::Status Refused(const std::string& what) {
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                      absl::StrCat("standalone agent: ", what));
}

}  // namespace

// FleetService over the local loop; what changes desired state or runs commands is refused
// (the manifests are the desired state; this socket only reads and pauses).
class Standalone::Service : public controller::FleetServiceImpl {
 public:
  Service(controller::Reconciler* r, controller::Store* s, std::string manifests)
      : FleetServiceImpl(r, s), manifests_(std::move(manifests)) {}
  grpc::Status Apply(grpc::ServerContext*, const v1::ApplyRequest*, v1::ApplyResponse*) override {
    return Refused(absl::StrCat("edit the manifests in ", manifests_,
                                " instead: they are re-read when they change"));
  }
  grpc::Status DeleteStack(grpc::ServerContext*, const v1::DeleteStackRequest*,
                           v1::DeleteStackResponse*) override {
    return Refused(absl::StrCat("remove the stack from ", manifests_, " instead"));
  }
  grpc::Status RunAction(grpc::ServerContext*, const v1::RunActionRequest*,
                         v1::RunActionResponse*) override {
    return Refused("this socket serves reads and pause/resume only; use `upkeep-agent act`");
  }

 private:
  const std::string manifests_;
};

Standalone::Standalone(StandaloneOptions options, StackObserver* observer, Executor* executor)
    : options_(std::move(options)), observer_(observer), executor_(executor) {}

Standalone::~Standalone() { Stop(); }

absl::StatusOr<std::string> Standalone::ResolveHostId(const StandaloneOptions& options) {
  if (!options.host_id.empty()) return options.host_id;
  const auto loaded = manifest::LoadPath(options.manifests);
  if (!loaded.ok()) {
    std::vector<std::string> errors;
    for (const auto& e : loaded.errors) errors.push_back(e.ToString());
    return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  }
  std::set<std::string> hosts;
  for (const auto& s : loaded.stacks)
    hosts.insert(s.spec().hosts().begin(), s.spec().hosts().end());
  if (hosts.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the manifests in ", options.manifests, " name ", hosts.size(), " hosts (",
                     absl::StrJoin(hosts, ", "), "): say which one this is with --host-id"));
  }
  return *hosts.begin();
}

absl::Status Standalone::Start() {
  // The baseline before the load: a change in between is re-read, not missed.
  watcher_ = std::make_unique<ManifestWatcher>(options_.manifests);
  const auto loaded = manifest::LoadPath(options_.manifests);
  if (!loaded.ok()) {
    std::vector<std::string> errors;
    for (const auto& e : loaded.errors) errors.push_back(e.ToString());
    return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  }
  v1::DesiredState desired;
  for (const auto& s : loaded.stacks) *desired.add_stacks() = s;
  // Pause flags live in the local store: keep what a person set (Create rewrites them from
  // `desired`, so read them back first).
  {
    auto store = controller::OpenSqliteStore(options_.data_dir + "/local");
    if (store.ok()) {
      auto stacks = (*store)->ListStacks();
      auto hosts = (*store)->PausedHosts();
      if (stacks.ok()) {
        for (auto& s : *desired.mutable_stacks()) {
          for (const auto& old : *stacks) {
            if (old.metadata().name() == s.metadata().name()) {
              s.mutable_status()->set_paused(old.status().paused());
            }
          }
        }
      }
      if (hosts.ok()) desired.set_host_paused(hosts->count(options_.host_id) > 0);
    }
  }
  std::vector<v1::Stack> mine;
  for (const auto& s : desired.stacks()) {
    for (const auto& h : s.spec().hosts()) {
      if (h == options_.host_id) mine.push_back(s);
    }
  }
  executor_->SetDesired(mine);
  observer_->SetDesired(mine);
  LocalDeciderOptions o;
  o.data_dir = options_.data_dir;
  o.host_id = options_.host_id;
  o.autonomous = false;
  o.send_action = [this](const v1::Action& a) {
    absl::MutexLock lock(&mu_);
    actions_.push_back(a);
  };
  auto decider = LocalDecider::Create(o, desired, executor_->Finished());
  if (!decider.ok()) return decider.status();
  decider_ = std::move(*decider);

  const std::string sock = socket_path();
  ::unlink(sock.c_str());  // a socket left by a previous run
  service_ =
      std::make_unique<Service>(decider_->reconciler(), decider_->store(), options_.manifests);
  grpc::ServerBuilder b;
  b.AddListeningPort(absl::StrCat("unix:", sock), grpc::InsecureServerCredentials());
  b.RegisterService(service_.get());
  {
    // Created 0600 (not chmod'ed after): nobody else can connect in between.
    const mode_t old = ::umask(0177);
    server_ = b.BuildAndStart();
    ::umask(old);
  }
  if (server_ == nullptr) return absl::UnavailableError(absl::StrCat("cannot listen on ", sock));
  ::chmod(sock.c_str(), 0600);

  decider_->Start();
  LocalDecider* d = decider_.get();
  observer_->Start([d](const v1::StackObservation& o, bool) { d->OnObservation(o); });
  action_thread_ = std::thread([this] { ActionLoop(); });
  watch_thread_ = std::thread([this] { WatchLoop(); });
  UPKEEP_LOG(info, "standalone_started",
             {{"host", options_.host_id},
              {"manifests", options_.manifests},
              {"stacks", absl::StrCat(mine.size())},
              {"socket", sock}});
  return absl::OkStatus();
}

void Standalone::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
  }
  if (watcher_ != nullptr) watcher_->Stop();
  if (watch_thread_.joinable()) watch_thread_.join();
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    ::unlink(socket_path().c_str());
  }
  if (decider_ != nullptr) decider_->Stop();
  if (action_thread_.joinable()) action_thread_.join();
  observer_->Stop();
}

void Standalone::ActionLoop() {
  while (true) {
    v1::Action action;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Standalone* s)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) { return s->stop_ || !s->actions_.empty(); },
          this));
      if (stop_) return;
      action = actions_.front();
      actions_.pop_front();
    }
    decider_->OnActionResult(executor_->Execute(action));
  }
}

bool Standalone::Reload() {
  const auto loaded = manifest::LoadPath(options_.manifests);
  if (!loaded.ok()) {
    for (const auto& e : loaded.errors) {
      UPKEEP_LOG(error, "manifest_invalid", {{"error", e.ToString()}});
    }
    UPKEEP_LOG(error, "manifests_not_applied",
               {{"path", options_.manifests}, {"note", "nothing applied; what runs stays"}});
    return false;
  }
  std::vector<v1::Stack> mine;
  std::set<std::string> names;
  for (const auto& s : loaded.stacks) {
    for (const auto& h : s.spec().hosts()) {
      if (h == options_.host_id) {
        mine.push_back(s);
        names.insert(s.metadata().name());
      }
    }
  }
  controller::Reconciler* r = decider_->reconciler();
  for (const auto& s : r->Stacks()) {
    if (!names.count(s.metadata().name())) (void)r->Delete(s.metadata().name(), "manifests");
  }
  // The executor and observer learn new targets before the loop can decide on them.
  executor_->SetDesired(mine);
  observer_->SetDesired(mine);
  auto applied = r->Apply(mine, false, absl::StrCat("manifests:", options_.manifests));
  if (!applied.ok()) {
    UPKEEP_LOG(error, "apply_failed", {{"error", std::string(applied.status().message())}});
    return false;
  }
  observer_->RefreshNow();
  UPKEEP_LOG(info, "manifests_applied",
             {{"path", options_.manifests}, {"stacks", absl::StrCat(mine.size())}});
  return true;
}

void Standalone::WatchLoop() {
  while (watcher_->WaitForChange()) Reload();
}

int RunStandalone(int argc, char** argv) {
  StandaloneOptions options;
  std::string docker_socket;
  ExecPolicy exec;
  exec.unrestricted = false;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    bool ok = true;
    if (a == "--standalone") {
    } else if (a == "-f" || a == "--manifests") {
      ok = value(&options.manifests);
    } else if (a == "--data") {
      ok = value(&options.data_dir);
    } else if (a == "--host-id") {
      ok = value(&options.host_id);
    } else if (a == "--docker-socket") {
      ok = value(&docker_socket);
    } else if (a == "--allow-exec") {
      std::string dir;
      ok = value(&dir);
      exec.prefixes.push_back(dir);
    } else if (a == "--log-json") {
      json = true;
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr,
                   "usage: upkeep-agent --standalone -f MANIFESTS --data DIR [--host-id ID] "
                   "[--docker-socket PATH] [--allow-exec DIR ...] [--log-json]\n"
                   "upkeep-agent: bad flag %s\n",
                   a.c_str());
      return 2;
    }
  }
  if (options.manifests.empty() || options.data_dir.empty()) {
    std::fprintf(stderr, "upkeep-agent --standalone: -f MANIFESTS and --data DIR are required\n");
    return 2;
  }
  InitLogging("agent", json, spdlog::level::info);
  auto host_id = Standalone::ResolveHostId(options);
  if (!host_id.ok()) {
    UPKEEP_LOG(critical, "agent_start_failed",
               {{"error", std::string(host_id.status().message())}});
    return 1;
  }
  options.host_id = *host_id;
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (absl::Status st = InstallStopSignals(); !st.ok()) {
    UPKEEP_LOG(critical, "agent_start_failed", {{"error", std::string(st.message())}});
    return 1;
  }
  auto agent = MakeAgentHost({options.data_dir, docker_socket, exec}, options.host_id);
  if (!agent.ok()) {
    UPKEEP_LOG(critical, "agent_start_failed", {{"error", std::string(agent.status().message())}});
    return 1;
  }
  Standalone standalone(options, agent->observer.get(), agent->executor.get());
  if (absl::Status st = standalone.Start(); !st.ok()) {
    UPKEEP_LOG(critical, "agent_start_failed", {{"error", std::string(st.message())}});
    return 1;
  }
  WaitForStopSignal();
  UPKEEP_LOG(info, "agent_stopping", {});
  standalone.Stop();
  return 0;
}

}  // namespace upkeep::agent
