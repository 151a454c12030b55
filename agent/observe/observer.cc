#include "agent/observe/observer.h"

#include <map>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/docker/docker_runtime.h"
#include "agent/observe/nginx.h"
#include "agent/observe/ports.h"
#include "agent/observe/process_runtime.h"
#include "agent/observe/prober.h"
#include "core/log.h"
#include "core/observation.h"
#include "core/proto_time.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;

constexpr absl::Duration kResync = absl::Seconds(5);
constexpr absl::Duration kRoutePeriod = absl::Seconds(1);
constexpr absl::Duration kTick = absl::Milliseconds(20);

// The latest judged probe state of one target (a service or a route).
struct Target {
  std::string name;  // service name or route path
  bool route = false;
  ProbeRequest request;
  absl::Duration period;
  std::unique_ptr<HealthTracker> tracker;
  v1::ProbeResult last;
  v1::HealthState health = v1::HEALTH_STATE_UNSPECIFIED;
  bool poke = false;
};

struct StackState {
  v1::Stack spec;
  Runtime* runtime = nullptr;  // owned by the observer
  std::unique_ptr<NginxDriver> nginx;
  std::map<std::string, std::unique_ptr<Target>> targets;  // "svc:NAME" / "route:PATH"
  std::string last_sent;
  absl::Time last_sent_at = absl::InfinitePast();
  pid_t nginx_master = -1;  // last seen, to notice nginx stopping or starting at once
};


class ObserverImpl : public StackObserver {
 public:
  explicit ObserverImpl(ObserverOptions options) : options_(std::move(options)) {}
  ~ObserverImpl() override { Stop(); }

  void SetDesired(const std::vector<v1::Stack>& stacks) override {
    StopProbes();
    absl::MutexLock lock(&mu_);
    std::map<std::string, std::unique_ptr<StackState>> next;
    for (const auto& s : stacks) {
      auto st = std::make_unique<StackState>();
      st->spec = s;
      st->runtime = RuntimeLocked(s);
      if (s.spec().has_proxy()) {
        auto old = stacks_.find(s.metadata().name());
        if (old != stacks_.end() && old->second->nginx != nullptr) {
          st->nginx = std::move(old->second->nginx);  // keeps its error-log position
          st->nginx->SetSpec(s.spec().proxy().nginx());
        } else {
          st->nginx = std::make_unique<NginxDriver>(s.spec().proxy().nginx());
        }
      }
      for (const auto& svc : s.spec().services()) {
        auto t = std::make_unique<Target>();
        t->name = svc.name();
        t->request = ServiceProbe(svc);
        t->period = DurationOr(svc.probe().period(), absl::Seconds(1));
        t->tracker = std::make_unique<HealthTracker>(svc.probe());
        st->targets["svc:" + svc.name()] = std::move(t);
      }
      for (const auto& r : s.spec().proxy().routes()) {
        if (!r.has_probe()) continue;
        auto t = std::make_unique<Target>();
        t->name = r.path();
        t->route = true;
        t->request = RouteProbe(r);
        t->period = kRoutePeriod;
        st->targets["route:" + r.path()] = std::move(t);
      }
      if (st->runtime != nullptr) {
        std::vector<v1::ServiceSpec> services(s.spec().services().begin(),
                                              s.spec().services().end());
        const std::string stack_name = s.metadata().name();
        st->runtime->Watch(services, [this, stack_name](const std::string& service) {
          OnRuntimeChange(stack_name, service);
        });
      }
      next[s.metadata().name()] = std::move(st);
    }
    stacks_ = std::move(next);
    if (started_) StartProbesLocked();
    dirty_ = true;
  }

  v1::StackObservation ObserveOnce(const v1::Stack& stack) override {
    Runtime* runtime;
    NginxDriver* nginx = nullptr;
    std::unique_ptr<NginxDriver> own_nginx;
    {
      absl::MutexLock lock(&mu_);
      runtime = RuntimeLocked(stack);
      auto it = stacks_.find(stack.metadata().name());
      if (it != stacks_.end()) nginx = it->second->nginx.get();
    }
    if (nginx == nullptr && stack.spec().has_proxy()) {
      own_nginx = std::make_unique<NginxDriver>(stack.spec().proxy().nginx());
      nginx = own_nginx.get();
    }
    v1::StackObservation o = Header(stack);
    std::vector<ProbeRequest> requests;
    std::vector<int> service_index;
    const std::vector<Listener> listeners = ListListeners();
    for (const auto& svc : stack.spec().services()) {
      v1::ServiceObservation* so = o.add_services();
      *so = runtime != nullptr ? runtime->Inspect(svc) : v1::ServiceObservation();
      so->set_name(svc.name());
      if (runtime == nullptr) so->set_error("no runtime for this stack");
      for (const auto& l : ListenersOf(so->pid(), listeners)) *so->add_listening() = l;
      requests.push_back(ServiceProbe(svc));
      service_index.push_back(o.services_size() - 1);
    }
    std::vector<std::string> route_paths;
    for (const auto& r : stack.spec().proxy().routes()) {
      if (!r.has_probe()) continue;
      requests.push_back(RouteProbe(r));
      route_paths.push_back(r.path());
    }
    const std::vector<v1::ProbeResult> results = ProbeAll(requests);
    for (size_t i = 0; i < service_index.size(); ++i) {
      v1::ServiceObservation* so = o.mutable_services(service_index[i]);
      *so->mutable_probe() = results[i];
      if (so->running()) {
        so->set_health(results[i].ok() ? v1::HEALTH_STATE_HEALTHY : v1::HEALTH_STATE_UNHEALTHY);
        so->set_consecutive_failures(results[i].ok() ? 0 : 1);
      }
    }
    if (nginx != nullptr) nginx->Fill(o.mutable_proxy());
    for (size_t i = 0; i < route_paths.size(); ++i) {
      v1::RouteObservation* r = o.mutable_proxy()->add_routes();
      r->set_path(route_paths[i]);
      *r->mutable_probe() = results[service_index.size() + i];
    }
    return o;
  }

