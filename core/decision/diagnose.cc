// The seed runbook (shared/seed/000_f1b034315ce1ee42.txt, "Decision Tree") as a function.
// Each step below quotes the runbook line it implements and records its evidence in the path.
#include "core/decision/diagnose.h"

#include <algorithm>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/decision/verify.h"
#include "core/name_hash.h"
#include "core/policy/policy.h"
#include "core/proto_time.h"

namespace upkeep::decision {

namespace internal {

// How the engine records into a Trace (the trace's layout stays its own).
class TraceWriter {
 public:
  using Ref = Trace::Ref;
  explicit TraceWriter(Trace* t) : t_(t) {}

  // A view the trace keeps as it is: it must outlive the trace.
  static Ref View(absl::string_view s) { return Ref{s}; }

  int Node(absl::string_view step, Ref target, Ref decision, int depth) {
    t_->nodes_.push_back(Trace::Node{step, target, decision, depth});
    return static_cast<int>(t_->nodes_.size()) - 1;
  }
  // A string the trace keeps (its slot's capacity reused from earlier diagnoses).
  Ref Keep(absl::string_view s) {
    const int i = Slot();
    t_->strings_[i].assign(s.data(), s.size());
    return Ref{{}, i};
  }
  Ref Keep(std::string&& s) {
    const int i = Slot();
    t_->strings_[i] = std::move(s);
    return Ref{{}, i};
  }
  void Evidence(int node, absl::string_view key, Ref value) {
    t_->evidence_.push_back(Trace::Evidence{node, key, value.owned});
  }
  absl::string_view step(int node) const { return t_->nodes_[node].step; }

 private:
  int Slot() {
    if (t_->strings_used_ == t_->strings_.size()) t_->strings_.emplace_back();
    return static_cast<int>(t_->strings_used_++);
  }
  Trace* const t_;
};

}  // namespace internal

void Trace::Clear() {
  nodes_.clear();
  evidence_.clear();
  strings_used_ = 0;
}

void Trace::AppendTo(upkeep::v1::Diagnosis* d) const {
  auto* path = d->mutable_path();
  const int base = path->size();
  path->Reserve(base + size());
  for (const Node& node : nodes_) {
    upkeep::v1::PathNode* n = path->Add();
    // Each built once and moved in (from a pointer and size, protobuf copies a temporary).
    n->set_step(std::string(node.step));
    // An empty string is the field's default: setting it would only allocate.
    if (const absl::string_view target = Text(node.target); !target.empty()) {
      n->set_target(std::string(target));
    }
    n->set_decision(std::string(Text(node.decision)));
    n->set_depth(node.depth);
  }
  for (const Evidence& e : evidence_) {
    (*path->Mutable(base + e.node)->mutable_evidence())[std::string(e.key)] = strings_[e.value];
  }
}

bool Trace::SamePath(const upkeep::v1::Diagnosis& d) const {
  if (d.path_size() != size()) return false;
  for (int i = 0; i < size(); ++i) {
    const upkeep::v1::PathNode& n = d.path(i);
    if (n.depth() != depth(i) || n.step() != step(i) || n.target() != target(i) ||
        n.decision() != decision(i)) {
      return false;
    }
  }
  return true;
}

namespace {

namespace v1 = upkeep::v1;
using internal::TraceWriter;

// An action whose result has not come back is waited for this long before it is ignored.
// After a start reported success, a service that is not running yet is given this long.
constexpr absl::Duration kStartGrace = absl::Seconds(2);

// "1500ms": built in place (short enough for the string's own buffer: nothing allocated).
std::string Ms(absl::Duration d) {
  char buf[absl::numbers_internal::kFastToBufferSize + 2];
  char* end = absl::numbers_internal::FastIntToBuffer(absl::ToInt64Milliseconds(d), buf);
  *end++ = 'm';
  *end++ = 's';
  return std::string(buf, end);
}

// Stacks are small: up to this many names, finding one is a scan (nothing hashed, nothing
// allocated); past it, a hash.
constexpr int kScanLimit = 4;

// The items of a repeated field by name; of two with one name, the later wins (as in a map
// filled in order). A hash index is built on the first lookup past kScanLimit items.
template <typename T, const std::string& (T::*kName)() const>
class ByName {
 public:
  explicit ByName(const google::protobuf::RepeatedPtrField<T>& items) : items_(items) {}

  const T* Find(absl::string_view name, int hint = -1) const {
    const int i = IndexOf(name, hint);
    return i < 0 ? nullptr : &items_.Get(i);
  }
  // The position of `name`'s item, or -1. `hint`, where it likely is (an observation lists
  // services and routes in the order of the spec), is tried first once the names are known to
  // be unique.
  int IndexOf(absl::string_view name, int hint = -1) const {
    if (items_.size() <= kScanLimit) {
      for (int i = items_.size() - 1; i >= 0; --i) {
        if ((items_.Get(i).*kName)() == name) return i;
      }
      return -1;
    }
    if (index_.empty()) {
      index_.reserve(items_.size());
      for (int i = 0; i < items_.size(); ++i) index_[(items_.Get(i).*kName)()] = i;
      unique_ = static_cast<int>(index_.size()) == items_.size();
    }
    if (unique_ && hint >= 0 && hint < items_.size() && (items_.Get(hint).*kName)() == name) {
      return hint;
    }
    const auto it = index_.find(name);
    return it == index_.end() ? -1 : it->second;
  }
  const T& at(int i) const { return items_.Get(i); }
  int size() const { return items_.size(); }

 private:
  const google::protobuf::RepeatedPtrField<T>& items_;
  mutable absl::flat_hash_map<absl::string_view, int, NameHash> index_;
  mutable bool unique_ = false;
};

// A set of names (views into the inputs): a scan while small, a hash past kScanLimit.
class NameSet {
 public:
  bool contains(absl::string_view name) const {
    if (!big_.empty()) return big_.contains(name);
    return std::find(small_.begin(), small_.end(), name) != small_.end();
  }
  // False when it was there already.
  bool insert(absl::string_view name) {
    if (contains(name)) return false;
    if (small_.size() < kScanLimit) {
      small_.push_back(name);
      return true;
    }
    if (big_.empty()) big_.insert(small_.begin(), small_.end());
    big_.insert(name);
    return true;
  }

 private:
  absl::InlinedVector<absl::string_view, kScanLimit> small_;
  absl::flat_hash_set<absl::string_view, NameHash> big_;
};

// Parses "http://[::1]:8002/x" or "127.0.0.1:8002" into host and port.
bool ParseUpstream(const std::string& upstream, std::string* host, int* port) {
  std::string s = upstream;
  if (auto p = s.find("://"); p != std::string::npos) s = s.substr(p + 3);
  if (auto p = s.find('/'); p != std::string::npos) s = s.substr(0, p);
  std::string port_text;
  if (!s.empty() && s[0] == '[') {
    const auto close = s.find(']');
    if (close == std::string::npos) return false;
    *host = s.substr(1, close - 1);
    if (close + 1 < s.size() && s[close + 1] == ':') port_text = s.substr(close + 2);
  } else {
    const auto colon = s.rfind(':');
    if (colon == std::string::npos) return false;
    *host = s.substr(0, colon);
    port_text = s.substr(colon + 1);
  }
  return absl::SimpleAtoi(port_text, port);
}

class Engine {
 public:
  // Fills `out`, an empty message.
  Engine(const v1::Stack& desired, const v1::StackObservation& observed,
         const policy::History& history, absl::Time now, const DiagnoseOptions& options,
         v1::Diagnosis* out, Trace* trace)
      : desired_(desired),
        observed_(observed),
        history_(history),
        now_(now),
        options_(options),
        specs_(desired.spec().services()),
        services_(observed.services()),
        routes_(observed.proxy().routes()),
        d_(out),
        trace_(trace) {
    d_->set_stack(desired.metadata().name());
    d_->set_host(observed.host().host_id());
    SetProto(now, d_->mutable_at());
  }

  void Run() {
    if (!AgentConnected() || !ObservationFresh()) return Finish(v1::VERDICT_UNKNOWN);
    if (ActionInFlight()) return Finish(v1::VERDICT_WAITING);
    CheckDisks();
    const bool proxy_up = CheckProxy();
    const bool services_ok = CheckServices();
    if (proxy_up && services_ok) CheckRoutes();
    if (proxy_up) CheckCertificates();
    return Finish(Verdict());
  }

 private:
  // ---- the path -------------------------------------------------------------------------
  // Recorded in the trace as views: `step`, `target` and `decision` must outlive the trace
  // (literals, the inputs); a string made here goes through the overloads that keep it.
  int Node(absl::string_view step, absl::string_view target, absl::string_view decision,
           int depth = 0) {
    return trace_.Node(step, TraceWriter::View(target), TraceWriter::View(decision), depth);
  }
  int NodeMade(absl::string_view step, absl::string_view target, std::string decision,
               int depth = 0) {
    return trace_.Node(step, TraceWriter::View(target), trace_.Keep(std::move(decision)), depth);
  }
  int NodeOwnTarget(absl::string_view step, absl::string_view target, absl::string_view decision,
                    int depth = 0) {
    return trace_.Node(step, trace_.Keep(target), TraceWriter::View(decision), depth);
  }
  // A node's evidence, kept only when the caller asked for the explanation: without it the
  // value is neither copied nor stored (a std::string the caller built is simply dropped).
  // A value that costs something to make (formatting a number, a time, a list) is passed as a
  // callable that makes it: [&] { return Ms(age); }, called only when it is kept.
  template <typename V>
  void Ev(int n, absl::string_view k, V&& v) {
    if (!options_.explain) return;
    if constexpr (std::is_invocable_v<V>) {
      Ev(n, k, v());
    } else if constexpr (std::is_same_v<std::decay_t<V>, std::string> && !std::is_reference_v<V>) {
      trace_.Evidence(n, k, trace_.Keep(std::move(v)));
    } else {
      trace_.Evidence(n, k, trace_.Keep(absl::string_view(v)));
    }
  }

