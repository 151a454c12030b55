// upkeep-demo: `make demo`. Brings up the demo stack under upkeep on loopback (real nginx, a
// controller, an agent, sample backend and frontend on the process runtime), then walks the
// seed runbook's faults one by one, printing each step as it happens and a summary table.
// Then it keeps the stack running until Ctrl-C (or exits after the tour with --once).
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/proto_time.h"
#include "demo/harness.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "tests/support/net.h"
#include "tests/support/wait.h"

namespace upkeep::demo {
namespace {

namespace fs = std::filesystem;

std::atomic<bool> g_interrupted{false};
void OnSignal(int) { g_interrupted = true; }

struct Colors {
  const char* bold = "";
  const char* dim = "";
  const char* red = "";
  const char* green = "";
  const char* yellow = "";
  const char* cyan = "";
  const char* reset = "";
};

Colors MakeColors() {
  Colors c;
  const char* term = std::getenv("TERM");
  if (::isatty(STDOUT_FILENO) && term != nullptr && std::string(term) != "dumb" &&
      std::getenv("NO_COLOR") == nullptr) {
    c = {"\033[1m", "\033[2m", "\033[31m", "\033[32m", "\033[33m", "\033[36m", "\033[0m"};
  }
  return c;
}

// What one fault is and what ending counts as success.
struct Fault {
  std::string name;
  std::string runbook;  // the runbook branch it exercises
  std::function<absl::Status(StackHarness&)> inject;
  bool expect_alert = false;  // ends in an alert with findings (no restart can fix it)
  std::function<absl::Status(StackHarness&)> after = nullptr;  // clean-up after an alert fault
};

struct Outcome {
  std::string fault;
  bool ok = false;
  absl::Duration detected = absl::InfiniteDuration();
  absl::Duration healed = absl::InfiniteDuration();
  std::vector<std::string> actions;
  std::string path;
  std::string note;
};

std::string Ms(absl::Duration d) {
  if (d == absl::InfiniteDuration()) return "-";
  return absl::StrFormat("%.0f ms", absl::ToDoubleMilliseconds(d));
}

// "agent.connected[demo]=yes; ...; service.running[backend]=no: stopped; policy[...]=..." ->
// the steps that were not the happy path: "service.running[backend]=no: stopped → policy=ALLOWED".
std::string ShortPath(const std::string& why) {
  std::vector<std::string> keep;
  for (absl::string_view part : absl::StrSplit(why, "; ")) {
    const std::string p(part);
    const size_t eq = p.find('=');
    if (eq == std::string::npos) continue;
    const std::string decision = p.substr(eq + 1);
    if (decision == "yes" || decision == "no" || p.rfind("observation.fresh", 0) == 0) {
      if (p.rfind("action.in_flight", 0) != 0 && decision == "yes") continue;
      if (p.rfind("action.in_flight", 0) == 0) continue;
      if (p.rfind("route.ok", 0) == 0 && decision == "no") {
        keep.push_back(p);
      }
      continue;
    }
    keep.push_back(p.rfind("policy", 0) == 0 ? "policy=" + decision.substr(15) : p);
  }
  return absl::StrJoin(keep, " → ");
}

std::string ActionName(upkeep::v1::ActionKind kind) {
  std::string n = upkeep::v1::ActionKind_Name(kind);
  const std::string prefix = "ACTION_KIND_";
  if (n.rfind(prefix, 0) == 0) n = n.substr(prefix.size());
  for (char& ch : n) ch = ch == '_' ? '-' : static_cast<char>(std::tolower(ch));
  return n;
}

class Demo {
 public:
  Demo(StackHarness& h, const Colors& c) : h_(h), c_(c) {}

