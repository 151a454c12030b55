// agent_load: N simulated agents in one process, one AgentService stream each (gRPC callback
// client reactors, no thread per agent), against a running upkeep-controller. Each agent's
// host runs one stack (applied by bench/controller/load.sh). Every agent reports a healthy
// observation every --period; --broken_share of them then report their backend down, and the
// tool measures from sending that observation to receiving the controller's START action
// (p50/p99), answers the action and reports healthy again. The controller's fleet-wide rate limit
// (--max-actions-per-second, 50 by default) paces repairs in a storm on purpose: each action says
// how long it was held back (Action.rate_limited_for), and the tool reports that wait apart from
// the decision latency (obs→action less the wait), and the two together ("with waits").
//
// It also measures each agent's connect time: from opening its channel and stream to the
// controller's answer to its hello (first desired state), p50/p99.
//
// With --tls_dir DIR (a CA directory of `upkeepctl tls init`), every simulated agent connects
// with mutual TLS as itself: its own certificate (DIR/agent-load-I.{crt,key}, issued with
// core/tls on first use and reused after), its own credentials and so its own connection, as a
// fleet of real agents would; the controller binds the hello to the certificate's host id.
// --channels 0 gives plaintext agents one connection each too, for a like-for-like comparison.
//
//   agent_load --controller 127.0.0.1:7400 --agents 1000 --seconds 30 [--controller_pid PID]
//              [--tls_dir DIR] [--channels 0]
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/proto_time.h"
#include "core/tls/tls.h"
#include "grpcpp/grpcpp.h"
#include "upkeep/v1/agent_service.grpc.pb.h"

ABSL_FLAG(std::string, controller, "127.0.0.1:7400", "controller address");
ABSL_FLAG(int, agents, 1000, "simulated agents (host ids load-0 .. load-N-1)");
ABSL_FLAG(int, seconds, 30, "how long to run");
ABSL_FLAG(double, period, 5.0, "seconds between an agent's periodic observations");
ABSL_FLAG(double, broken_share, 0.2, "share of agents that break once per period");
ABSL_FLAG(int, channels, 8,
          "gRPC channels to spread the streams over (0: one per agent; always so with TLS)");
ABSL_FLAG(std::string, tls_dir, "",
          "mutual TLS: the fleet CA directory (ca.crt, ca.key); agent certificates are issued "
          "there on first use");
ABSL_FLAG(int, controller_pid, 0, "pid of the controller, for its RSS");
ABSL_FLAG(double, reconnect_share, 0.0,
          "churn: share of agents whose stream is closed and opened again every period");
ABSL_FLAG(int, strangers, 0,
          "churn: hellos per period from host ids no stack names (each closed at once)");
ABSL_FLAG(double, trace_slow_ms, 0,
          "print each action slower than this (obs->action, waits included) to stderr with its "
          "host, action id and times, to find it in the controller's log (0: never)");
ABSL_FLAG(int, warmup_periods, 0,
          "leave out of the obs->action figures the actions answering observations sent in the "
          "first this many periods (the fleet's first observations after connecting)");
ABSL_FLAG(int, rss_every, 0, "print the controller's RSS every this many seconds (0: never)");

namespace {

namespace v1 = upkeep::v1;

struct Stats {
  absl::Mutex mu;
  // Observation -> action, less the time the fleet-wide rate limit held the action back
  // (Action.rate_limited_for): what deciding and delivering cost.
  std::vector<double> latencies_ms;
  // The same, the rate limit's wait included; and the waits alone (actions it held only).
  std::vector<double> total_ms;
  std::vector<double> held_ms;
  std::vector<double> connect_ms;
  std::atomic<int64_t> observations{0};
  std::atomic<int64_t> actions{0};
  std::atomic<int> connected{0};
  // Actions answering observations sent before this are left out (--warmup_periods).
  std::atomic<int64_t> measure_from_ns{0};
};

v1::AgentMessage Observation(const std::string& host, bool backend_running) {
  v1::AgentMessage m;
  v1::StackObservation* o = m.mutable_observation()->add_stacks();
  o->set_stack(host);  // the stack is named after its host (see load.sh)
  o->mutable_host()->set_host_id(host);
  o->mutable_host()->set_agent_connected(true);
  *o->mutable_observed_at() = upkeep::ToProto(absl::Now());
  v1::ServiceObservation* s = o->add_services();
  s->set_name("backend");
  s->set_exists(true);
  s->set_running(backend_running);
  if (backend_running) {
    s->set_health(v1::HEALTH_STATE_HEALTHY);
    s->mutable_probe()->set_ok(true);
  }
  return m;
}

class SimAgent : public grpc::ClientBidiReactor<v1::AgentMessage, v1::ControllerMessage> {
 public:
  // `opened`: the start of its connect time.
  SimAgent(v1::AgentService::Stub* stub, std::string host, Stats* stats,
           absl::Time opened = absl::Now())
      : host_(std::move(host)), stats_(stats), created_(opened) {
    stub->async()->Connect(&ctx_, this);
    v1::AgentMessage hello;
    hello.mutable_hello()->set_host_id(host_);
    hello.mutable_hello()->set_version("load");
    Queue(std::move(hello));
    StartRead(&in_);
    StartCall();
  }

