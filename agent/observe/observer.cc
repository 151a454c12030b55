#include "agent/observe/observer.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/observe/certificate.h"
#include "agent/observe/disk.h"
#include "agent/observe/ports.h"
#include "agent/observe/prober.h"
#include "agent/proxy/proxy_drivers.h"
#include "agent/runtime/registry.h"
#include "core/log.h"
#include "core/observation.h"
#include "core/proto_time.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;

constexpr absl::Duration kResync = absl::Seconds(5);

void AppendFailingProbeTimes(const v1::StackObservation& o, std::string* key) {
  for (const auto& r : o.proxy().routes()) {
    if (!r.probe().ok())
      absl::StrAppend(key, "|r", r.probe().at().seconds(), ".", r.probe().at().nanos());
  }
  for (const auto& svc : o.services()) {
    if (!svc.probe().ok()) {
      absl::StrAppend(key, "|s", svc.probe().at().seconds(), ".", svc.probe().at().nanos());
    }
  }
}
// A probe's period from its spec: none (a route of a stack stored by a controller from before
// routes had `probe.period`) is the loader's default, 1 s; one shorter than the loader allows
// (kMinProbePeriod in core/manifest/loader.cc; a desired state from elsewhere) is raised to
// it, so no spec can make a probe loop.
absl::Duration ProbePeriodOf(const google::protobuf::Duration& period) {
  const absl::Duration d = FromProto(period);
  if (d <= absl::ZeroDuration()) return absl::Seconds(1);
  return std::max(d, absl::Milliseconds(100));
}
// How soon after its last probe a route may be probed again for a new upstream error.
constexpr absl::Duration kErrorRepoke = absl::Milliseconds(250);

// Whether a new upstream error in the proxy's log calls for probing a route now, given its
// last probe: only one that passed (or none yet), and not one sent within kErrorRepoke.
bool RepokeOnUpstreamError(const v1::ProbeResult& last, absl::Time now) {
  if (!last.has_at()) return true;
  return last.ok() && now - FromProto(last.at()) >= kErrorRepoke;
}
constexpr absl::Duration kForcedWindow = absl::Seconds(3);
// How long a measuring request (sent after a probe timed out) may run.
constexpr absl::Duration kLateLimit = absl::Seconds(30);

// One probed target (a service or a route) and its latest judged state. The fields below
// `tracker` are guarded by the observer's mutex; `thread` belongs to the assembler thread.
struct Target {
  std::string name;  // service name or route path
  bool route = false;
  const v1::ServiceSpec* spec = nullptr;  // points into StackState::spec; null for a route
  ProbeRequest request;
  absl::Duration period;
  std::unique_ptr<HealthTracker> tracker;
  v1::ProbeResult last;
  v1::HealthState health = v1::HEALTH_STATE_UNSPECIFIED;
  bool poke = false;
  // A new upstream error came within kErrorRepoke of the last probe: probe at this time (even
  // if no further error comes), and until then the probe loop waits at most till `wait_until`.
  absl::Time poke_at = absl::InfiniteFuture();
  absl::Time wait_until = absl::InfiniteFuture();
  bool stop = false;
  // Slow or hung? After a probe times out, the same request is sent again and allowed to run
  // up to kLateLimit; `late` keeps what it measured (cleared by the next probe that passes).
  bool measuring = false;
  v1::ProbeResult late;
  std::atomic<bool> cancel{false};
  std::thread measurer;  // started and joined by `thread` only
  std::thread thread;
};

// One desired stack. Created and destroyed only by the assembler thread; everything but
// last_sent/last_sent_at and the targets' judged state is immutable once published.
struct StackState {
  v1::Stack spec;
  Runtime* runtime = nullptr;  // owned by the registry
  std::string runtime_error;
  std::shared_ptr<ProxyDriver> proxy;
  std::map<std::string, std::unique_ptr<Target>> targets;  // "svc:NAME" / "route:PATH"
  std::string last_sent;
  absl::Time last_sent_at = absl::InfinitePast();
  // Declared last: destroyed first, so no callback runs into a half-destroyed state.
  std::unique_ptr<Subscription> runtime_watch;
  std::unique_ptr<Subscription> proxy_watch;
};

// What Build needs of a target, copied under the lock.
struct TargetView {
  v1::ProbeResult last;
  v1::HealthState health = v1::HEALTH_STATE_UNSPECIFIED;
  int failures = 0;
  absl::Time judged_start = absl::InfinitePast();  // the start the health was judged on
  v1::ProbeResult late;
};