  v1::Finding* Find(v1::Severity sev, absl::string_view code, absl::string_view target,
                    std::string message) {
    v1::Finding* f = d_->add_findings();
    f->set_severity(sev);
    f->set_code(code.data(), code.size());
    f->set_target(target.data(), target.size());
    f->set_message(std::move(message));
    return f;
  }

  bool HasFinding(absl::string_view code, absl::string_view target) const {
    for (const auto& f : d_->findings()) {
      if (f.code() == code && f.target() == target) return true;
    }
    return false;
  }

  v1::Action MakeAction(v1::ActionKind kind, absl::string_view target, std::string reason) const {
    v1::Action a;
    a.set_kind(kind);
    a.set_target(target.data(), target.size());
    a.set_stack(desired_.metadata().name());
    a.set_host(observed_.host().host_id());
    a.set_reason(std::move(reason));
    return a;
  }

  // Judges `main` and plans it. `first` (collect logs before a restart, test the config before
  // a start), when given, forms one unit with it: planned before it, with its verdict. Returns
  // the verdict.
  v1::PolicyVerdict Plan(v1::Action main_action, int depth,
                         std::optional<v1::Action> first = std::nullopt) {
    const auto& policy = desired_.spec().policy();
    v1::PlannedAction main =
        policy::Judge(policy, history_, std::move(main_action), now_, options_.paused);
    const std::string& target = main.action().target();
    const int n = NodeOwnTarget("policy", target, v1::PolicyVerdict_Name(main.policy()), depth + 1);
    Ev(n, "reason", main.policy_reason());
    if (main.policy() == v1::POLICY_VERDICT_BUDGET_EXHAUSTED) {
      if (HasFinding("CrashLooping", target)) return main.policy();
      v1::Finding* f = Find(v1::SEVERITY_ALERT, "CrashLooping", target,
                            absl::StrCat(target, " is crash-looping: ", main.policy_reason()));
      (*f->mutable_evidence())["restarts_in_window"] =
          absl::StrCat(policy::RestartsInWindow(policy, history_, target, now_));
      return main.policy();
    }
    if (main.policy() == v1::POLICY_VERDICT_BACKOFF ||
        main.policy() == v1::POLICY_VERDICT_RATE_LIMITED) {
      waiting_ = true;
      return main.policy();
    }
    if (first.has_value()) {
      // Everything of main's verdict but its action.
      main_action = std::move(*main.mutable_action());
      main.clear_action();
      v1::PlannedAction* p = d_->add_actions();
      *p = main;
      *p->mutable_action() = std::move(*first);
      *main.mutable_action() = std::move(main_action);
    }
    v1::PlannedAction* added = d_->add_actions();
    *added = std::move(main);
    return added->policy();
  }

  // ---- 1. "Run: bash scripts/debug_dashboard_remote.sh" — do we see the host at all? -----
  bool AgentConnected() {
    const auto& h = observed_.host();
    const int n = Node("agent.connected", h.host_id(), h.agent_connected() ? "yes" : "no");
    if (h.has_last_heard())
      Ev(n, "last_heard", [&] { return absl::FormatTime(FromProto(h.last_heard())); });
    if (!h.agent_connected()) {
      summary_ = absl::StrCat("agent for host ", h.host_id(), " is not connected: no action");
      return false;
    }
    return true;
  }

  bool ObservationFresh() {
    const absl::Duration stale_after = FromProto(desired_.spec().policy().stale_after());
    const absl::Duration age = now_ - FromProto(observed_.observed_at());
    const bool fresh = observed_.has_observed_at() && age <= stale_after;
    const int n = Node("observation.fresh", "", fresh ? "yes" : "no: stale");
    Ev(n, "age", [&] { return observed_.has_observed_at() ? Ms(age) : "never"; });
    Ev(n, "stale_after", [&] { return Ms(stale_after); });
    if (!fresh) summary_ = "observation is stale: no action";
    return fresh;
  }

  // Verify before escalating: an action whose result has not come back is waited for.
  bool ActionInFlight() {
    const absl::Time timed_out = now_ - kInFlightTimeout;
    const auto history = history_.all();
    for (auto it = history.rbegin(); it != history.rend(); ++it) {
      if (it->dry_run() || it->action().kind() == v1::ACTION_KIND_RESET_BUDGET) continue;
      if (FromProto(it->requested_at()) < timed_out) break;
      if (it->result().id().empty()) {
        const int n =
            Node("action.in_flight", it->action().target(), "yes: waiting for its result");
        Ev(n, "action", v1::ActionKind_Name(it->action().kind()));
        Ev(n, "id", it->action().id());
        summary_ =
            absl::StrCat("waiting for the result of ", v1::ActionKind_Name(it->action().kind()),
                         " on ", it->action().target());
        return true;
      }
    }
    Node("action.in_flight", "", "no");
    return false;
  }

  // The newest executed (not dry-run) record on `target`, if any.
  const v1::ActionRecord* LastOn(absl::string_view target) const {
    const auto records = history_.Of(target);
    for (auto it = records.rbegin(); it != records.rend(); ++it) {
      if (!(*it)->dry_run() && (*it)->action().kind() != v1::ACTION_KIND_RESET_BUDGET) return *it;
    }
    return nullptr;
  }

  // ---- 2. nginx: "sudo systemctl status nginx; sudo nginx -t" ------------------------------
  bool CheckProxy() {
    if (!desired_.spec().has_proxy()) return true;
    const auto& p = observed_.proxy();
    const int n = Node("proxy.running", kProxyTarget, p.master_running() ? "yes" : "no");
    if (p.master_pid() > 0) Ev(n, "master_pid", [&] { return absl::StrCat(p.master_pid()); });
    if (!p.error().empty()) Ev(n, "error", p.error());
    if (p.master_running()) return true;
    // "Check nginx config: sudo nginx -t" — a config that fails the test is not started.
    const v1::ConfigTest test = LatestConfigTest();
    const v1::ActionRecord* last = LastOn(kProxyTarget);
    const bool tested_since_last_action =
        test.ran() && (last == nullptr || FromProto(test.at()) >= FromProto(last->requested_at()));
    if (tested_since_last_action && !test.ok() && NoSpace(test.output()) &&
        !DiskHasRoomAgain(test)) {
      // "No space left on device" is the disk's fault, not the config's: starting cannot help.
      const int t = Node("proxy.config_valid", kProxyTarget, "no: the disk is full: alert", 1);
      Ev(t, "nginx_t", test.output());
      DiskBlamed(kProxyTarget, test.output());
      summary_ = "nginx is down and `nginx -t` finds no space left on the device";
      return false;
    }
    if (tested_since_last_action && !test.ok() && !NoSpace(test.output())) {
      const int t = Node("proxy.config_valid", kProxyTarget, "no: alert", 1);
      Ev(t, "nginx_t", test.output());
      v1::Finding* f = Find(v1::SEVERITY_ALERT, "ConfigInvalid", kProxyTarget,
                            "nginx is down and its config fails `nginx -t`: fix the config");
      (*f->mutable_evidence())["nginx_t"] = test.output();
      summary_ = "nginx is down and its config is invalid";
      return false;
    }
    const int t = Node("proxy.config_valid", kProxyTarget,
                       test.ran() ? (test.ok()                ? "yes"
                                     : NoSpace(test.output()) ? "no space earlier, the disk "
                                                                "has room again: test again"
                                                              : "unknown: test again")
                                  : "untested",
                       1);
    if (test.ran()) Ev(t, "nginx_t", test.output());
    // "nginx down → test its config; valid → start it"
    Plan(MakeAction(v1::ACTION_KIND_START_PROXY, kProxyTarget, "nginx is not running"), 1,
         MakeAction(v1::ACTION_KIND_TEST_PROXY_CONFIG, kProxyTarget,
                    "nginx is not running: test its config before starting it"));
    return false;
  }

  // The newest config test: the agent's observation, or the result of a test-proxy-config
  // action that came back before an observation carrying it. Without this, a failed test
  // whose observation is still on its way is planned again at once (5 tests in 170 ms).
  v1::ConfigTest LatestConfigTest() const {
    v1::ConfigTest t = observed_.proxy().last_config_test();
    const auto records = history_.Of(kProxyTarget);
    for (auto it = records.rbegin(); it != records.rend(); ++it) {
      const v1::ActionRecord& record = **it;
      if (record.dry_run() || record.action().kind() != v1::ACTION_KIND_TEST_PROXY_CONFIG) {
        continue;
      }
      const auto& r = record.result();
      if (r.id().empty() || !r.has_finished_at()) continue;
      if (r.outcome() != v1::ACTION_OUTCOME_SUCCEEDED && r.outcome() != v1::ACTION_OUTCOME_FAILED) {
        continue;
      }
      if (t.ran() && FromProto(t.at()) >= FromProto(r.finished_at())) break;
      t.set_ran(true);
      t.set_ok(r.outcome() == v1::ACTION_OUTCOME_SUCCEEDED);
      t.set_output(r.output().empty() ? r.message() : r.output());
      *t.mutable_at() = r.finished_at();
      break;
    }
    return t;
  }