  void Queue(v1::AgentMessage m) {
    std::lock_guard<std::mutex> lock(mu_);
    if (done_) return;
    out_.push_back(std::move(m));
    if (!writing_) {
      writing_ = true;
      StartWrite(&out_.front());
    }
  }

  // From the driver thread: a periodic observation, broken or not.
  void Tick(bool broken) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!ready_ || waiting_action_) return;
      if (broken) {
        waiting_action_ = true;
        broken_at_ = absl::Now();
      }
    }
    stats_->observations++;
    Queue(Observation(host_, !broken));
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!out_.empty()) out_.pop_front();
    if (!ok) {
      writing_ = false;
      return;
    }
    if (!out_.empty()) {
      StartWrite(&out_.front());
    } else {
      writing_ = false;
    }
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (in_.has_desired()) {
      bool first = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        first = !ready_;
        ready_ = true;
      }
      if (first) {
        stats_->connected++;
        absl::MutexLock lock(&stats_->mu);
        stats_->connect_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - created_));
      }
    } else if (in_.has_action()) {
      absl::Time since;
      {
        std::lock_guard<std::mutex> lock(mu_);
        since = broken_at_;
        waiting_action_ = false;
      }
      {
        const double total = absl::ToDoubleMilliseconds(absl::Now() - since);
        const double held =
            in_.action().has_rate_limited_for()
                ? absl::ToDoubleMilliseconds(upkeep::FromProto(in_.action().rate_limited_for()))
                : 0;
        if (absl::ToUnixNanos(since) >= stats_->measure_from_ns.load()) {
          absl::MutexLock lock(&stats_->mu);
          stats_->latencies_ms.push_back(std::max(0.0, total - held));
          stats_->total_ms.push_back(total);
          if (held > 0) stats_->held_ms.push_back(held);
        }
      }
      if (const double slow = absl::GetFlag(FLAGS_trace_slow_ms);
          slow > 0 && absl::ToDoubleMilliseconds(absl::Now() - since) > slow) {
        std::cerr << "slow action host=" << host_ << " id=" << in_.action().id()
                  << " kind=" << v1::ActionKind_Name(in_.action().kind())
                  << " broken_at=" << absl::FormatTime(since, absl::UTCTimeZone())
                  << " received=" << absl::FormatTime(absl::Now(), absl::UTCTimeZone())
                  << " total_ms=" << absl::ToDoubleMilliseconds(absl::Now() - since) << "\n";
      }
      stats_->actions++;
      v1::AgentMessage r;
      r.mutable_action_result()->set_id(in_.action().id());
      r.mutable_action_result()->set_kind(in_.action().kind());
      r.mutable_action_result()->set_target(in_.action().target());
      r.mutable_action_result()->set_outcome(v1::ACTION_OUTCOME_SUCCEEDED);
      *r.mutable_action_result()->mutable_finished_at() = upkeep::ToProto(absl::Now());
      Queue(std::move(r));
      Queue(Observation(host_, true));
    }
    StartRead(&in_);
  }

  void OnDone(const grpc::Status&) override {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    finished_ = true;
    cv_.notify_all();
  }

  void Cancel() { ctx_.TryCancel(); }
  void WaitDone() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return finished_; });
  }

 private:
  grpc::ClientContext ctx_;
  const std::string host_;
  Stats* stats_;
  v1::ControllerMessage in_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::AgentMessage> out_;
  bool writing_ = false;
  bool ready_ = false;
  bool waiting_action_ = false;
  bool done_ = false;
  bool finished_ = false;
  absl::Time broken_at_;
  const absl::Time created_;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