  Outcome Run(const Fault& fault) {
    Outcome out;
    out.fault = fault.name;
    std::printf("\n%s▶ %s%s  %s(runbook: %s)%s\n", c_.bold, fault.name.c_str(), c_.reset, c_.dim,
                fault.runbook.c_str(), c_.reset);
    const int64_t seq0 = h_.LastEventSeq();
    auto actions_before = h_.Actions();
    const size_t n_before = actions_before.ok() ? actions_before->size() : 0;
    absl::Status st = fault.inject(h_);
    const absl::Time t0 = absl::Now();  // the fault is in place from here
    if (!st.ok()) {
      out.note = absl::StrCat("inject failed: ", st.message());
      std::printf("  %sinject failed: %s%s\n", c_.red, std::string(st.message()).c_str(), c_.reset);
      return out;
    }
    std::printf("  %s+%7s%s  fault in place\n", c_.dim, "0 ms", c_.reset);

    // Follow the events as they come; stop at healed (or at the alert for alert faults).
    int64_t seq = seq0;
    bool saw_problem = false;
    bool done = false;
    absl::Time last_progress = absl::Now();
    const absl::Time deadline = t0 + absl::Seconds(fault.expect_alert ? 40 : 30);
    while (!done && absl::Now() < deadline && !g_interrupted) {
      auto events = h_.Events(seq);
      if (events.ok()) {
        for (const auto& e : *events) {
          seq = e.seq();
          const absl::Duration at = FromProto(e.at()) - t0;
          if (at < absl::ZeroDuration()) continue;  // the injection's own bookkeeping
          const bool warning = e.type() == "Warning";
          const char* color = warning ? c_.yellow : c_.green;
          std::printf("  %s+%7s%s  %s%-16s%s %s\n", c_.dim, Ms(at).c_str(), c_.reset, color,
                      e.reason().c_str(), c_.reset, e.message().c_str());
          if (e.reason() != "Applied" && e.reason() != "AgentConnected" && e.reason() != "Paused" &&
              e.reason() != "Resumed" && out.detected == absl::InfiniteDuration()) {
            out.detected = at;
            saw_problem = true;
          }
          if (fault.expect_alert && (e.reason() == "Alert" || e.reason() == "CrashLooping")) {
            out.healed = at;  // "ended" as expected
            out.ok = true;
            done = true;
          }
        }
      }
      if (!fault.expect_alert && saw_problem &&
          h_.ProxyStatus("/api/health", absl::Seconds(1)) == 200 &&
          h_.ProxyStatus("/", absl::Seconds(1)) == 200) {
        auto healed = h_.WaitServing(absl::Seconds(5));
        if (healed.ok()) {
          out.healed = absl::Now() - t0;
          out.ok = true;
          done = true;
        }
      }
      if (!done && absl::Now() - last_progress > absl::Seconds(2)) {
        std::printf("  %s… waiting (%s)%s\n", c_.dim, Ms(absl::Now() - t0).c_str(), c_.reset);
        last_progress = absl::Now();
      }
      if (!done) absl::SleepFor(absl::Milliseconds(10));  // poll pacing
    }
    auto actions = h_.Actions();
    if (actions.ok()) {
      for (size_t i = n_before; i < actions->size(); ++i) {
        const auto& a = (*actions)[i].action();
        out.actions.push_back(absl::StrCat(ActionName(a.kind()), " ", a.target()));
      }
    }
    // The decision path that chose the first action (its audit record's "why"), or the
    // diagnosis that raised the alert.
    if (actions.ok() && n_before < actions->size()) {
      out.path = ShortPath((*actions)[n_before].why());
    } else if (auto describe = h_.Describe();
               describe.ok() && describe->stack().status().diagnoses_size() > 0) {
      std::vector<std::string> parts;
      for (const auto& node : describe->stack().status().diagnoses(0).path()) {
        parts.push_back(absl::StrCat(node.step(),
                                     node.target().empty() ? "" : "[" + node.target() + "]", "=",
                                     node.decision()));
      }
      out.path = ShortPath(absl::StrJoin(parts, "; "));
    }
    if (fault.expect_alert && fault.after) {
      fault.after(h_).IgnoreError();
      h_.WaitServing(absl::Seconds(30)).IgnoreError();
    }
    if (out.ok) {
      std::printf("  %s✔ %s after %s%s\n", c_.green, fault.expect_alert ? "alerted" : "healed",
                  Ms(out.healed).c_str(), c_.reset);
    } else {
      out.note = "did not end as expected";
      std::printf("  %s✘ did not end as expected%s\n", c_.red, c_.reset);
    }
    return out;
  }