  // ---- 3. upstream services, dependencies first -------------------------------------------
  // The desired services, each after those it depends on (a cycle, which the manifest loader
  // rejects, is cut at depth 64), each with its position in the spec. A service is done once
  // per name: `done` is indexed by the position of the spec its name finds (its own, unless two
  // share a name).
  using Names = NameSet;
  using Ordered = std::pair<const v1::ServiceSpec*, int>;
  using Order = absl::InlinedVector<Ordered, 32>;
  Order DependencyOrder() const {
    Order order;
    order.reserve(specs_.size());
    absl::InlinedVector<bool, 32> done(specs_.size(), false);
    for (int i = 0; i < specs_.size(); ++i) {
      const v1::ServiceSpec& s = specs_.at(i);
      VisitDependencies(&s, i, specs_.IndexOf(s.name(), i), 0, &done, &order);
    }
    return order;
  }
  void VisitDependencies(const v1::ServiceSpec* s, int position, int key, int depth,
                         absl::InlinedVector<bool, 32>* done, Order* order) const {
    if ((*done)[key] || depth > 64) return;
    for (const auto& d : s->depends_on()) {
      if (const int dep = specs_.IndexOf(d); dep >= 0) {
        VisitDependencies(&specs_.at(dep), dep, dep, depth + 1, done, order);
      }
    }
    if (!(*done)[key]) {
      (*done)[key] = true;
      order->emplace_back(s, position);
    }
  }

  bool CheckServices() {
    bool all_ok = true;
    Names down;
    for (const auto& [spec, position] : DependencyOrder()) {
      const v1::ServiceObservation* found = services_.Find(spec->name(), position);
      const v1::ServiceObservation& o =
          found != nullptr ? *found : v1::ServiceObservation::default_instance();
      if (!CheckService(*spec, o, down)) {
        all_ok = false;
        down.insert(spec->name());
      }
    }
    return all_ok;
  }

  bool CheckService(const v1::ServiceSpec& spec, const v1::ServiceObservation& o,
                    const Names& down) {
    const std::string& name = spec.name();
    // "a service whose dependency is down is not restarted; its dependency is fixed first"
    for (const auto& dep : spec.depends_on()) {
      if (down.contains(dep)) {
        const int n =
            NodeMade("service.dependency_down", name, absl::StrCat("yes: waiting for ", dep));
        Ev(n, "dependency", dep);
        Ev(n, "running", o.running() ? "true" : "false");
        waiting_ = true;
        return false;
      }
    }
    Episode(spec, o);
    if (!o.running() && StoppedByPerson(spec, o)) return false;
    if (!o.error().empty()) {
      const int n = Node("service.observable", name, "no: runtime error");
      Ev(n, "error", o.error());
      Find(v1::SEVERITY_WARNING, "RuntimeError", name, o.error());
      waiting_ = true;
      return false;
    }
    // "Backend container not running? → docker compose up -d backend-aws"
    if (!o.exists() || !o.running()) {
      const int n = Node("service.running", name, o.exists() ? "no: stopped" : "no: missing");
      if (o.exists()) Ev(n, "exit_code", [&] { return absl::StrCat(o.exit_code()); });
      if (o.oom_killed()) Ev(n, "oom_killed", "true");
      if (o.restart_count() > 0)
        Ev(n, "restart_count", [&] { return absl::StrCat(o.restart_count()); });
      if (o.has_finished_at())
        Ev(n, "finished_at", [&] { return absl::FormatTime(FromProto(o.finished_at())); });
      if (DiskFullFor(spec, n)) return false;
      if (!o.exists() && desired_.spec().runtime() == v1::RUNTIME_KIND_DOCKER) {
        const auto& compose = spec.container().compose();
        if (compose.file().empty()) {
          Find(v1::SEVERITY_ALERT, "ContainerMissing", name,
               absl::StrCat("no container for ", name,
                            ": create it (docker compose up -d), or name its compose file in "
                            "container.compose.file so upkeep can"));
          return false;
        }
        // "Backend container not running? → docker compose --profile aws up -d backend-aws"
        v1::Action create =
            MakeAction(v1::ACTION_KIND_CREATE_SERVICE, name,
                       absl::StrCat("no container for ", name, ": recreate it with compose"));
        auto& params = *create.mutable_params();
        params["project"] = compose.project();
        params["service"] = compose.service();
        params["file"] = compose.file();
        if (!compose.profile().empty()) params["profile"] = compose.profile();
        Plan(std::move(create), 0);
        return false;
      }
      // A start that just reported success gets a moment to show up.
      if (const v1::ActionRecord* last = LastOn(name);
          last != nullptr && last->result().outcome() == v1::ACTION_OUTCOME_SUCCEEDED &&
          FromProto(last->result().finished_at()) > now_ - kStartGrace &&
          FromProto(observed_.observed_at()) < FromProto(last->result().finished_at())) {
        Node("service.verify", name, "waiting for a fresh observation after the start", 1);
        waiting_ = true;
        return false;
      }
      Plan(MakeAction(v1::ACTION_KIND_START_SERVICE, name, absl::StrCat(name, " is not running")),
           0);
      return false;
    }
    const bool unhealthy = o.health() == v1::HEALTH_STATE_UNHEALTHY ||
                           o.runtime_health() == v1::RUNTIME_HEALTH_UNHEALTHY;
    if (unhealthy && HealthPredatesStart(name, o)) return false;
    if (unhealthy) {
      // "Backend unhealthy? → Check logs → Restart"
      const int n = Node("service.healthy", name, "no: unhealthy");
      Ev(n, "probe", o.probe().ok() ? "ok" : o.probe().error());
      if (o.probe().status_code() > 0)
        Ev(n, "status", [&] { return absl::StrCat(o.probe().status_code()); });
      Ev(n, "consecutive_failures", [&] { return absl::StrCat(o.consecutive_failures()); });
      if (o.runtime_health() == v1::RUNTIME_HEALTH_UNHEALTHY) Ev(n, "runtime_health", "unhealthy");
      // "Services Not Listening on Expected Ports": a restart will not move the port.
      if (PortMoved(spec, o, n)) return false;
      if (SlowNotHung(spec, o, n)) return false;
      if (DiskFullFor(spec, n)) return false;
      v1::Action logs = MakeAction(v1::ACTION_KIND_COLLECT_LOGS, name,
                                   absl::StrCat(name, " is unhealthy: collect its logs first"));
      (*logs.mutable_params())["tail"] = absl::StrCat(spec.logs().tail());
      v1::Action restart =
          MakeAction(v1::ACTION_KIND_RESTART_SERVICE, name, absl::StrCat(name, " is unhealthy"));
      (*restart.mutable_params())["stop_timeout_ms"] =
          absl::StrCat(absl::ToInt64Milliseconds(FromProto(spec.stop_timeout())));
      Plan(std::move(restart), 0, std::move(logs));
      return false;
    }
    if (o.health() != v1::HEALTH_STATE_HEALTHY) {
      // "Services are still starting up (may take 2-3 minutes)" — wait.
      const int n = Node("service.healthy", name, "starting: wait");
      Ev(n, "health", v1::HealthState_Name(o.health()));
      waiting_ = true;
      return false;
    }
    const int n = Node("service.healthy", name, "yes");
    if (o.probe().has_latency())
      Ev(n, "latency", [&] { return Ms(FromProto(o.probe().latency())); });
    return true;
  }

  // The service listens, but not on the port the stack expects.
  bool PortMoved(const v1::ServiceSpec& spec, const v1::ServiceObservation& o, int parent) {
    if (o.listening_size() == 0 || spec.port() == 0) return false;
    std::vector<std::string> ports;
    for (const auto& l : o.listening()) {
      if (l.port() == spec.port()) return false;
      ports.push_back(absl::StrCat(l.address(), ":", l.port()));
    }
    Ev(parent, "listening", [&] { return absl::StrJoin(ports, ","); });
    Node("service.port", spec.name(), "moved: alert", 1);
    v1::Finding* f = Find(v1::SEVERITY_ALERT, "PortMismatch", spec.name(),
                          absl::StrCat("the stack expects ", spec.name(), " on port ", spec.port(),
                                       " but it listens on ", absl::StrJoin(ports, ", "),
                                       ": a restart will not fix that"));
    (*f->mutable_evidence())["expected_port"] = absl::StrCat(spec.port());
    (*f->mutable_evidence())["listening"] = absl::StrJoin(ports, ",");
    return true;
  }

  // Fresh evidence only: an unhealthy verdict whose last probe was sent before the current
  // process started was earned by the previous one; the new process is judged on its own.
  bool HealthPredatesStart(const std::string& name, const v1::ServiceObservation& o) {
    if (!o.probe().has_at()) return false;
    const absl::Time sent = FromProto(o.probe().at());
    // Evidence that straddles our own start/restart of the service (sent before it finished)
    // is about the process it replaced, even when the observation predates the new start.
    if (const v1::ActionRecord* last = LastOn(name);
        last != nullptr && last->result().has_finished_at() &&
        (last->action().kind() == v1::ACTION_KIND_RESTART_SERVICE ||
         last->action().kind() == v1::ACTION_KIND_START_SERVICE) &&
        sent < FromProto(last->result().finished_at())) {
      const int n =
          Node("service.healthy", name, "unknown: the last probe predates the last restart", 0);
      Ev(n, "probe_sent", [&] { return absl::FormatTime(sent); });
      Ev(n, "restart_finished",
         [&] { return absl::FormatTime(FromProto(last->result().finished_at())); });
      waiting_ = true;
      return true;
    }
    if (!o.has_started_at() || sent >= FromProto(o.started_at())) return false;
    const int n =
        Node("service.healthy", name, "unknown: the last probe predates the current start", 0);
    Ev(n, "probe_sent", [&] { return absl::FormatTime(FromProto(o.probe().at())); });
    Ev(n, "started_at", [&] { return absl::FormatTime(FromProto(o.started_at())); });
    waiting_ = true;
    return true;
  }