// utime + stime of `pid`, in seconds (0 when unknown).
double CpuSeconds(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream fields(stat.substr(paren + 2));
  std::string f;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14 || i == 15) ticks += std::atof(f.c_str());
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return absl::StrCat(a, " ", b, " ", c);
}

long RssKb(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  rlimit rl{65536, 65536};
  setrlimit(RLIMIT_NOFILE, &rl);
  const int n = absl::GetFlag(FLAGS_agents);
  Stats stats;
  const std::string tls_dir = absl::GetFlag(FLAGS_tls_dir);
  const int channels =
      tls_dir.empty() && absl::GetFlag(FLAGS_channels) > 0 ? absl::GetFlag(FLAGS_channels) : n;
  // Each TLS agent's own credentials (issued before the clock starts: not part of connecting).
  std::vector<std::shared_ptr<grpc::ChannelCredentials>> creds(channels);
  for (int i = 0; i < channels; ++i) {
    if (tls_dir.empty()) {
      creds[i] = grpc::InsecureChannelCredentials();
      continue;
    }
    const std::string host = absl::StrCat("load-", i);
    const std::string cert = absl::StrCat(tls_dir, "/agent-", host, ".crt");
    const std::string key = absl::StrCat(tls_dir, "/agent-", host, ".key");
    if (!std::ifstream(cert).good()) {
      auto issued = upkeep::tls::Issue(tls_dir, upkeep::tls::IssueRequest::Agent(host));
      if (!issued.ok()) {
        std::fprintf(stderr, "agent_load: %s\n", std::string(issued.status().message()).c_str());
        return 1;
      }
    }
    auto c = upkeep::tls::ChannelCredentials(tls_dir + "/ca.crt", cert, key);
    if (!c.ok()) {
      std::fprintf(stderr, "agent_load: %s\n", std::string(c.status().message()).c_str());
      return 1;
    }
    creds[i] = *c;
  }
  // Channels are created first, off the clock: gRPC connects a channel at its first call, so
  // what is timed below is each agent's TCP connect, TLS handshake and hello, all agents at
  // once (a fleet reconnecting after a controller restart).
  std::vector<std::unique_ptr<v1::AgentService::Stub>> stubs;
  const absl::Time setup = absl::Now();
  for (int i = 0; i < channels; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetString("upkeep.load.channel", absl::StrCat(i));  // distinct connections
    stubs.push_back(v1::AgentService::NewStub(
        grpc::CreateCustomChannel(absl::GetFlag(FLAGS_controller), creds[i], args)));
  }
  std::printf("creating %d channels took %.1f s (off the clock)\n", channels,
              absl::ToDoubleSeconds(absl::Now() - setup));
  std::vector<std::unique_ptr<SimAgent>> agents;
  const absl::Time start = absl::Now();
  for (int i = 0; i < n; ++i) {
    agents.push_back(std::make_unique<SimAgent>(stubs[i % stubs.size()].get(),
                                                absl::StrCat("load-", i), &stats));
  }
  const absl::Duration open_time = absl::Now() - start;
  while (stats.connected < n && absl::Now() - start < absl::Seconds(120)) {
    absl::SleepFor(absl::Milliseconds(100));  // waiting for hellos to be answered
  }
  const absl::Duration connect_time = absl::Now() - start;
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> coin(0, 1);
  const absl::Duration period = absl::Seconds(absl::GetFlag(FLAGS_period));
  const absl::Time run_start = absl::Now();
  stats.measure_from_ns = absl::ToUnixNanos(
      run_start + absl::GetFlag(FLAGS_warmup_periods) * absl::Seconds(absl::GetFlag(FLAGS_period)));
  const int64_t obs_before = stats.observations;
  long peak_rss = -1;
  const int pid = absl::GetFlag(FLAGS_controller_pid);
  const long start_rss = pid > 0 ? RssKb(pid) : -1;
  const double start_cpu = pid > 0 ? CpuSeconds(pid) : 0;
  const std::string start_load = LoadAverage();
  absl::Time next_rss = run_start;
  int stranger_seq = 0;
  while (absl::Now() - run_start < absl::Seconds(absl::GetFlag(FLAGS_seconds))) {
    const absl::Time tick = absl::Now();
    if (pid > 0 && absl::GetFlag(FLAGS_rss_every) > 0 && tick >= next_rss) {
      std::fprintf(stderr, "rss t=%.0fs %.1f MB\n", absl::ToDoubleSeconds(tick - run_start),
                   RssKb(pid) / 1024.0);
      next_rss = tick + absl::Seconds(absl::GetFlag(FLAGS_rss_every));
    }
    // Churn: streams closed and opened again, and strangers saying hello.
    for (int i = 0; i < n; ++i) {
      if (coin(rng) >= absl::GetFlag(FLAGS_reconnect_share)) continue;
      agents[i]->Cancel();
      agents[i]->WaitDone();
      agents[i] = std::make_unique<SimAgent>(stubs[i % stubs.size()].get(),
                                             absl::StrCat("load-", i), &stats);
    }
    std::vector<std::unique_ptr<SimAgent>> strangers;
    for (int i = 0; i < absl::GetFlag(FLAGS_strangers); ++i) {
      strangers.push_back(std::make_unique<SimAgent>(
          stubs[i % stubs.size()].get(), absl::StrCat("stranger-", stranger_seq++), &stats));
    }
    for (auto& a : strangers) a->Cancel();
    for (auto& a : strangers) a->WaitDone();
    for (int i = 0; i < n; ++i) {
      agents[i]->Tick(coin(rng) < absl::GetFlag(FLAGS_broken_share));
      // Spread one period's observations evenly.
      if (i % 100 == 99) {
        const absl::Time due = tick + period * (static_cast<double>(i + 1) / n);
        if (absl::Now() < due) absl::SleepFor(due - absl::Now());
      }
    }
    if (absl::GetFlag(FLAGS_controller_pid) > 0) {
      peak_rss = std::max(peak_rss, RssKb(absl::GetFlag(FLAGS_controller_pid)));
    }
    const absl::Time next = tick + period;
    if (absl::Now() < next) absl::SleepFor(next - absl::Now());
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - run_start);
  const double cpu = pid > 0 ? CpuSeconds(pid) - start_cpu : -1;
  std::vector<double> lat, connect, total, held;
  {
    absl::MutexLock lock(&stats.mu);
    lat = stats.latencies_ms;
    connect = stats.connect_ms;
    total = stats.total_ms;
    held = stats.held_ms;
  }
  std::printf("starting every stream took %.1f s (the tool's own pace)\n",
              absl::ToDoubleSeconds(open_time));
  if (start_rss > 0) {
    std::printf("controller RSS at start of the run %.1f MB, at the end %.1f MB\n",
                start_rss / 1024.0, RssKb(pid) / 1024.0);
  }
  std::printf("load average at the start of the run %s, at the end %s; controller CPU %.2f s/s\n",
              start_load.c_str(), LoadAverage().c_str(), cpu >= 0 ? cpu / secs : -1.0);
  // obs→action: from sending the broken observation to receiving the action, less the time the
  // fleet-wide rate limit held it (the action says how long); "held": actions it held, and their
  // wait; "with waits": the plain difference, what an agent sees.
  std::printf(
      "| agents | broken | transport | connections | connected | all connected s | "
      "connect p50 ms | connect p99 ms | observations/s | actions | obs→action p50 ms | p99 ms | "
      "held by rate limit | wait p50 ms | wait p99 ms | with waits p99 ms | controller RSS MB |"
      "\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::printf(
      "| %d | %.0f %% | %s | %d | %d | %.1f | %.1f | %.1f | %.0f | %lld | %.2f | %.2f | %zu | "
      "%.1f | %.1f | %.1f | %.1f |\n",
      n, 100 * absl::GetFlag(FLAGS_broken_share), tls_dir.empty() ? "plaintext" : "mTLS", channels,
      stats.connected.load(), absl::ToDoubleSeconds(connect_time), Percentile(connect, 0.5),
      Percentile(connect, 0.99), (stats.observations - obs_before) / secs,
      static_cast<long long>(stats.actions.load()), Percentile(lat, 0.5), Percentile(lat, 0.99),
      held.size(), Percentile(held, 0.5), Percentile(held, 0.99), Percentile(total, 0.99),
      peak_rss > 0 ? peak_rss / 1024.0 : -1.0);
  for (auto& a : agents) a->Cancel();
  for (auto& a : agents) a->WaitDone();
  return 0;
}