 private:
  StackHarness& h_;
  const Colors& c_;
};

void PrintTable(const std::vector<Outcome>& outcomes, const Colors& c) {
  std::printf("\n%s%-34s %-10s %-12s %-6s %s%s\n", c.bold, "FAULT", "DETECTED", "ENDED", "OK",
              "ACTIONS", c.reset);
  for (const auto& o : outcomes) {
    std::printf("%-34s %-10s %-12s %s%-6s%s %s\n", o.fault.c_str(), Ms(o.detected).c_str(),
                Ms(o.healed).c_str(), o.ok ? c.green : c.red, o.ok ? "yes" : "NO", c.reset,
                o.actions.empty() ? "-" : absl::StrJoin(o.actions, ", ").c_str());
  }
  std::printf("\n%sLast decision path per fault:%s\n", c.bold, c.reset);
  for (const auto& o : outcomes) {
    std::printf("  %-34s %s\n", o.fault.c_str(), o.path.empty() ? "-" : o.path.c_str());
  }
}

// Receives the demo notifier's webhooks on loopback.
class WebhookReceiver {
 public:
  WebhookReceiver() {
    server_.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> l(mu_);
      auto j = nlohmann::json::parse(req.body, nullptr, false);
      if (!j.is_discarded()) messages_.push_back(j);
      res.set_content("thanks", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~WebhookReceiver() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_, "/hook"); }
  std::vector<nlohmann::json> Alerts() {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<nlohmann::json> out;
    for (const auto& m : messages_) {
      if (m.value("event", "") == "alerts") out.push_back(m);
    }
    return out;
  }
  int count() {
    std::lock_guard<std::mutex> l(mu_);
    return static_cast<int>(messages_.size());
  }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::vector<nlohmann::json> messages_;
};

// A viewer token for the status page (the demo runs with TLS on).
std::string ViewerToken(const std::string& bin_dir, const std::string& data_dir) {
  const std::string cmd =
      absl::StrCat(fs::absolute(bin_dir).string(), "/upkeep-controller token create --data ",
                   data_dir, " --name demo-page --role viewer 2>/dev/null");
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r"); p != nullptr) {
    char buf[256];
    while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
    ::pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

int Main(int argc, char** argv) {
  bool once = false;
  std::string source_dir = ".";
  std::string bin_dir = "build/bin";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--once")
      once = true;
    else if (a == "--source" && i + 1 < argc)
      source_dir = argv[++i];
    else if (a == "--bin" && i + 1 < argc)
      bin_dir = argv[++i];
  }
  if (const char* e = std::getenv("DEMO_ONCE"); e != nullptr && std::string(e) == "1") once = true;
  ::signal(SIGINT, OnSignal);
  ::signal(SIGTERM, OnSignal);
  ::signal(SIGPIPE, SIG_IGN);
  const Colors c = MakeColors();

  HarnessOptions options;
  options.source_dir = fs::absolute(source_dir).string();
  options.bin_dir = fs::absolute(bin_dir).string();
  options.work_dir = fs::absolute(fs::path(source_dir) / ".demo").string();
  std::error_code ec;
  fs::remove_all(options.work_dir, ec);
  fs::create_directories(options.work_dir, ec);
  options.fixed_ports = true;
  // A webhook receiver for the demo's notifier: it prints what upkeep sends for the alert.
  WebhookReceiver receiver;
  options.controller_env = {"UPKEEP_DEMO_WEBHOOK=" + receiver.url()};
  for (int port : {18080, 18002, 13000, 17400, 9400}) {
    if (upkeep::testing::CanConnect("127.0.0.1", port)) {
      options.fixed_ports = false;  // something else uses the demo's ports: pick free ones
    }
  }

  std::printf("%supkeep demo%s — the 502 runbook, run by upkeep on a real stack\n", c.bold,
              c.reset);
  std::printf(
      "  starting controller, agent, and applying the demo stack "
      "(nginx → /api/ backend, / frontend)…\n");
  auto harness = StackHarness::Start(options);
  if (!harness.ok()) {
    std::fprintf(stderr, "upkeep-demo: %s\n", std::string(harness.status().message()).c_str());
    return 1;
  }
  StackHarness& h = **harness;
  const absl::Time t_apply = absl::Now();
  absl::Status up = h.WaitServing(absl::Seconds(30));
  if (!up.ok()) {
    std::fprintf(stderr, "upkeep-demo: %s\n  logs: %s/{controller,agent}.log\n",
                 std::string(up.message()).c_str(), options.work_dir.c_str());
    return 1;
  }
  std::printf(
      "  %s✔ stack serving through nginx on http://127.0.0.1:%d  "
      "(upkeep started 2 services and nginx in %s)%s\n",
      c.green, h.nginx_port(), Ms(absl::Now() - t_apply).c_str(), c.reset);

  // A notifier for alerts and their resolution, applied like a stack.
  {
    upkeep::v1::ApplyRequest req;
    auto* m = req.add_manifests();
    m->set_filename("demo-notifier.yaml");
    m->set_content(
        "apiVersion: upkeep/v1\nkind: Notifier\nmetadata: {name: demo-webhook}\n"
        "spec:\n  type: webhook\n  url: {env: UPKEEP_DEMO_WEBHOOK}\n"
        "  events: [alerts, crashLoops, resolved]\n");
    upkeep::v1::ApplyResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    const grpc::Status st = h.fleet().Apply(&ctx, req, &resp);
    std::printf("  %s notifier demo-webhook → %s%s\n", st.ok() ? "✔" : "✘", receiver.url().c_str(),
                st.ok() ? "" : (" (" + st.error_message() + ")").c_str());
  }
  const std::string token = ViewerToken(bin_dir, h.controller_data_dir());
  std::printf("  %sstatus page: %s%s%s  (live; a viewer token in the URL, kept as a cookie)\n",
              c.bold, h.status_url().c_str(), token.empty() ? "" : ("?token=" + token).c_str(),
              c.reset);

  const std::vector<Fault> faults = {
      {"backend killed", "backend container not running → start",
       [](StackHarness& s) { return s.CrashBackend(); }},
      {"backend hung (unhealthy)", "backend unhealthy → logs, restart",
       [](StackHarness& s) { return s.HangBackend(); }},
      {"frontend stopped", "frontend not running → start",
       [](StackHarness& s) { return s.StopFrontend(); }},
      {"nginx runs a stale upstream", "backend healthy but nginx can't connect → reload",
       [](StackHarness& s) { return s.PoisonNginxUpstream(); }},
      {"nginx stopped", "nginx down → test config, start",
       [](StackHarness& s) { return s.StopNginx(); }},
      {"nginx pointed at a wrong port", "all healthy, still 502 → alert with findings",
       [](StackHarness& s) { return s.MisconfigureNginxPort(); }, true,
       [](StackHarness& s) { return s.RestoreNginxConfig(); }},
  };
  Demo demo(h, c);
  std::vector<Outcome> outcomes;
  for (const auto& f : faults) {
    if (g_interrupted) break;
    outcomes.push_back(demo.Run(f));
    // Let the stack settle before the next fault.
    h.WaitServing(absl::Seconds(30)).IgnoreError();
  }
  PrintTable(outcomes, c);
  // What the webhook received for the wrong-port alert.
  upkeep::testing::WaitFor([&] { return !receiver.Alerts().empty(); }, absl::Seconds(5));
  for (const auto& alert : receiver.Alerts()) {
    std::printf("\n%sWebhook delivery (%s):%s %s\n", c.bold, receiver.url().c_str(), c.reset,
                alert.value("text", "").c_str());
    std::printf("  code %s · verdict %s · %zu path steps\n", alert.value("code", "").c_str(),
                alert.value("verdict", "").c_str(), alert["path"].size());
    for (const auto& f : alert["findings"]) {
      std::printf("  finding %s: %s\n", f.value("code", "").c_str(),
                  f.value("message", "").c_str());
      for (const auto& [k, v] : f["evidence"].items()) {
        std::string text = v.get<std::string>();
        if (text.size() > 160) text = text.substr(0, 160) + "…";
        for (char& ch : text) {
          if (ch == '\n') ch = ' ';
        }
        std::printf("    %-18s %s\n", k.c_str(), text.c_str());
      }
    }
  }
  std::printf("  (%d message(s) delivered in all, \"resolved\" follow-ups included)\n",
              receiver.count());
  bool all_ok = outcomes.size() == faults.size();
  for (const auto& o : outcomes) all_ok = all_ok && o.ok;

  if (once || g_interrupted) {
    std::printf("\n%s\n", all_ok ? "demo: every fault ended as expected"
                                 : "demo: some faults did not end as expected");
    h.Stop();
    return all_ok ? 0 : 1;
  }
  const std::string ctl = absl::StrCat(fs::absolute(bin_dir).string(), "/upkeepctl");
  std::printf(
      "\n%supkeep keeps the stack running. Poke at it (in another terminal):%s\n"
      "  export UPKEEP_CONTROLLER=%s UPKEEP_TLS_DIR=%s\n"
      "  %s get stacks\n"
      "  %s explain stack demo\n"
      "  %s events --watch\n"
      "  status page: %s\n"
      "  curl -s http://127.0.0.1:%d/api/fault/crash   # kill the backend, watch it come back\n"
      "  curl -s http://127.0.0.1:%d/api/health\n"
      "Ctrl-C stops everything the demo started.\n",
      c.bold, c.reset, h.controller_address().c_str(), h.tls_dir().c_str(), ctl.c_str(),
      ctl.c_str(), ctl.c_str(), h.status_url().c_str(), h.nginx_port(), h.nginx_port());
  std::fflush(stdout);
  while (!g_interrupted) absl::SleepFor(absl::Milliseconds(100));  // idle until Ctrl-C
  std::printf("\nstopping…\n");
  h.Stop();
  return all_ok ? 0 : 1;
}

}  // namespace
}  // namespace upkeep::demo

int main(int argc, char** argv) { return upkeep::demo::Main(argc, argv); }