  // ---- "Respect people": a person stopped it; like Docker's unless-stopped ------------------
  bool StoppedByPerson(const v1::ServiceSpec& spec, const v1::ServiceObservation& o) {
    const std::string& name = spec.name();
    const v1::ActionRecord* stop = nullptr;
    const auto records = history_.Of(name);
    for (auto it = records.rbegin(); it != records.rend(); ++it) {
      const v1::ActionRecord& r = **it;
      if (r.dry_run()) continue;
      const v1::ActionKind k = r.action().kind();
      if (k == v1::ACTION_KIND_STOP_SERVICE) {
        if (r.result().outcome() == v1::ACTION_OUTCOME_SUCCEEDED) stop = &r;
        break;
      }
      // A start (by upkeep or by hand) or a resume ends the person's stop.
      if (k == v1::ACTION_KIND_START_SERVICE || k == v1::ACTION_KIND_RESTART_SERVICE ||
          k == v1::ACTION_KIND_CREATE_SERVICE || k == v1::ACTION_KIND_RESET_BUDGET) {
        break;
      }
    }
    // Started outside upkeep since the stop (docker start): the stop no longer holds.
    if (stop != nullptr && o.has_started_at() &&
        FromProto(o.started_at()) > FromProto(stop->requested_at())) {
      stop = nullptr;
    }
    bool runtime_stop = o.stopped_by_person();
    if (runtime_stop && o.has_finished_at()) {
      // A resume (or a start by hand through upkeep) after that stop ends it. And an exit
      // that upkeep's own restart or recreate caused (requested before it, finished at or
      // after it) is no person's: a runtime that restarted meanwhile cannot tell, and leaving
      // the service down on that word would make things worse.
      const absl::Time stopped = FromProto(o.finished_at());
      for (const v1::ActionRecord* r : records) {
        const v1::ActionKind k = r->action().kind();
        if (r->dry_run()) continue;
        if ((k == v1::ACTION_KIND_RESET_BUDGET || k == v1::ACTION_KIND_START_SERVICE) &&
            FromProto(r->requested_at()) > stopped) {
          runtime_stop = false;
        }
        if ((k == v1::ACTION_KIND_RESTART_SERVICE || k == v1::ACTION_KIND_CREATE_SERVICE) &&
            FromProto(r->requested_at()) <= stopped &&
            (r->result().id().empty() || FromProto(r->result().finished_at()) >= stopped)) {
          runtime_stop = false;
        }
      }
    }
    if (stop == nullptr && !runtime_stop) return false;
    const int n = Node("service.stopped_by_person", name, "yes: leave it stopped");
    v1::Finding* f = Find(v1::SEVERITY_WARNING, "ManuallyStopped", name,
                          absl::StrCat(name,
                                       " was stopped by a person: upkeep leaves it stopped until "
                                       "someone starts it or resumes the stack"));
    if (stop != nullptr) {
      const std::string who =
          stop->requested_by().empty() ? std::string("a person") : stop->requested_by();
      Ev(n, "stopped_by", who);
      Ev(n, "stopped_at", [&] { return absl::FormatTime(FromProto(stop->requested_at())); });
      (*f->mutable_evidence())["stopped_by"] = who;
      (*f->mutable_evidence())["action"] = stop->action().id();
    } else {
      Ev(n, "runtime", "stopped outside upkeep");
      (*f->mutable_evidence())["stopped_by"] = "outside upkeep (runtime stop)";
    }
    if (summary_.empty()) {
      summary_ = absl::StrCat(name, " was stopped by a person: left stopped");
    }
    waiting_ = true;
    return true;
  }

  // "Slow is not dead": the probe timed out, but the same request, allowed to run on, was
  // answered. Restarting a slow service does not make it faster; a person decides.
  bool SlowNotHung(const v1::ServiceSpec& spec, const v1::ServiceObservation& o, int parent) {
    const auto& p = o.probe();
    if (!p.has_late_latency() || p.ok()) return false;
    if (o.has_started_at() && FromProto(p.late_at()) < FromProto(o.started_at())) return false;
    const absl::Duration timeout = FromProto(spec.probe().timeout());
    const absl::Duration late = FromProto(p.late_latency());
    Ev(parent, "late_latency", [&] { return Ms(late); });
    const int n =
        Node("service.slow", spec.name(), "yes: answers, slower than its probe: alert", 1);
    Ev(n, "measured_latency", [&] { return Ms(late); });
    Ev(n, "probe_timeout", [&] { return Ms(timeout); });
    if (p.late_status_code() > 0)
      Ev(n, "status", [&] { return absl::StrCat(p.late_status_code()); });
    v1::Finding* f = Find(
        v1::SEVERITY_ALERT, "SlowUpstream", spec.name(),
        absl::StrCat(spec.name(), " is slow, not hung: it answered in ", Ms(late),
                     " against a probe timeout of ", Ms(timeout), "; a restart will not fix that"));
    auto& ev = *f->mutable_evidence();
    ev["measured_latency"] = Ms(late);
    ev["probe_timeout"] = Ms(timeout);
    if (desired_.spec().has_proxy()) {
      ev["proxy_read_timeout"] =
          Ms(FromProto(desired_.spec().proxy().nginx().proxy_read_timeout()));
    }
    summary_ = absl::StrCat(spec.name(), " is slow (", Ms(late), "), not hung: alert, no restart");
    return true;
  }

  // A route probe that timed out, where nginx itself logs that the upstream timed out or the
  // upstream was measured answering late: slow, not a broken nginx (a reload cannot help).
  bool RouteTimedOut(const v1::RouteSpec& route, const v1::RouteObservation& o) {
    if (o.probe().error() != "timeout" || o.probe().status_code() != 0) return false;
    for (const auto& e : observed_.proxy().upstream_errors()) {
      if (e.kind() == v1::UPSTREAM_ERROR_KIND_TIMED_OUT) return true;
    }
    const v1::ServiceObservation* up = services_.Find(route.upstream());
    return up != nullptr && up->probe().has_late_latency();
  }

  // What nginx's error log says about the failing routes, as evidence for the reload: a
  // connection the upstream closed or reset (keepalive to an upstream that restarted). A stale
  // address is told by the evidence step (ProxyEvidence), before the ladder.
  void ExplainUpstreamErrors(int parent) {
    for (const auto& e : observed_.proxy().upstream_errors()) {
      std::string host;
      int port = 0;
      if (!ParseUpstream(e.upstream(), &host, &port)) continue;
      if (e.kind() == v1::UPSTREAM_ERROR_KIND_PREMATURELY_CLOSED ||
          e.kind() == v1::UPSTREAM_ERROR_KIND_CONNECTION_RESET) {
        const bool reset = e.kind() == v1::UPSTREAM_ERROR_KIND_CONNECTION_RESET;
        Ev(parent, "upstream_closed",
           [&] { return absl::StrCat(host, ":", port, reset ? " reset" : " closed"); });
        v1::Finding* f =
            Find(v1::SEVERITY_INFO, "UpstreamConnectionClosed", kProxyTarget,
                 absl::StrCat("the upstream at ", host, ":", port, reset ? " reset" : " closed",
                              " connections nginx was using (", e.count(),
                              "x): typically keepalive connections to an upstream that "
                              "restarted; a reload gives nginx fresh connections"));
        (*f->mutable_evidence())["sample"] = e.sample();
      }
    }
  }

  // ---- "Flapping": one alert for a whole episode -------------------------------------------
  void Episode(const v1::ServiceSpec& spec, const v1::ServiceObservation& o) {
    const auto& policy = desired_.spec().policy();
    const std::string& name = spec.name();
    const int used = policy::RestartsInWindow(policy, history_, name, now_);
    if (used >= policy.restart_budget().max() && ServiceHealthy(o)) {
      // Healthy right now, but not yet for healthyReset: the episode (and its one alert) go on.
      v1::Finding* f = Find(v1::SEVERITY_ALERT, "CrashLooping", name,
                            absl::StrCat(name, " is crash-looping: ", used,
                                         " starts/restarts in the window; "
                                         "upkeep acts on it again once it stays healthy for ",
                                         absl::FormatDuration(FromProto(policy.healthy_reset()))));
      (*f->mutable_evidence())["restarts_in_window"] = absl::StrCat(used);
      (*f->mutable_evidence())["healthy_now"] = "true";
    }
    if (const int flaps = policy::FlapsInEpisode(policy, history_, name, now_, ServiceHealthy(o));
        flaps > 0) {
      const int n = NodeMade("service.flapping", name, absl::StrCat("yes: ", flaps, " relapses"));
      Ev(n, "healthy_reset",
         [&] { return absl::FormatDuration(FromProto(policy.healthy_reset())); });
      v1::Finding* f = Find(
          v1::SEVERITY_ALERT, "Flapping", name,
          absl::StrCat(name, " flaps: ", flaps, " repairs worked and then failed again within ",
                       absl::FormatDuration(FromProto(policy.healthy_reset())),
                       "; backoff grows with each relapse"));
      (*f->mutable_evidence())["relapses"] = absl::StrCat(flaps);
    }
  }

  // ---- "Beyond 502": disks -----------------------------------------------------------------
  static bool NoSpace(const std::string& text) {
    return text.find("No space left on device") != std::string::npos;
  }

  // Over diskWarning, by blocks or by inodes (out of inodes is "No space left on device" too).
  bool Full(const v1::FilesystemUsage& fs) const {
    const double limit = desired_.spec().policy().disk_warning();
    return fs.used_percent() >= limit || fs.inodes_used_percent() >= limit;
  }

  // The observed filesystem a "No space left on device" is about: the one whose mount holds a
  // path the failing line names (`open() "/x/error.log" failed (28: No space left on device)`,
  // `write /srv/app.db: No space left on device`); else the proxy's logs' or the service's
  // data's. Null when none is observed.
  const v1::FilesystemUsage* BlamedFilesystem(const std::string& target,
                                              const std::string& output) const {
    const v1::FilesystemUsage* best = nullptr;
    for (absl::string_view line : absl::StrSplit(output, '\n')) {
      if (!absl::StrContains(line, "No space left on device")) continue;
      for (absl::string_view word : absl::StrSplit(line, absl::ByAnyChar(" \t\"'()"))) {
        word = absl::StripSuffix(word, ":");
        if (!absl::StartsWith(word, "/")) continue;
        for (const auto& fs : observed_.host().filesystems()) {
          const std::string& m = fs.mount();
          const bool under =
              m == "/" || word == m ||
              (absl::StartsWith(word, m) && word.size() > m.size() && word[m.size()] == '/');
          if (under && (best == nullptr || m.size() > best->mount().size())) best = &fs;
        }
      }
    }
    if (best != nullptr) return best;
    for (const auto& fs : observed_.host().filesystems()) {
      if (target == kProxyTarget ? fs.proxy_logs()
                                 : std::count(fs.services().begin(), fs.services().end(), target)) {
        return &fs;
      }
    }
    return nullptr;
  }