// True when a target's latest probe or its judged health belongs to a process that ran before
// the one observed now (a restart landed between the probe and this observation).
bool JudgedOnAnEarlierStart(const v1::ServiceObservation& so, const TargetView& view) {
  if (!so.has_started_at()) return false;
  const absl::Time started = FromProto(so.started_at());
  if (view.last.has_at() && FromProto(view.last.at()) < started) return true;
  return view.judged_start != absl::InfinitePast() && view.judged_start != started;
}

class ObserverImpl : public StackObserver {
 public:
  ObserverImpl(ObserverOptions options, RuntimeRegistry* runtimes, ProxyDrivers* proxies)
      : options_(std::move(options)),
        clock_(options_.clock),
        runtimes_(runtimes),
        proxies_(proxies) {}
  ~ObserverImpl() override { Stop(); }

  void SetDesired(const std::vector<v1::Stack>& stacks) override {
    absl::MutexLock lock(&mu_);
    pending_ = stacks;
    has_pending_ = true;
  }

  v1::StackObservation ObserveOnce(const v1::Stack& stack) override {
    std::string runtime_error;
    Runtime* runtime = ResolveRuntime(stack, &runtime_error);
    std::shared_ptr<ProxyDriver> proxy = proxies_->For(stack);
    v1::StackObservation o = Header(stack);
    std::vector<ProbeRequest> requests;
    std::vector<int> service_index;
    ListenerSnapshot listeners;
    for (const auto& svc : stack.spec().services()) {
      v1::ServiceObservation* so = o.add_services();
      *so = runtime != nullptr ? runtime->Inspect(svc) : v1::ServiceObservation();
      so->set_name(svc.name());
      if (runtime == nullptr) so->set_error(runtime_error);
      for (const auto& l : listeners.Of(so->pid())) *so->add_listening() = l;
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
    if (proxy != nullptr) proxy->Observe(o.mutable_proxy());
    for (size_t i = 0; i < route_paths.size(); ++i) {
      v1::RouteObservation* r = o.mutable_proxy()->add_routes();
      r->set_path(route_paths[i]);
      *r->mutable_probe() = results[service_index.size() + i];
    }
    AddCertificates(stack, &certificates_, o.mutable_proxy());
    for (auto& fs : ObserveDisks(stack, options_.data_dir)) {
      *o.mutable_host()->add_filesystems() = std::move(fs);
    }
    return o;
  }

  void Start(Callback callback) override {
    absl::MutexLock lock(&mu_);
    if (assembler_.joinable()) return;
    callback_ = std::move(callback);
    stopping_ = false;
    dirty_ = true;
    assembler_ = std::thread([this] { AssembleLoop(); });
  }

  void Stop() override {
    std::thread assembler;
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      assembler = std::move(assembler_);
    }
    // The assembler stops every probe and watch on its way out.
    if (assembler.joinable()) assembler.join();
  }

  void RefreshNow() override {
    absl::MutexLock lock(&mu_);
    for (auto& [name, st] : stacks_) {
      for (auto& [key, t] : st->targets) t->poke = true;
    }
    forced_until_ = absl::Now() + kForcedWindow;
    dirty_ = true;
  }