  void Start(Callback callback) override {
    absl::MutexLock lock(&mu_);
    callback_ = std::move(callback);
    started_ = true;
    StartProbesLocked();
    assembler_ = std::thread([this] { AssembleLoop(); });
  }

  void Stop() override {
    StopProbes();
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      started_ = false;
    }
    if (assembler_.joinable()) assembler_.join();
    absl::MutexLock lock(&mu_);
    stopping_ = false;
  }

  Runtime* RuntimeFor(const v1::Stack& stack) override {
    absl::MutexLock lock(&mu_);
    return RuntimeLocked(stack);
  }

  NginxDriver* ProxyFor(const v1::Stack& stack) override {
    absl::MutexLock lock(&mu_);
    auto it = stacks_.find(stack.metadata().name());
    if (it != stacks_.end() && it->second->nginx != nullptr) return it->second->nginx.get();
    if (!stack.spec().has_proxy()) return nullptr;
    auto& own = detached_nginx_[stack.metadata().name()];
    if (own == nullptr) own = std::make_unique<NginxDriver>(stack.spec().proxy().nginx());
    return own.get();
  }

  void RefreshNow() override {
    absl::MutexLock lock(&mu_);
    for (auto& [name, st] : stacks_) {
      for (auto& [key, t] : st->targets) t->poke = true;
    }
    forced_until_ = absl::Now() + absl::Seconds(3);
    dirty_ = true;
  }

 private:
  Runtime* RuntimeLocked(const v1::Stack& stack) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::string key = stack.spec().runtime() == v1::RUNTIME_KIND_DOCKER
                                ? "docker"
                                : "process:" + stack.metadata().name();
    auto it = runtimes_.find(key);
    if (it != runtimes_.end()) return it->second.get();
    absl::StatusOr<std::unique_ptr<Runtime>> rt =
        stack.spec().runtime() == v1::RUNTIME_KIND_DOCKER
            ? CreateDockerRuntime(options_.docker_socket.empty() ? "/var/run/docker.sock"
                                                                 : options_.docker_socket)
            : CreateProcessRuntime(
                  absl::StrCat(options_.data_dir, "/services/", stack.metadata().name()));
    if (!rt.ok()) {
      UPKEEP_LOG(error, "runtime_unavailable",
                 {{"stack", stack.metadata().name()}, {"error", std::string(rt.status().message())}});
      return nullptr;
    }
    Runtime* raw = rt->get();
    runtimes_[key] = std::move(*rt);
    return raw;
  }

  v1::StackObservation Header(const v1::Stack& stack) const {
    v1::StackObservation o;
    o.set_stack(stack.metadata().name());
    o.mutable_host()->set_host_id(options_.host_id);
    o.mutable_host()->set_agent_connected(true);
    *o.mutable_host()->mutable_last_heard() = ToProto(absl::Now());
    *o.mutable_observed_at() = ToProto(absl::Now());
    return o;
  }

  void OnRuntimeChange(const std::string& stack, const std::string& service) {
    absl::MutexLock lock(&mu_);
    auto it = stacks_.find(stack);
    if (it != stacks_.end()) {
      auto t = it->second->targets.find("svc:" + service);
      if (t != it->second->targets.end()) t->second->poke = true;
    }
    dirty_ = true;
  }

  void StartProbesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    probes_stop_ = false;
    for (auto& [name, st] : stacks_) {
      for (auto& [key, t] : st->targets) {
        probe_threads_.emplace_back([this, s = st.get(), t = t.get()] { ProbeLoop(s, t); });
      }
    }
  }

  void StopProbes() {
    std::vector<std::thread> threads;
    {
      absl::MutexLock lock(&mu_);
      probes_stop_ = true;
      threads.swap(probe_threads_);
    }
    for (auto& t : threads) t.join();
  }

  // One loop per target, so a hung upstream only delays its own probes.
  void ProbeLoop(StackState* st, Target* t) {
    const v1::ServiceSpec* spec = nullptr;
    for (const auto& s : st->spec.spec().services()) {
      if (!t->route && s.name() == t->name) spec = &s;
    }
    while (true) {
      v1::ServiceObservation inspected;
      bool running = true;
      if (spec != nullptr && st->runtime != nullptr) {
        inspected = st->runtime->Inspect(*spec);
        running = inspected.running();
      }
      v1::ProbeResult result;
      if (running) result = Probe(t->request);
      {
        absl::MutexLock lock(&mu_);
        if (probes_stop_) return;
        const v1::HealthState before = t->health;
        const bool ok_before = t->last.ok();
        const int status_before = t->last.status_code();
        if (!running) {
          t->health = v1::HEALTH_STATE_UNSPECIFIED;
          t->last = v1::ProbeResult();
          t->last.set_error("not running");
          *t->last.mutable_at() = ToProto(absl::Now());
          if (t->tracker) *t->tracker = HealthTracker(spec->probe());
        } else {
          t->last = result;
          if (t->tracker) {
            const absl::Time started = inspected.has_started_at()
                                           ? FromProto(inspected.started_at())
                                           : absl::InfinitePast();
            t->health = t->tracker->Update(result, started, absl::Now());
          }
        }
        if (t->health != before || t->last.ok() != ok_before ||
            t->last.status_code() != status_before || absl::Now() < forced_until_) {
          dirty_ = true;
        }
        const absl::Time next = absl::Now() + t->period;
        struct Wake {
          Target* t;
          bool* stop;
        } w{t, &probes_stop_};
        mu_.AwaitWithDeadline(
            absl::Condition(+[](Wake* x) { return x->t->poke || *x->stop; }, &w), next);
        t->poke = false;
        if (probes_stop_) return;
      }
    }
  }

  v1::StackObservation Build(StackState* st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::StackObservation o = Header(st->spec);
    const std::vector<Listener> listeners = ListListeners();
    for (const auto& svc : st->spec.spec().services()) {
      v1::ServiceObservation* so = o.add_services();
      if (st->runtime != nullptr) {
        *so = st->runtime->Inspect(svc);
      } else {
        so->set_error("no runtime for this stack");
      }
      so->set_name(svc.name());
      for (const auto& l : ListenersOf(so->pid(), listeners)) *so->add_listening() = l;
      auto it = st->targets.find("svc:" + svc.name());
      if (it != st->targets.end() && so->running()) {
        *so->mutable_probe() = it->second->last;
        so->set_health(it->second->health);
        so->set_consecutive_failures(it->second->tracker->consecutive_failures());
      }
    }
    if (st->nginx != nullptr) {
      st->nginx->Fill(o.mutable_proxy());
      for (const auto& r : st->spec.spec().proxy().routes()) {
        auto it = st->targets.find("route:" + r.path());
        if (it == st->targets.end() || !it->second->last.has_at()) continue;
        v1::RouteObservation* ro = o.mutable_proxy()->add_routes();
        ro->set_path(r.path());
        *ro->mutable_probe() = it->second->last;
      }
    }
    return o;
  }

  void AssembleLoop() {
    while (true) {
      std::vector<std::pair<v1::StackObservation, bool>> out;
      Callback cb;
      {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(absl::Condition(this, &ObserverImpl::DirtyOrStopping), kTick);
        if (stopping_) return;
        bool log_news = false;
        for (auto& [name, st] : stacks_) {
          if (st->nginx != nullptr) {
            const pid_t master = st->nginx->MasterPid();
            if (master != st->nginx_master) {
              st->nginx_master = master;
              log_news = true;
            }
          }
          if (st->nginx != nullptr && st->nginx->PollErrorLog()) {
            // An upstream error just appeared in nginx's log: probe the routes now.
            log_news = true;
            for (auto& [key, t] : st->targets) {
              if (t->route) t->poke = true;
            }
          }
        }
        const bool event = dirty_ || log_news;
        dirty_ = false;
        const absl::Time now = absl::Now();
        for (auto& [name, st] : stacks_) {
          if (!event && now - st->last_sent_at < kResync) continue;
          v1::StackObservation o = Build(st.get());
          std::string sem = SemanticKey(o);
          const bool changed = sem != st->last_sent;
          const bool forced = now < forced_until_;
          if (!changed && !forced && now - st->last_sent_at < kResync) continue;
          st->last_sent = std::move(sem);
          st->last_sent_at = now;
          out.emplace_back(std::move(o), event);
        }
        cb = callback_;
      }
      if (cb) {
        for (auto& [o, event] : out) cb(o, event);
      }
    }
  }

  bool DirtyOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return dirty_ || stopping_; }

  const ObserverOptions options_;
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Runtime>> runtimes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<StackState>> stacks_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<NginxDriver>> detached_nginx_ ABSL_GUARDED_BY(mu_);
  Callback callback_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool probes_stop_ ABSL_GUARDED_BY(mu_) = false;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time forced_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::vector<std::thread> probe_threads_ ABSL_GUARDED_BY(mu_);
  std::thread assembler_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<StackObserver>> StackObserver::Create(
    const ObserverOptions& options) {
  if (options.data_dir.empty()) return absl::InvalidArgumentError("observer: data dir required");
  return std::unique_ptr<StackObserver>(new ObserverImpl(options));
}

}  // namespace upkeep::agent