  // nginx's last test failed for want of space, and the filesystem it failed on is observed
  // with room again after that test: test again (and start nginx if it passes) rather than
  // wait for the agent's slow re-test. Failed no-space tests back off as repairs do, so a
  // disk that looks roomy but still fails nginx is not tested in a loop.
  bool DiskHasRoomAgain(const v1::ConfigTest& test) const {
    const v1::FilesystemUsage* fs = BlamedFilesystem(kProxyTarget, test.output());
    if (fs == nullptr || Full(*fs) || FromProto(observed_.observed_at()) <= FromProto(test.at())) {
      return false;
    }
    const auto& backoff = desired_.spec().policy().backoff();
    absl::Duration delay = absl::ZeroDuration();
    const auto records = history_.Of(kProxyTarget);
    for (auto it = records.rbegin(); it != records.rend(); ++it) {
      const v1::ActionRecord& r = **it;
      if (r.dry_run()) continue;
      if (r.action().kind() != v1::ACTION_KIND_TEST_PROXY_CONFIG ||
          r.result().outcome() != v1::ACTION_OUTCOME_FAILED || !NoSpace(r.result().output())) {
        break;
      }
      delay = delay == absl::ZeroDuration() ? FromProto(backoff.initial())
                                            : std::min(delay * 2, FromProto(backoff.max()));
    }
    return now_ >= FromProto(test.at()) + delay;
  }

  void DiskBlamed(const std::string& target, const std::string& output) {
    const v1::FilesystemUsage* fs = BlamedFilesystem(target, output);
    v1::Finding* f =
        Find(v1::SEVERITY_ALERT, "DiskFull", target,
             absl::StrCat(target, " fails with \"No space left on device\"",
                          fs != nullptr ? absl::StrCat(" on ", fs->mount()) : std::string(),
                          ": free disk space; restarting cannot help"));
    (*f->mutable_evidence())["output"] = output.substr(0, 400);
    if (fs != nullptr) {
      (*f->mutable_evidence())["filesystem"] = fs->mount();
      (*f->mutable_evidence())["used"] = absl::StrFormat("%.1f%%", fs->used_percent());
      if (fs->inodes_used_percent() > 0) {
        (*f->mutable_evidence())["inodes_used"] =
            absl::StrFormat("%.1f%%", fs->inodes_used_percent());
      }
    }
  }

  // Every filesystem over diskWarning that holds something the stack needs, named by its
  // mount point; the paths on it are evidence (`holds`).
  void CheckDisks() {
    const double limit = desired_.spec().policy().disk_warning();
    for (const auto& fs : observed_.host().filesystems()) {
      if (!Full(fs)) continue;
      const bool blocks = fs.used_percent() >= limit;
      const int n = Node("host.disk", fs.mount(), blocks ? "full: alert" : "out of inodes: alert");
      Ev(n, "used", [&] { return absl::StrFormat("%.1f%%", fs.used_percent()); });
      if (!blocks)
        Ev(n, "inodes_used", [&] { return absl::StrFormat("%.1f%%", fs.inodes_used_percent()); });
      Ev(n, "disk_warning", [&] { return absl::StrFormat("%.0f%%", limit); });
      if (disk_full_.count(fs.mount())) continue;
      disk_full_.insert(fs.mount());
      v1::Finding* f = Find(
          v1::SEVERITY_ALERT, "DiskFull", fs.mount(),
          blocks ? absl::StrFormat("%s is %.1f%% full (over %.0f%%); it holds %s", fs.mount(),
                                   fs.used_percent(), limit, absl::StrJoin(fs.holds(), ", "))
                 : absl::StrFormat("%s has used %.1f%% of its inodes (over %.0f%%): no file can "
                                   "be created; it holds %s",
                                   fs.mount(), fs.inodes_used_percent(), limit,
                                   absl::StrJoin(fs.holds(), ", ")));
      (*f->mutable_evidence())["used"] = absl::StrFormat("%.1f%%", fs.used_percent());
      (*f->mutable_evidence())["available_bytes"] = absl::StrCat(fs.available_bytes());
      if (!blocks) {
        (*f->mutable_evidence())["inodes_used"] =
            absl::StrFormat("%.1f%%", fs.inodes_used_percent());
        (*f->mutable_evidence())["available_inodes"] = absl::StrCat(fs.available_inodes());
      }
      (*f->mutable_evidence())["holds"] = absl::StrJoin(fs.holds(), ", ");
    }
  }

  // A down or unhealthy service whose data sits on a full disk, or whose last repair failed
  // with "No space left on device", is blamed on the disk: a restart cannot help.
  bool DiskFullFor(const v1::ServiceSpec& spec, int parent) {
    for (const auto& fs : observed_.host().filesystems()) {
      if (!Full(fs) || std::find(fs.services().begin(), fs.services().end(), spec.name()) ==
                           fs.services().end()) {
        continue;
      }
      Ev(parent, "disk",
         fs.used_percent() >= desired_.spec().policy().disk_warning()
             ? absl::StrFormat("%s %.1f%% full", fs.mount(), fs.used_percent())
             : absl::StrFormat("%s %.1f%% of inodes used", fs.mount(), fs.inodes_used_percent()));
      Node("service.disk", spec.name(), "full: blamed on the disk, not restarted", 1);
      v1::Finding* f =
          Find(v1::SEVERITY_ALERT, "DiskFull", spec.name(),
               absl::StrCat(spec.name(), " is ",
                            trace_.step(parent) == "service.running" ? "down" : "unhealthy",
                            " and ", fs.mount(),
                            ", which holds its data, is full: free disk space; restarting "
                            "cannot help"));
      (*f->mutable_evidence())["filesystem"] = fs.mount();
      (*f->mutable_evidence())["used"] = absl::StrFormat("%.1f%%", fs.used_percent());
      if (fs.inodes_used_percent() > 0) {
        (*f->mutable_evidence())["inodes_used"] =
            absl::StrFormat("%.1f%%", fs.inodes_used_percent());
      }
      return true;
    }
    if (const v1::ActionRecord* last = LastOn(spec.name());
        last != nullptr &&
        (NoSpace(last->result().output()) || NoSpace(last->result().message()))) {
      const std::string& output =
          last->result().output().empty() ? last->result().message() : last->result().output();
      // Blamed until the filesystem it failed on is seen with room again; one that is not
      // observed is tried again (through policy) once backoff.max has passed, so the outage
      // does not outlast the full disk.
      const v1::FilesystemUsage* fs = BlamedFilesystem(spec.name(), output);
      const absl::Time failed_at = last->result().has_finished_at()
                                       ? FromProto(last->result().finished_at())
                                       : FromProto(last->requested_at());
      const bool room =
          fs != nullptr ? !Full(*fs) && FromProto(observed_.observed_at()) > failed_at
                        : now_ >= failed_at + FromProto(desired_.spec().policy().backoff().max());
      if (room) {
        const int n = Node("service.disk", spec.name(),
                           fs != nullptr ? "no space earlier; the disk has room again"
                                         : "no space earlier; the disk is not observed: "
                                           "try again after backoff.max",
                           1);
        if (fs != nullptr) Ev(n, "filesystem", fs->mount());
        return false;
      }
      Node("service.disk", spec.name(), "no space left on device: not restarted", 1);
      DiskBlamed(spec.name(), output);
      return true;
    }
    return false;
  }

  // ---- "Beyond 502": certificates ----------------------------------------------------------
  void CheckCertificates() {
    const absl::Duration warn = FromProto(desired_.spec().policy().certificate_warning());
    for (const auto& r : observed_.proxy().routes()) {
      if (!r.has_certificate_not_after()) continue;
      const absl::Time expires = FromProto(r.certificate_not_after());
      if (expires - now_ > warn) continue;
      const bool expired = expires <= now_;
      const int n = Node("route.certificate", r.path(), expired ? "expired" : "expires soon");
      Ev(n, "not_after",
         [&] { return absl::FormatTime(absl::RFC3339_sec, expires, absl::UTCTimeZone()); });
      v1::Finding* f = Find(
          expired ? v1::SEVERITY_ALERT : v1::SEVERITY_WARNING,
          expired ? "CertificateExpired" : "CertificateExpiring", r.path(),
          absl::StrCat("the certificate served for ", r.path(), " (",
                       r.certificate_subject().empty() ? "no subject" : r.certificate_subject(),
                       expired ? ") expired on " : ") expires on ",
                       absl::FormatTime("%Y-%m-%d %H:%M UTC", expires, absl::UTCTimeZone()),
                       expired ? ""
                               : absl::StrCat(", in ", absl::ToInt64Hours(expires - now_) / 24,
                                              " days: renew it")));
      (*f->mutable_evidence())["not_after"] =
          absl::FormatTime(absl::RFC3339_sec, expires, absl::UTCTimeZone());
      (*f->mutable_evidence())["certificate_warning"] = absl::FormatDuration(warn);
    }
  }