 private:
  Runtime* ResolveRuntime(const v1::Stack& stack, std::string* error) {
    absl::StatusOr<Runtime*> rt = runtimes_->Get(stack);
    if (rt.ok()) return *rt;
    *error = absl::StrCat("no runtime for this stack: ", rt.status().message());
    UPKEEP_LOG(error, "runtime_unavailable",
               {{"stack", stack.metadata().name()}, {"error", std::string(rt.status().message())}});
    return nullptr;
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

  // Runtime watch callback (a runtime thread): re-probe that service now.
  void OnRuntimeChange(const std::string& stack, const std::string& service) {
    absl::MutexLock lock(&mu_);
    auto it = stacks_.find(stack);
    if (it != stacks_.end()) {
      auto t = it->second->targets.find("svc:" + service);
      if (t != it->second->targets.end()) t->second->poke = true;
    }
    dirty_ = true;
  }

  // Proxy watch callback (the driver's thread): a new upstream error probes now the routes
  // that last passed. A route already failing keeps its period: its own failing probes write
  // such errors, and poking it for them would probe it in a loop as fast as nginx answers (a
  // thousand probes and observations a second, which buried the controller in stale ones).
  // At most once per kErrorRepoke: real traffic can log errors by the hundred per second. An
  // error within kErrorRepoke of the last probe defers the probe to the end of that window
  // rather than dropping it (the next error may never come: one failed request is enough).
  void OnProxyChange(const std::string& stack, ProxyDriver::Change change) {
    absl::MutexLock lock(&mu_);
    auto it = stacks_.find(stack);
    if (it != stacks_.end() && change == ProxyDriver::Change::kUpstreamError) {
      const absl::Time now = clock_->Now();
      bool poked = false;
      for (auto& [key, t] : it->second->targets) {
        if (!t->route) continue;
        if (RepokeOnUpstreamError(t->last, now)) {
          t->poke = poked = true;
        } else if (t->last.ok()) {
          t->poke_at = std::min(t->poke_at, FromProto(t->last.at()) + kErrorRepoke);
        }
      }
      // A poked route reports with its probe's result: an observation built now would only
      // delay the one that carries it (the errors alone decide nothing; they go with it, or
      // with the next resync if the route still passes).
      if (poked) return;
    }
    dirty_ = true;
  }

  // On the assembler thread: builds the new stacks (runtime lookups and watches outside the
  // lock), swaps them in, then stops the old ones' probes and watches.
  void Apply(const std::vector<v1::Stack>& stacks) {
    std::map<std::string, std::unique_ptr<StackState>> next;
    std::vector<std::string> names;
    for (const auto& s : stacks) {
      auto st = std::make_unique<StackState>();
      st->spec = s;
      const std::string name = s.metadata().name();
      names.push_back(name);
      st->runtime = ResolveRuntime(s, &st->runtime_error);
      st->proxy = proxies_->For(s);
      for (const auto& svc : st->spec.spec().services()) {
        auto t = std::make_unique<Target>();
        t->name = svc.name();
        t->spec = &svc;
        t->request = ServiceProbe(svc);
        t->period = ProbePeriodOf(svc.probe().period());
        t->tracker = std::make_unique<HealthTracker>(svc.probe());
        st->targets["svc:" + svc.name()] = std::move(t);
      }
      for (const auto& r : st->spec.spec().proxy().routes()) {
        if (!r.has_probe()) continue;
        auto t = std::make_unique<Target>();
        t->name = r.path();
        t->route = true;
        t->request = RouteProbe(r);
        t->period = ProbePeriodOf(r.probe().period());
        st->targets["route:" + r.path()] = std::move(t);
      }
      if (st->runtime != nullptr) {
        std::vector<v1::ServiceSpec> services(s.spec().services().begin(),
                                              s.spec().services().end());
        st->runtime_watch = st->runtime->Watch(
            std::move(services),
            [this, name](const std::string& service) { OnRuntimeChange(name, service); });
      }
      if (st->proxy != nullptr) {
        st->proxy_watch =
            st->proxy->Watch([this, name](ProxyDriver::Change c) { OnProxyChange(name, c); });
      }
      next[name] = std::move(st);
    }
    std::map<std::string, std::unique_ptr<StackState>> old;
    {
      absl::MutexLock lock(&mu_);
      old.swap(stacks_);
      stacks_ = std::move(next);
      MarkStoppedLocked(old);
      for (auto& [name, st] : stacks_) {
        for (auto& [key, t] : st->targets) {
          t->thread = std::thread([this, s = st.get(), t = t.get()] { ProbeLoop(s, t); });
        }
      }
      dirty_ = true;
    }
    Retire(std::move(old));
    proxies_->Retain(names);
  }

  void MarkStoppedLocked(std::map<std::string, std::unique_ptr<StackState>>& stacks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (auto& [name, st] : stacks) {
      for (auto& [key, t] : st->targets) t->stop = true;
    }
  }

  // Joins the probe threads of stacks already out of stacks_ (and marked stopped), then ends
  // their watches. Never under the lock: probes and watch callbacks take it.
  static void Retire(std::map<std::string, std::unique_ptr<StackState>> stacks) {
    for (auto& [name, st] : stacks) {
      for (auto& [key, t] : st->targets) {
        if (t->thread.joinable()) t->thread.join();
      }
    }
    stacks.clear();
  }

  // One loop per target, so a hung upstream only delays its own probes. The runtime call and
  // the probe run outside the lock.
  void ProbeLoop(StackState* st, Target* t) {
    RunProbes(st, t);
    t->cancel = true;
    if (t->measurer.joinable()) t->measurer.join();
  }

  // Sends `t`'s request again with a long timeout, to tell a slow target from a hung one.
  void Measure(Target* t) {
    ProbeRequest r = t->request;
    r.timeout = kLateLimit;
    r.cancel = &t->cancel;
    const v1::ProbeResult result = Probe(r);
    absl::MutexLock lock(&mu_);
    t->measuring = false;
    // An answer, however late (any HTTP status, or a TCP connect), means alive.
    if (result.status_code() > 0 || result.ok()) {
      t->late = result;
      dirty_ = true;
    }
  }

  void RunProbes(StackState* st, Target* t) {
    bool measure = false;
    while (true) {
      if (measure) {
        measure = false;
        if (t->measurer.joinable()) t->measurer.join();  // finished: `measuring` was false
        t->measurer = std::thread([this, t] { Measure(t); });
      }
      v1::ServiceObservation inspected;
      bool running = true;
      if (t->spec != nullptr && st->runtime != nullptr) {
        inspected = st->runtime->Inspect(*t->spec);
        running = inspected.running();
      }
      v1::ProbeResult result;
      if (running) {
        const absl::Time sent = clock_->Now();
        result = Probe(t->request);
        *result.mutable_at() = ToProto(sent);  // on the observer's clock, as the window is
      }
      absl::MutexLock lock(&mu_);
      if (t->stop) return;
      const v1::HealthState before = t->health;
      const bool ok_before = t->last.ok();
      const int status_before = t->last.status_code();
      if (!running) {
        t->health = v1::HEALTH_STATE_UNSPECIFIED;
        t->last = v1::ProbeResult();
        t->last.set_error("not running");
        *t->last.mutable_at() = ToProto(clock_->Now());
        if (t->tracker) *t->tracker = HealthTracker(t->spec->probe());
      } else {
        t->last = result;
        if (result.ok()) t->late.Clear();
        if (t->spec != nullptr && result.error() == "timeout" && !t->measuring) {
          t->measuring = true;
          measure = true;
        }
        if (t->tracker) {
          const absl::Time started =
              inspected.has_started_at() ? FromProto(inspected.started_at()) : absl::InfinitePast();
          t->health = t->tracker->Update(result, started, clock_->Now());
        }
      }
      if (t->health != before || t->last.ok() != ok_before ||
          t->last.status_code() != status_before || absl::Now() < forced_until_) {
        dirty_ = true;
      }
      t->wait_until = clock_->Now() + t->period;
      while (!t->poke && !t->stop) {
        t->wait_until = std::min(t->wait_until, t->poke_at);
        // A timeout, not a deadline: the clock may be simulated (it is then looked at again
        // after what was left, real time).
        const absl::Duration left = t->wait_until - clock_->Now();
        if (left <= absl::ZeroDuration()) break;
        mu_.AwaitWithTimeout(
            absl::Condition(
                +[](Target* x) { return x->poke || x->stop || x->poke_at < x->wait_until; }, t),
            left);
      }
      t->poke = false;
      t->poke_at = absl::InfiniteFuture();
      if (t->stop) return;
    }
  }

  // Outside the lock: runtime calls (Docker HTTP), /proc and log reads.
  v1::StackObservation Build(const StackState& st, const std::map<std::string, TargetView>& views) {
    v1::StackObservation o = Header(st.spec);
    ListenerSnapshot listeners;
    for (const auto& svc : st.spec.spec().services()) {
      v1::ServiceObservation* so = o.add_services();
      if (st.runtime != nullptr) {
        *so = st.runtime->Inspect(svc);
      } else {
        so->set_error(st.runtime_error);
      }
      so->set_name(svc.name());
      for (const auto& l : listeners.Of(so->pid())) *so->add_listening() = l;
      auto it = views.find("svc:" + svc.name());
      if (it != views.end() && so->running()) {
        if (JudgedOnAnEarlierStart(*so, it->second)) {
          // Restarted since the last probe was sent: nothing is known of the new process yet.
          so->set_health(v1::HEALTH_STATE_STARTING);
          continue;
        }
        *so->mutable_probe() = it->second.last;
        so->set_health(it->second.health);
        so->set_consecutive_failures(it->second.failures);
        const v1::ProbeResult& late = it->second.late;
        if (late.has_latency() &&
            (!so->has_started_at() || FromProto(late.at()) >= FromProto(so->started_at()))) {
          *so->mutable_probe()->mutable_late_latency() = late.latency();
          so->mutable_probe()->set_late_status_code(late.status_code());
          *so->mutable_probe()->mutable_late_at() = late.at();
        }
      }
    }
    if (st.proxy != nullptr) {
      st.proxy->Observe(o.mutable_proxy());
      for (const auto& r : st.spec.spec().proxy().routes()) {
        auto it = views.find("route:" + r.path());
        if (it == views.end() || !it->second.last.has_at()) continue;
        v1::RouteObservation* ro = o.mutable_proxy()->add_routes();
        ro->set_path(r.path());
        *ro->mutable_probe() = it->second.last;
      }
      AddCertificates(st.spec, &certificates_, o.mutable_proxy());
    }
    for (auto& fs : ObserveDisks(st.spec, options_.data_dir)) {
      *o.mutable_host()->add_filesystems() = std::move(fs);
    }
    return o;
  }

  bool WorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return dirty_ || stopping_ || has_pending_;
  }