  // ---- "Evidence first": the observation already explains the failing route ------------------
  // What the evidence leaves nginx's ladder: nothing (kAlert: neither a reload nor a restart
  // can help), one reload (kReloadOnly: nginx may run an older config than the file on disk,
  // which a reload loads; a restart cannot do more), or the whole ladder (kLadder).
  enum class Evidence { kLadder, kReloadOnly, kAlert };
  Evidence ExplainedByEvidence(const std::vector<const v1::RouteSpec*>& failing) {
    const auto& proxy = observed_.proxy();
    const auto& test = proxy.last_config_test();
    // "Check nginx config: sudo nginx -t" — nginx runs an older config; the one on disk fails.
    if (test.ran() && !test.ok()) {
      const int n = Node("proxy.evidence", kProxyTarget, "config fails nginx -t: alert", 1);
      Ev(n, "nginx_t", test.output());
      if (NoSpace(test.output())) {
        DiskBlamed(kProxyTarget, test.output());
      } else {
        v1::Finding* f =
            Find(v1::SEVERITY_ALERT, "ConfigInvalid", kProxyTarget,
                 "nginx runs, but its config fails `nginx -t`: a reload would be refused and a "
                 "restart would stop nginx; fix the config");
        (*f->mutable_evidence())["nginx_t"] = test.output();
      }
      summary_ = "a route fails and nginx's config fails `nginx -t`: alert, no reload";
      return Evidence::kAlert;
    }
    bool explained = false, port_mismatch = false, stale_address = false;
    for (const auto* route : failing) {
      const v1::ServiceSpec* found = specs_.Find(route->upstream());
      if (found == nullptr) continue;
      const v1::ServiceSpec& svc = *found;
      const v1::ServiceObservation* o = services_.Find(svc.name());
      std::vector<std::string> listening;
      bool v4 = false, v6 = false;
      if (o != nullptr) {
        for (const auto& l : o->listening()) {
          listening.push_back(absl::StrCat(l.address(), ":", l.port()));
          if (l.port() == svc.port()) (l.ipv6() ? v6 : v4) = true;
        }
      }
      for (const auto& e : proxy.upstream_errors()) {
        std::string host;
        int port = 0;
        if (!ParseUpstream(e.upstream(), &host, &port)) continue;
        if (!ErrorIsFor(e, *route)) continue;
        const std::string dials =
            absl::StrCat(host.find(':') != std::string::npos ? "[" : "", host,
                         host.find(':') != std::string::npos ? "]" : "", ":", port);
        if (port != svc.port()) {
          const int n = Node("proxy.evidence", route->path(), "nginx dials another port", 1);
          Ev(n, "nginx_dials", dials);
          Ev(n, "expected_port", [&] { return absl::StrCat(svc.port()); });
          port_mismatch = true;
          if (HasFinding("PortMismatch", svc.name())) break;
          v1::Finding* pm =
              Find(v1::SEVERITY_ALERT, "PortMismatch", svc.name(),
                   absl::StrCat("nginx dials ", dials, " for ", route->path(), " but ", svc.name(),
                                " listens on port ", svc.port(),
                                ": fix the upstream in the nginx config (one reload loads the "
                                "file if nginx runs an older one; a restart cannot do more)"));
          (*pm->mutable_evidence())["nginx_dials"] = dials;
          (*pm->mutable_evidence())["expected_port"] = absl::StrCat(svc.port());
          if (!listening.empty())
            (*pm->mutable_evidence())["listening"] = absl::StrJoin(listening, ",");
          if (!e.sample().empty()) (*pm->mutable_evidence())["error_log"] = e.sample();
          break;
        }
        if ((host == "::1" && !v6 && v4) || (host == "127.0.0.1" && !v4 && v6)) {
          const int n =
              Node("proxy.evidence", route->path(), "nginx dials the other address family", 1);
          Ev(n, "nginx_dials", dials);
          Ev(n, "listening", [&] { return absl::StrJoin(listening, ","); });
          v1::Finding* fm =
              Find(v1::SEVERITY_ALERT, "LocalhostFamilyMismatch", svc.name(),
                   absl::StrCat("nginx dials ", dials, " but ", svc.name(), " listens on ",
                                absl::StrJoin(listening, ", "),
                                " only: `localhost` resolves to both families; use an explicit "
                                "address in proxy_pass or listen on both (a reload cannot help)"));
          (*fm->mutable_evidence())["nginx_dials"] = dials;
          (*fm->mutable_evidence())["listening"] = absl::StrJoin(listening, ",");
          explained = true;
          break;
        }
        if (o != nullptr && o->addresses_size() > 0 && host != "127.0.0.1" && host != "::1" &&
            std::find(o->addresses().begin(), o->addresses().end(), host) == o->addresses().end()) {
          // nginx resolved the name when it loaded its config; the container has moved since.
          // One reload resolves again; a restart resolves no differently, so after a reload
          // that did not help the config names the old address itself (a literal, or a name
          // still resolving to it): say so, and how to stop it recurring.
          const int n = Node("proxy.evidence", route->path(),
                             "nginx dials an address that is no longer the container's", 1);
          stale_address = true;
          Ev(n, "nginx_dials", dials);
          Ev(n, "upstream_now_at", [&] { return absl::StrJoin(o->addresses(), ","); });
          std::string message =
              absl::StrCat("nginx dials ", dials, " for ", route->path(), " but ", svc.name(),
                           " is now at ", absl::StrJoin(o->addresses(), ", "),
                           ": nginx resolved the name at start; a reload re-resolves it (add a "
                           "`resolver` and a variable in proxy_pass to keep it current)");
          // One finding per service: the one the last reload carried (StickyEvidence) gets
          // this observation's evidence.
          v1::Finding* sa = nullptr;
          for (auto& f : *d_->mutable_findings()) {
            if (f.code() == "StaleUpstreamAddress" && f.target() == svc.name()) sa = &f;
          }
          if (sa == nullptr) {
            sa = Find(v1::SEVERITY_WARNING, "StaleUpstreamAddress", svc.name(), std::move(message));
          }
          (*sa->mutable_evidence())["nginx_dials"] = dials;
          (*sa->mutable_evidence())["upstream_now_at"] = absl::StrJoin(o->addresses(), ",");
          break;
        }
      }
    }
    if (explained) {
      summary_ = "a route fails for a reason nginx cannot fix by itself: alert";
      return Evidence::kAlert;
    }
    return port_mismatch || stale_address ? Evidence::kReloadOnly : Evidence::kLadder;
  }

  // The newest reload of the current escalation that was planned on evidence (a port
  // mismatch, a stale address); its finding is raised again from the record, with its evidence
  // and severity, while the route still fails.
  const v1::ActionRecord* StickyEvidence() {
    const policy::Streak streak =
        policy::FailedStreak(history_, kProxyTarget, v1::ACTION_KIND_RELOAD_PROXY);
    if (streak.count == 0 || streak.last <= now_ - kEscalationWindow) return nullptr;
    int seen = 0;
    const auto records = history_.Of(kProxyTarget);
    for (auto it = records.rbegin(); it != records.rend() && seen < streak.count; ++it) {
      const v1::ActionRecord& r = **it;
      if (r.dry_run()) continue;
      if (!policy::SameClass(r.action().kind(), v1::ACTION_KIND_RELOAD_PROXY)) continue;
      ++seen;
      const auto& params = r.action().params();
      auto code = params.find("evidence_code");
      if (code == params.end()) continue;
      const std::string target =
          params.count("evidence_target") ? params.at("evidence_target") : std::string();
      if (!HasFinding(code->second, target)) {
        v1::Severity severity = v1::SEVERITY_ALERT;
        if (auto sev = params.find("evidence_severity"); sev != params.end()) {
          if (!v1::Severity_Parse(sev->second, &severity)) severity = v1::SEVERITY_ALERT;
        }
        v1::Finding* f =
            Find(severity, code->second, target,
                 params.count("evidence_message") ? params.at("evidence_message") : std::string());
        for (const auto& [k, v] : params) {
          if (absl::StartsWith(k, "evidence.")) (*f->mutable_evidence())[k.substr(9)] = v;
        }
        (*f->mutable_evidence())["seen_before"] = r.action().id();
      }
      return &r;
    }
    return nullptr;
  }

  // Whether an error-log entry concerns `route`: the route with the longest path that prefixes
  // the request nginx logged (`request: "GET /api/health HTTP/1.1"`). Without a request line it
  // cannot tell, and counts it.
  bool ErrorIsFor(const v1::UpstreamError& e, const v1::RouteSpec& route) const {
    const std::string& line = e.sample();
    const auto req = line.find("request: \"");
    if (req == std::string::npos) return true;
    const auto space = line.find(' ', req + 10);
    if (space == std::string::npos) return true;
    const std::string path = line.substr(space + 1, line.find(' ', space + 1) - space - 1);
    const v1::RouteSpec* best = nullptr;
    for (const auto& r : desired_.spec().proxy().routes()) {
      if (path.rfind(r.path(), 0) == 0 &&
          (best == nullptr || r.path().size() > best->path().size())) {
        best = &r;
      }
    }
    return best == nullptr || best->path() == route.path();
  }

  // ---- 4-6. routes through nginx ----------------------------------------------------------
  void CheckRoutes() {
    std::vector<const v1::RouteSpec*> failing;
    int position = -1;
    for (const auto& r : desired_.spec().proxy().routes()) {
      ++position;
      if (!r.has_probe()) continue;
      const v1::RouteObservation* found = routes_.Find(r.path(), position);
      if (found == nullptr) {
        const int n = Node("route.ok", r.path(), "unknown: not probed yet");
        Ev(n, "url", r.probe().url());
        waiting_ = true;
        continue;
      }
      const v1::RouteObservation& o = *found;
      const bool ok = RouteOk(r, o);
      const int n = Node("route.ok", r.path(), ok ? "yes" : "no");
      Ev(n, "status", [&] { return absl::StrCat(o.probe().status_code()); });
      if (!o.probe().error().empty()) Ev(n, "error", o.probe().error());
      Ev(n, "latency", [&] { return Ms(FromProto(o.probe().latency())); });
      if (ok) continue;
      // "If you see 504 (Gateway Timeout) instead of 502, increase nginx timeouts"
      if (o.probe().status_code() == 504 || RouteTimedOut(r, o)) {
        UpstreamTimeout(r, o);
        continue;
      }
      failing.push_back(&r);
    }
    if (failing.empty()) return;
    // A reload planned on evidence keeps that evidence's finding until the route answers, so
    // its alert is raised once, not again each time nginx's error log starts afresh or a
    // probe of the upstream misses once (a wait below judges, and would clear it).
    const v1::ActionRecord* sticky = StickyEvidence();
    // "Check Backend Health: curl http://localhost:8002/health" — confirm the upstream
    // directly before blaming nginx; a failing upstream is judged by its own probe first.
    for (const auto* r : failing) {
      const v1::ServiceObservation* up = services_.Find(r->upstream());
      // Evidence from before the upstream's last (re)start says nothing about nginx now.
      if (up != nullptr && up->has_started_at() &&
          FromProto(routes_.Find(r->path())->probe().at()) < FromProto(up->started_at())) {
        const int n = Node("route.upstream_confirmed", r->path(),
                           "not yet: the route was probed before the upstream restarted", 1);
        Ev(n, "upstream", r->upstream());
        waiting_ = true;
        return;
      }
      if (up != nullptr && !up->probe().ok()) {
        const int n = Node("route.upstream_confirmed", r->path(),
                           "no: the upstream fails its own probe; judging it first", 1);
        Ev(n, "upstream", r->upstream());
        Ev(n, "probe", up->probe().error());
        waiting_ = true;
        return;
      }
    }
    // Upstreams are healthy by direct probe (checked above), yet nginx fails the route.
    const v1::ActionRecord* last = LastOn(kProxyTarget);
    // Verify: a repair of nginx is judged on a probe taken after it finished.
    if (last != nullptr && last->result().has_finished_at()) {
      const absl::Time finished = FromProto(last->result().finished_at());
      bool fresh = true;
      for (const auto* r : failing) {
        if (FromProto(routes_.Find(r->path())->probe().at()) < finished) fresh = false;
      }
      if (!fresh) {
        Node("proxy.verify", kProxyTarget, "waiting for a route probe after the last repair", 1);
        waiting_ = true;
        return;
      }
    }
    // Evidence first: when the observation already explains the failure and nginx cannot fix
    // it, say so now instead of reloading and restarting nginx first.
    Evidence evidence = ExplainedByEvidence(failing);
    if (evidence == Evidence::kAlert) return;
    if (evidence == Evidence::kLadder && sticky != nullptr) evidence = Evidence::kReloadOnly;
    const policy::Streak streak =
        policy::FailedStreak(history_, kProxyTarget, v1::ACTION_KIND_RELOAD_PROXY);
    const bool recent = streak.count > 0 && streak.last > now_ - kEscalationWindow;
    // (took: one of them did its work. A reload that failed, e.g. timed out waiting for the
    // old workers to go, re-read nothing, and says nothing about the file.)
    bool reloaded = false, restarted = false, took = false;
    if (recent) {
      int seen = 0;
      const auto records = history_.Of(kProxyTarget);
      for (auto it = records.rbegin(); it != records.rend() && seen < streak.count; ++it) {
        const v1::ActionKind kind = (*it)->action().kind();
        if ((*it)->dry_run() || !policy::SameClass(kind, v1::ACTION_KIND_RELOAD_PROXY)) continue;
        ++seen;
        reloaded |= kind == v1::ACTION_KIND_RELOAD_PROXY;
        restarted |= kind == v1::ACTION_KIND_RESTART_PROXY;
        took |= (*it)->result().outcome() == v1::ACTION_OUTCOME_SUCCEEDED;
      }
    }
    const std::string paths = absl::StrJoin(
        failing, ", ", [](std::string* out, const auto* r) { absl::StrAppend(out, r->path()); });
    if (evidence == Evidence::kReloadOnly && (reloaded || restarted) && took) {
      // The reload loaded the file (and resolved its names) and nginx still dials the wrong
      // port or the old address: the file says so, and a restart would read it the same way.
      v1::Finding* stale = nullptr;
      for (auto& f : *d_->mutable_findings()) {
        if (f.code() == "StaleUpstreamAddress") stale = &f;
      }
      if (stale == nullptr) {
        const int n = Node("proxy.findings", kProxyTarget,
                           "alert: after a reload nginx still dials the wrong port", 1);
        Ev(n, "failing_routes", paths);
        summary_ = "nginx's config dials the wrong port (a reload did not change it): alert";
        return;
      }
      const int n = Node("proxy.findings", kProxyTarget,
                         "alert: after a reload nginx still dials the old address", 1);
      Ev(n, "failing_routes", paths);
      stale->set_severity(v1::SEVERITY_ALERT);
      const auto& ev = stale->evidence();
      if (ev.count("nginx_dials") && ev.count("upstream_now_at")) {
        // (Raised from this observation; one re-raised from the reload's record keeps its text.)
        Ev(n, "nginx_dials", ev.at("nginx_dials"));
        stale->set_message(absl::StrCat(
            "nginx dials ", ev.at("nginx_dials"), " but ", stale->target(), " is now at ",
            ev.at("upstream_now_at"),
            ", and a reload did not change it: nginx's config names the old address (a literal "
            "address, or a name that still resolves to it); a restart of nginx would read it "
            "the same way. Point proxy_pass at the container's name and keep that current (a "
            "`resolver` and a variable in proxy_pass), or publish the port and proxy to it"));
      }
      (*stale->mutable_evidence())["after_reload"] = "yes";
      summary_ = "nginx dials a container's old address and a reload did not change it: alert";
      return;
    }
    const bool again = evidence == Evidence::kReloadOnly && (reloaded || restarted);
    const int n = Node("proxy.reaches_upstreams", kProxyTarget,
                       again       ? "no, and the last reload failed: reload nginx again"
                       : restarted ? "no, after reload and restart: alert"
                       : reloaded  ? "no, after a reload: restart nginx"
                                   : "no: reload nginx",
                       1);
    Ev(n, "failing_routes", paths);
    Ev(n, "upstream_errors",
       [&] { return absl::StrCat(observed_.proxy().upstream_errors_size()); });
    ExplainUpstreamErrors(n);
    if ((!restarted && !reloaded) || evidence == Evidence::kReloadOnly) {
      // "Backend healthy but nginx can't connect?" — a graceful reload first (again, paced by
      // policy, when the one the evidence asks for failed: a restart would do no more).
      v1::Action reload =
          MakeAction(v1::ACTION_KIND_RELOAD_PROXY, kProxyTarget,
                     absl::StrCat("upstreams healthy but ", paths, " failing through nginx"));
      if (evidence == Evidence::kReloadOnly) {
        for (const auto& f : d_->findings()) {
          if (f.code() != "PortMismatch" && f.code() != "StaleUpstreamAddress") continue;
          (*reload.mutable_params())["evidence_code"] = f.code();
          (*reload.mutable_params())["evidence_target"] = f.target();
          (*reload.mutable_params())["evidence_message"] = f.message();
          (*reload.mutable_params())["evidence_severity"] = v1::Severity_Name(f.severity());
          for (const auto& [k, v] : f.evidence()) {
            (*reload.mutable_params())[absl::StrCat("evidence.", k)] = v;
          }
          break;
        }
      }
      Plan(std::move(reload), 1);
      return;
    }
    if (!restarted) {
      // "→ sudo systemctl restart nginx"
      Plan(MakeAction(v1::ACTION_KIND_RESTART_PROXY, kProxyTarget,
                      absl::StrCat(paths, " still failing after a reload")),
           1);
      return;
    }
    AlertStill502(failing);
  }

  // "All containers healthy but still 502? → nginx -t, error log, ports" — no more automatic
  // action; tell a person what we found.
  void AlertStill502(const std::vector<const v1::RouteSpec*>& failing) {
    const auto& proxy = observed_.proxy();
    Node("proxy.findings", kProxyTarget, "alert: no automatic action left", 2);
    for (const auto* route : failing) {
      v1::Finding* f = Find(v1::SEVERITY_ALERT, "StillFailing", route->path(),
                            absl::StrCat(route->path(),
                                         " still fails through nginx with every upstream healthy, "
                                         "after a reload and a restart of nginx"));
      auto& ev = *f->mutable_evidence();
      ev["config_test"] = proxy.last_config_test().ran()
                              ? (proxy.last_config_test().ok() ? "ok" : "failed")
                              : "not run";
      if (!proxy.last_config_test().output().empty()) {
        ev["nginx_t"] = proxy.last_config_test().output();
      }
      if (!proxy.error_log_excerpt().empty()) ev["error_log"] = proxy.error_log_excerpt();
      const v1::ServiceSpec* svc = specs_.Find(route->upstream());
      if (svc == nullptr) continue;
      ev["expected_upstream"] = absl::StrCat(svc->address(), ":", svc->port());
      const v1::ServiceObservation* o = services_.Find(svc->name());
      std::vector<std::string> listening;
      bool v4 = false, v6 = false;
      if (o != nullptr) {
        for (const auto& l : o->listening()) {
          listening.push_back(absl::StrCat(l.address(), ":", l.port()));
          (l.ipv6() ? v6 : v4) = true;
        }
      }
      if (!listening.empty()) ev["listening"] = absl::StrJoin(listening, ",");
      for (const auto& e : proxy.upstream_errors()) {
        std::string host;
        int port = 0;
        if (!ParseUpstream(e.upstream(), &host, &port)) continue;
        ev["nginx_dials"] = absl::StrCat(host, ":", port);
        ev["upstream_error"] = v1::UpstreamErrorKind_Name(e.kind());
        if (port != svc->port()) {
          v1::Finding* pm =
              Find(v1::SEVERITY_ALERT, "PortMismatch", svc->name(),
                   absl::StrCat("nginx dials ", host, ":", port, " for ", route->path(), " but ",
                                svc->name(), " listens on port ", svc->port(),
                                ": fix the upstream in the nginx config"));
          (*pm->mutable_evidence())["nginx_dials"] = absl::StrCat(host, ":", port);
          (*pm->mutable_evidence())["expected_port"] = absl::StrCat(svc->port());
        } else if ((host == "::1" && !v6 && v4) || (host == "127.0.0.1" && !v4 && v6)) {
          v1::Finding* fm =
              Find(v1::SEVERITY_ALERT, "LocalhostFamilyMismatch", svc->name(),
                   absl::StrCat("nginx dials ", host, ":", port, " but ", svc->name(),
                                " listens on ", absl::StrJoin(listening, ", "),
                                " only: `localhost` resolves to both families; use an explicit "
                                "address in proxy_pass or listen on both"));
          (*fm->mutable_evidence())["nginx_dials"] = absl::StrCat(host, ":", port);
        }
        break;
      }
    }
    summary_ = "still failing with every upstream healthy and nginx restarted: alert";
  }