  void AssembleLoop() {
    while (true) {
      std::vector<v1::Stack> desired;
      bool apply = false;
      {
        absl::MutexLock lock(&mu_);
        absl::Time next_resync = absl::Now() + kResync;
        for (const auto& [name, st] : stacks_) {
          next_resync = std::min(next_resync, st->last_sent_at + kResync);
        }
        mu_.AwaitWithDeadline(absl::Condition(this, &ObserverImpl::WorkOrStopping), next_resync);
        if (stopping_) break;
        if (has_pending_) {
          desired = std::move(pending_);
          pending_.clear();
          has_pending_ = false;
          apply = true;
        }
      }
      if (apply) {
        Apply(desired);
        continue;
      }
      Assemble();
    }
    // Shutting down: stop every probe and watch; keep the desired state for a later Start.
    std::map<std::string, std::unique_ptr<StackState>> old;
    {
      absl::MutexLock lock(&mu_);
      old.swap(stacks_);
      MarkStoppedLocked(old);
      if (!has_pending_) {
        for (const auto& [name, st] : old) pending_.push_back(st->spec);
        has_pending_ = !old.empty();
      }
    }
    Retire(std::move(old));
  }

  void Assemble() {
    struct Job {
      StackState* st;
      std::map<std::string, TargetView> views;
      v1::StackObservation observation;
    };
    std::vector<Job> jobs;
    bool event;
    Callback cb;
    {
      absl::MutexLock lock(&mu_);
      event = dirty_;
      dirty_ = false;
      const absl::Time now = absl::Now();
      for (auto& [name, st] : stacks_) {
        if (!event && now - st->last_sent_at < kResync) continue;
        Job job{st.get(), {}, {}};
        for (const auto& [key, t] : st->targets) {
          job.views[key] =
              TargetView{t->last, t->health, t->tracker ? t->tracker->consecutive_failures() : 0,
                         t->tracker ? t->tracker->started_at() : absl::InfinitePast(), t->late};
        }
        jobs.push_back(std::move(job));
      }
      cb = callback_;
    }
    if (jobs.empty()) return;
    // Only this thread changes stacks_, so the StackStates stay put while we build.
    for (auto& job : jobs) job.observation = Build(*job.st, job.views);
    std::vector<v1::StackObservation> out;
    {
      absl::MutexLock lock(&mu_);
      const absl::Time now = absl::Now();
      const bool forced = now < forced_until_;
      for (auto& job : jobs) {
        std::string sem = SemanticKey(job.observation);
        // While something fails, each new probe is new evidence (the controller judges a route
        // only on a probe taken after the upstream's last start or nginx's last repair): its
        // time counts as a change, so it is not held back until the next resync.
        AppendFailingProbeTimes(job.observation, &sem);
        const bool changed = sem != job.st->last_sent;
        if (!changed && !forced && now - job.st->last_sent_at < kResync) continue;
        job.st->last_sent = std::move(sem);
        job.st->last_sent_at = now;
        out.push_back(std::move(job.observation));
      }
    }
    if (cb) {
      for (const auto& o : out) cb(o, event);
    }
  }

  const ObserverOptions options_;
  Clock* const clock_;
  CertificateCache certificates_;
  RuntimeRegistry* const runtimes_;
  ProxyDrivers* const proxies_;
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<StackState>> stacks_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::Stack> pending_ ABSL_GUARDED_BY(mu_);
  bool has_pending_ ABSL_GUARDED_BY(mu_) = false;
  Callback callback_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time forced_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::thread assembler_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<StackObserver>> StackObserver::Create(const ObserverOptions& options,
                                                                     RuntimeRegistry* runtimes,
                                                                     ProxyDrivers* proxies) {
  if (runtimes == nullptr || proxies == nullptr) {
    return absl::InvalidArgumentError(
        "observer: a runtime registry and proxy drivers are required");
  }
  if (options.clock == nullptr) return absl::InvalidArgumentError("observer: a clock is required");
  return std::unique_ptr<StackObserver>(new ObserverImpl(options, runtimes, proxies));
}

}  // namespace upkeep::agent