  void UpstreamTimeout(const v1::RouteSpec& route, const v1::RouteObservation& o) {
    const absl::Duration timeout = FromProto(desired_.spec().proxy().nginx().proxy_read_timeout());
    v1::Finding* f = Find(
        v1::SEVERITY_ALERT, "UpstreamTimeout", route.path(),
        absl::StrCat(route.path(), o.probe().status_code() == 504 ? " answers 504" : " times out",
                     ": the upstream ", route.upstream(), " is slower than nginx's timeout"));
    auto& ev = *f->mutable_evidence();
    ev["route_latency"] = Ms(FromProto(o.probe().latency()));
    ev["proxy_read_timeout"] = Ms(timeout);
    if (const v1::ServiceObservation* upstream = services_.Find(route.upstream())) {
      const v1::ProbeResult& up = upstream->probe();
      ev["upstream_latency"] = Ms(FromProto(up.latency()));
      // Measured past the probe's timeout: the upstream's real latency.
      if (up.has_late_latency()) ev["upstream_measured_latency"] = Ms(FromProto(up.late_latency()));
    }
    int timed_out = 0;
    for (const auto& e : observed_.proxy().upstream_errors()) {
      if (e.kind() == v1::UPSTREAM_ERROR_KIND_TIMED_OUT) timed_out += e.count();
    }
    if (timed_out > 0) ev["nginx_upstream_timeouts"] = absl::StrCat(timed_out);
  }

  v1::Verdict Verdict() {
    bool acting = false;
    for (const auto& a : d_->actions()) {
      acting |= a.policy() == v1::POLICY_VERDICT_ALLOWED;
    }
    // An alert about the past (the service flapped, crash-looped) while it is healthy now is
    // told to people, but the stack serves: it is not DEGRADED (Ready stays true).
    bool alert = false;
    for (const auto& f : d_->findings()) {
      if (f.severity() != v1::SEVERITY_ALERT) continue;
      const auto healthy_now = f.evidence().find("healthy_now");
      const bool history_only = f.code() == "Flapping" ||
                                (f.code() == "CrashLooping" && healthy_now != f.evidence().end() &&
                                 healthy_now->second == "true");
      const v1::ServiceObservation* svc = services_.Find(f.target());
      if (history_only && svc != nullptr && ServiceHealthy(*svc)) continue;
      // A full filesystem is told to people, but while everything serves it is a warning
      // about what comes next, not unreadiness: Ready says whether the stack serves now. What
      // it breaks (a service or nginx that cannot run) is its own DiskFull on that target.
      if (f.code() == "DiskFull" && disk_full_.contains(f.target())) continue;
      alert = true;
    }
    if (acting) return v1::VERDICT_REPAIRING;
    if (alert) return v1::VERDICT_DEGRADED;
    if (waiting_ || d_->actions_size() > 0) return v1::VERDICT_WAITING;
    return v1::VERDICT_HEALTHY;
  }

  void Finish(v1::Verdict verdict) {
    d_->set_verdict(verdict);
    if (summary_.empty()) {
      switch (verdict) {
        case v1::VERDICT_HEALTHY: {
          constexpr absl::string_view kHealthy =
              "all services healthy and every route answers through nginx";
          for (const auto& f : d_->findings()) {
            if (f.code() != "DiskFull" || !disk_full_.contains(f.target())) continue;
            summary_ = absl::StrCat(kHealthy, "; but ", f.message());  // what will break next
            break;
          }
          if (summary_.empty()) {
            // Into the field's own string (a message reused by DiagnoseInto keeps it).
            d_->mutable_summary()->assign(kHealthy.data(), kHealthy.size());
            return;
          }
          break;
        }
        case v1::VERDICT_REPAIRING: {
          std::vector<std::string> parts;
          for (const auto& a : d_->actions()) {
            parts.push_back(absl::StrCat(v1::ActionKind_Name(a.action().kind()).substr(12), " ",
                                         a.action().target()));
          }
          summary_ = absl::StrCat("repairing: ", absl::StrJoin(parts, ", "));
          break;
        }
        case v1::VERDICT_DEGRADED:
          summary_ = d_->findings_size() > 0 ? d_->findings(0).message() : "degraded";
          break;
        default:
          summary_ = d_->actions_size() > 0
                         ? absl::StrCat("waiting: ", d_->actions(0).policy_reason())
                         : "waiting for services to become ready";
      }
    }
    d_->set_summary(std::move(summary_));
  }

  const v1::Stack& desired_;
  const v1::StackObservation& observed_;
  const policy::History& history_;
  const absl::Time now_;
  const DiagnoseOptions& options_;
  // By name: the desired services, and what was observed of services and routes.
  const ByName<v1::ServiceSpec, &v1::ServiceSpec::name> specs_;
  const ByName<v1::ServiceObservation, &v1::ServiceObservation::name> services_;
  const ByName<v1::RouteObservation, &v1::RouteObservation::path> routes_;
  v1::Diagnosis* const d_;
  TraceWriter trace_;
  std::string summary_;
  bool waiting_ = false;
  absl::flat_hash_set<std::string> disk_full_;
};

}  // namespace

upkeep::v1::Diagnosis Diagnose(const upkeep::v1::Stack& desired,
                               const upkeep::v1::StackObservation& observed,
                               absl::Span<const upkeep::v1::ActionRecord> history, absl::Time now,
                               const DiagnoseOptions& options) {
  return Diagnose(desired, observed, policy::History(history), now, options);
}

upkeep::v1::Diagnosis* Diagnose(const upkeep::v1::Stack& desired,
                                const upkeep::v1::StackObservation& observed,
                                absl::Span<const upkeep::v1::ActionRecord> history, absl::Time now,
                                google::protobuf::Arena* arena, const DiagnoseOptions& options) {
  return Diagnose(desired, observed, policy::History(history), now, arena, options);
}

namespace {

// The trace of a diagnosis whose caller wants the path in the message: one per thread, reused
// (its slots keep their capacity), and emptied into the message at the end.
Trace& ScratchTrace() {
  thread_local Trace trace;
  return trace;
}

}  // namespace

upkeep::v1::Diagnosis Diagnose(const upkeep::v1::Stack& desired,
                               const upkeep::v1::StackObservation& observed,
                               const policy::History& history, absl::Time now,
                               const DiagnoseOptions& options) {
  v1::Diagnosis d;
  Trace& trace = ScratchTrace();
  trace.Clear();
  Engine(desired, observed, history, now, options, &d, &trace).Run();
  trace.AppendTo(&d);
  return d;
}

upkeep::v1::Diagnosis* Diagnose(const upkeep::v1::Stack& desired,
                                const upkeep::v1::StackObservation& observed,
                                const policy::History& history, absl::Time now,
                                google::protobuf::Arena* arena, const DiagnoseOptions& options) {
  Trace& trace = ScratchTrace();
  v1::Diagnosis* d = Diagnose(desired, observed, history, now, arena, options, &trace);
  trace.AppendTo(d);
  return d;
}

upkeep::v1::Diagnosis* Diagnose(const upkeep::v1::Stack& desired,
                                const upkeep::v1::StackObservation& observed,
                                const policy::History& history, absl::Time now,
                                google::protobuf::Arena* arena, const DiagnoseOptions& options,
                                Trace* trace) {
  auto* d = google::protobuf::Arena::CreateMessage<v1::Diagnosis>(arena);
  trace->Clear();
  Engine(desired, observed, history, now, options, d, trace).Run();
  return d;
}

void DiagnoseInto(const upkeep::v1::Stack& desired, const upkeep::v1::StackObservation& observed,
                  const policy::History& history, absl::Time now, const DiagnoseOptions& options,
                  Trace* trace, upkeep::v1::Diagnosis* out) {
  // Clear() keeps strings and repeated fields' elements for reuse, but deletes a submessage.
  google::protobuf::Timestamp* at = out->unsafe_arena_release_at();
  out->Clear();
  out->unsafe_arena_set_allocated_at(at);
  trace->Clear();
  Engine(desired, observed, history, now, options, out, trace).Run();
}

bool Judged(const upkeep::v1::Diagnosis& d) {
  if (d.verdict() == v1::VERDICT_UNKNOWN) return false;
  for (const auto& n : d.path()) {
    if (n.step() == "action.in_flight" && absl::StartsWith(n.decision(), "yes")) return false;
  }
  return true;
}

bool Judged(const upkeep::v1::Diagnosis& d, const Trace& trace) {
  if (d.verdict() == v1::VERDICT_UNKNOWN) return false;
  for (int i = 0; i < trace.size(); ++i) {
    if (trace.step(i) == "action.in_flight" && absl::StartsWith(trace.decision(i), "yes")) {
      return false;
    }
  }
  return true;
}

}  // namespace upkeep::decision
