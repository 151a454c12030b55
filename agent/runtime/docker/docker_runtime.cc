// DockerRuntime: the Engine API over the unix socket with libcurl (one easy handle per call;
// the events thread owns its own multi handle), JSON with nlohmann (exceptions caught here).
#include "agent/runtime/docker/docker_runtime.h"

#include <curl/curl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <map>
#include <optional>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/runtime/docker/compose.h"
#include "core/log.h"
#include "core/proto_time.h"
#include "nlohmann/json.hpp"

namespace upkeep::agent {
namespace {

using Json = nlohmann::json;
using docker_internal::ContainerEvent;
using docker_internal::ExitFacts;
using docker_internal::OwnCall;
using upkeep::v1::ServiceObservation;
using upkeep::v1::ServiceSpec;

constexpr double kMaxApiVersion = 1.41;

// Bounds of what is kept to tell a person's stop from a crash.
constexpr size_t kEventsPerContainer = 64;
constexpr size_t kContainersKept = 512;
constexpr size_t kOwnCallsPerContainer = 16;
constexpr absl::Duration kOwnCallKept = absl::Minutes(10);
// How long after a `die` reached the stream an Inspect is answered from it (ExitFromEvents):
// dockerd's clean-up after the event takes tens of ms; past that, dockerd answers at once
// again, and asking it bounds how stale the answer can be (a start by someone else is only
// known once its event is read).
constexpr absl::Duration kExitFromEventFor = absl::Milliseconds(250);

// The container events that tell how a run ended.
bool IsExitEvent(const std::string& action) {
  return action == "kill" || action == "die" || action == "stop" || action == "start" ||
         action == "restart" || action == "oom";
}

// "1700000000.123456789", as /events takes `since` and `until`.
std::string DockerTimestamp(absl::Time t) {
  const int64_t ns = std::max<int64_t>(0, absl::ToUnixNanos(t));
  return absl::StrFormat("%d.%09d", ns / 1000000000, ns % 1000000000);
}

struct HttpResponse {
  long code = 0;
  std::string body;
};

size_t AppendBody(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

std::string Shorten(const std::string& s, size_t n = 120) {
  std::string out = s.size() > n ? s.substr(0, n) + "..." : s;
  std::replace(out.begin(), out.end(), '\n', ' ');
  return out;
}

std::string UrlEncode(const std::string& s) {
  char* e = curl_easy_escape(nullptr, s.data(), static_cast<int>(s.size()));
  std::string out = e != nullptr ? e : "";
  curl_free(e);
  return out;
}

// "2024-01-02T03:04:05.123456789Z" -> Time; docker's zero value (year 1) -> nullopt.
bool ParseDockerTime(const std::string& s, absl::Time* out) {
  if (s.empty() || s.rfind("0001-", 0) == 0) return false;
  std::string err;
  return absl::ParseTime(absl::RFC3339_full, s, out, &err);
}

// Why the socket cannot be used, when that can be told without connecting.
std::string SocketProblem(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::StrCat("docker socket ", path, ": ", std::strerror(errno));
  }
  if (!S_ISSOCK(st.st_mode)) return absl::StrCat("docker socket ", path, " is not a socket");
  if (access(path.c_str(), R_OK | W_OK) != 0) {
    return absl::StrCat("docker socket ", path, ": permission denied (", std::strerror(errno), ")");
  }
  return "";
}

std::string ContainerSelector(const ServiceSpec& spec) {
  const auto& c = spec.container();
  if (!c.compose().project().empty() || !c.compose().service().empty()) {
    return absl::StrCat("compose ", c.compose().project(), "/", c.compose().service());
  }
  return absl::StrCat("container ", c.name().empty() ? spec.name() : c.name());
}

class DockerRuntime : public Runtime {
 public:
  explicit DockerRuntime(std::string socket_path) : socket_(std::move(socket_path)) {}

  ~DockerRuntime() override {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      if (multi_ != nullptr) curl_multi_wakeup(multi_);
    }
    if (events_thread_.joinable()) events_thread_.join();
  }

  ServiceObservation Inspect(const ServiceSpec& spec) override {
    ServiceObservation obs;
    obs.set_name(spec.name());
    bool cached = false;
    auto id = FindContainer(spec, &cached);
    if (!id.ok()) {
      obs.set_error(std::string(id.status().message()));
      return obs;
    }
    if (id->empty()) return obs;  // exists=false
    if (auto exited = ExitFromEvents(spec, *id); exited.has_value()) return *std::move(exited);
    const RunMark mark = MarkRun(*id);
    auto resp = Call("GET", absl::StrCat("/containers/", *id, "/json"), absl::Seconds(10));
    if (!resp.ok()) {
      obs.set_error(std::string(resp.status().message()));
      return obs;
    }
    if (resp->code == 404 && cached) {
      // Removed, and its destroy event not handled yet: ask dockerd which one it is now.
      ForgetResolved(spec);
      return Inspect(spec);
    }
    if (resp->code == 404) return obs;  // removed between list and inspect
    int stop_signal = SIGTERM;
    bool restarts = false;
    auto st = FillFromInspect(resp->body, &obs, &stop_signal, &restarts);
    if (!st.ok()) {
      obs.set_error(absl::StrCat(ContainerSelector(spec), ": ", st.message()));
      return obs;
    }
    if (obs.running() && !restarts) RememberRun(*id, mark, obs, stop_signal);
    if (obs.exists() && !obs.running() && obs.has_started_at() && obs.has_finished_at() &&
        !obs.oom_killed()) {
      ExitFacts exit;
      exit.started_at = upkeep::FromProto(obs.started_at());
      exit.exit_code = obs.exit_code();
      exit.oom_killed = obs.oom_killed();
      exit.stop_signal = stop_signal;
      obs.set_stopped_by_person(!OutsideStop(spec, obs.container_id(), exit).empty());
    }
    return obs;
  }

  absl::StatusOr<std::string> Create(const ServiceSpec& spec, absl::Duration timeout) override {
    return ComposeUp(spec.container().compose(), socket_, timeout);
  }

  absl::Status Start(const ServiceSpec& spec) override {
    return Action(spec, "start", "", absl::Seconds(60));
  }

  absl::Status Stop(const ServiceSpec& spec, absl::Duration timeout) override {
    const int64_t t = std::max<int64_t>(0, absl::ToInt64Seconds(timeout));
    return Action(spec, "stop", absl::StrCat("?t=", t), timeout + absl::Seconds(30));
  }

  absl::Status Restart(const ServiceSpec& spec, absl::Duration timeout) override {
    const int64_t t = std::max<int64_t>(0, absl::ToInt64Seconds(timeout));
    return Action(spec, "restart", absl::StrCat("?t=", t), timeout + absl::Seconds(60));
  }

  absl::StatusOr<std::string> Logs(const ServiceSpec& spec, int tail) override {
    bool cached = false;
    auto id = FindContainer(spec, &cached);
    if (!id.ok()) return id.status();
    if (id->empty())
      return absl::NotFoundError(absl::StrCat(ContainerSelector(spec), ": no such container"));
    // TTY containers send raw bytes; the others a multiplexed stream.
    bool tty = false;
    auto insp = Call("GET", absl::StrCat("/containers/", *id, "/json"), absl::Seconds(10));
    if (insp.ok() && insp->code == 404 && cached) {
      ForgetResolved(spec);  // removed, its destroy event not handled yet
      return Logs(spec, tail);
    }
    if (insp.ok() && insp->code == 200) {
      try {
        tty = Json::parse(insp->body).at("Config").value("Tty", false);
      } catch (const std::exception&) {
      }
    }
    auto resp =
        Call("GET",
             absl::StrCat("/containers/", *id, "/logs?stdout=1&stderr=1&tail=", std::max(0, tail)),
             absl::Seconds(20));
    if (!resp.ok()) return resp.status();
    if (resp->code != 200) {
      return absl::UnavailableError(absl::StrCat(ContainerSelector(spec), ": logs: HTTP ",
                                                 resp->code, ": ", ErrorMessage(resp->body)));
    }
    if (tty) return resp->body;
    return DemuxDockerStream(resp->body);
  }

  std::unique_ptr<Subscription> Watch(std::vector<ServiceSpec> services,
                                      std::function<void(const std::string&)> on_change) override {
    std::unique_ptr<Subscription> sub = watchers_.Add(std::move(services), std::move(on_change));
    absl::MutexLock lock(&mu_);
    if (!events_thread_.joinable() && !stopping_) {
      events_thread_ = std::thread([this] { EventsLoop(); });
    }
    return sub;
  }

 private:
  // One request on a fresh easy handle. Transport errors -> Unavailable with a clear reason.
  absl::StatusOr<HttpResponse> Raw(const std::string& method, const std::string& path,
                                   absl::Duration timeout) {
    CURL* h = curl_easy_init();
    if (h == nullptr) return absl::InternalError("curl_easy_init failed");
    HttpResponse out;
    char errbuf[CURL_ERROR_SIZE] = {0};
    const std::string url = absl::StrCat("http://localhost", path);
    curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, socket_.c_str());
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
    if (method == "POST") {
      curl_easy_setopt(h, CURLOPT_POST, 1L);
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, AppendBody);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &out.body);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(absl::ToInt64Milliseconds(timeout)));
    const CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out.code);
    curl_easy_cleanup(h);
    if (rc != CURLE_OK) {
      std::string why = SocketProblem(socket_);
      // dockerd is not there: it may come back as a new daemon that stopped its containers on
      // its way out (a timeout, by contrast, says nothing of that).
      if (!why.empty() || rc == CURLE_COULDNT_CONNECT) ForgetEvents(/*stream_down=*/false);
      if (why.empty()) {
        why = absl::StrCat("docker API ", method, " ", path, " via ", socket_, ": ",
                           errbuf[0] != 0 ? errbuf : curl_easy_strerror(rc));
      }
      return absl::UnavailableError(why);
    }
    return out;
  }

  // The /v1.xx prefix: min(server ApiVersion, 1.41), asked once per successful negotiation.
  absl::StatusOr<std::string> Prefix() {
    {
      absl::MutexLock lock(&mu_);
      if (!prefix_.empty()) return prefix_;
    }
    auto resp = Raw("GET", "/version", absl::Seconds(5));
    if (!resp.ok()) return resp.status();
    if (resp->code != 200) {
      return absl::UnavailableError(absl::StrCat("docker API GET /version via ", socket_, ": HTTP ",
                                                 resp->code, ": ", Shorten(resp->body)));
    }
    std::string version;
    try {
      version = Json::parse(resp->body).at("ApiVersion").get<std::string>();
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("docker API GET /version via ", socket_,
                       ": unexpected body (not a Docker Engine API?): ", Shorten(resp->body)));
    }
    double v = 0;
    if (!absl::SimpleAtod(version, &v) || v <= 0) {
      return absl::UnavailableError(
          absl::StrCat("docker API GET /version: bad ApiVersion '", version, "'"));
    }
    const std::string prefix = v < kMaxApiVersion ? absl::StrCat("/v", version) : "/v1.41";
    absl::MutexLock lock(&mu_);
    prefix_ = prefix;
    return prefix_;
  }

  absl::StatusOr<HttpResponse> Call(const std::string& method, const std::string& path,
                                    absl::Duration timeout) {
    auto prefix = Prefix();
    if (!prefix.ok()) return prefix.status();
    auto resp = Raw(method, *prefix + path, timeout);
    if (!resp.ok()) {
      {
        absl::MutexLock lock(&mu_);
        prefix_.clear();  // the daemon may come back as another version
      }
    }
    return resp;
  }

  static std::string ErrorMessage(const std::string& body) {
    try {
      return Json::parse(body).at("message").get<std::string>();
    } catch (const std::exception&) {
      return Shorten(body);
    }
  }

  // The container id for the spec; "" when there is none. Served from resolved_ while the
  // events stream shows that no container was created, destroyed or renamed since it was
  // looked up (see Resolved); `cached` says so, for a caller that finds the id gone.
  absl::StatusOr<std::string> FindContainer(const ServiceSpec& spec, bool* cached = nullptr) {
    const std::string key = ContainerSelector(spec);
    uint64_t generation;
    absl::Time live_since;
    {
      absl::MutexLock lock(&hist_mu_);
      auto it = resolved_.find(key);
      if (it != resolved_.end() && it->second.generation == generation_ &&
          live_since_ != absl::InfiniteFuture()) {
        if (cached != nullptr) *cached = true;
        return it->second.id;
      }
      generation = generation_;
      live_since = live_since_;
    }
    if (cached != nullptr) *cached = false;
    const absl::Time asked = absl::Now();
    bool unique = false;
    absl::StatusOr<std::string> id = LookUpContainer(spec, &unique);
    if (id.ok() && unique) {
      absl::MutexLock lock(&hist_mu_);
      // Kept only when the stream was live before we asked and nothing that could change the
      // answer arrived since.
      if (generation == generation_ && live_since == live_since_ && live_since <= asked) {
        resolved_[key] = Resolved{*id, generation};
      }
    }
    return id;
  }

  // The selector no longer names `id` (it answered 404): look it up again next time.
  void ForgetResolved(const ServiceSpec& spec) {
    absl::MutexLock lock(&hist_mu_);
    resolved_.erase(ContainerSelector(spec));
  }

  // FindContainer's lookup through the API. `unique`: the answer cannot change without a
  // container being created, destroyed or renamed (a name, or labels that only one container
  // carries — or none).
  absl::StatusOr<std::string> LookUpContainer(const ServiceSpec& spec, bool* unique) {
    const auto& c = spec.container();
    if (c.compose().project().empty() && c.compose().service().empty()) {
      const std::string name = c.name().empty() ? spec.name() : c.name();
      if (name.empty()) return absl::InvalidArgumentError("service has no container name");
      auto resp =
          Call("GET", absl::StrCat("/containers/", UrlEncode(name), "/json"), absl::Seconds(10));
      if (!resp.ok()) return resp.status();
      *unique = true;
      if (resp->code == 404) return std::string();
      if (resp->code != 200) {
        *unique = false;
        return absl::UnavailableError(absl::StrCat("container ", name, ": HTTP ", resp->code, ": ",
                                                   ErrorMessage(resp->body)));
      }
      try {
        return Json::parse(resp->body).at("Id").get<std::string>();
      } catch (const std::exception&) {
        return absl::UnavailableError(
            absl::StrCat("container ", name, ": unexpected inspect body: ", Shorten(resp->body)));
      }
    }
    Json labels = Json::array();
    if (!c.compose().project().empty()) {
      labels.push_back("com.docker.compose.project=" + c.compose().project());
    }
    if (!c.compose().service().empty()) {
      labels.push_back("com.docker.compose.service=" + c.compose().service());
    }
    const Json filters = {{"label", labels}};
    auto resp = Call("GET", "/containers/json?all=1&filters=" + UrlEncode(filters.dump()),
                     absl::Seconds(10));
    if (!resp.ok()) return resp.status();
    const std::string what = ContainerSelector(spec);
    if (resp->code != 200) {
      return absl::UnavailableError(absl::StrCat(what, ": list containers: HTTP ", resp->code, ": ",
                                                 ErrorMessage(resp->body)));
    }
    try {
      const Json list = Json::parse(resp->body);
      if (!list.is_array()) throw std::runtime_error("not an array");
      // With two or more, which one is chosen depends on which runs: not kept.
      *unique = list.size() <= 1;
      // Prefer a running container, then the newest.
      std::string best;
      bool best_running = false;
      int64_t best_created = -1;
      for (const Json& item : list) {
        const bool running = item.value("State", "") == "running";
        const int64_t created = item.value("Created", int64_t{0});
        if (best.empty() || (running && !best_running) ||
            (running == best_running && created > best_created)) {
          best = item.at("Id").get<std::string>();
          best_running = running;
          best_created = created;
        }
      }
      return best;
    } catch (const std::exception&) {
      return absl::UnavailableError(
          absl::StrCat(what, ": unexpected container list body: ", Shorten(resp->body)));
    }
  }

  // `restarts`: the container has a restart policy (Docker may start it again by itself).
  static absl::Status FillFromInspect(const std::string& body, ServiceObservation* obs,
                                      int* stop_signal, bool* restarts) {
    try {
      const Json j = Json::parse(body);
      const Json& state = j.at("State");
      *restarts = false;
      if (j.contains("HostConfig") && j["HostConfig"].is_object() &&
          j["HostConfig"].contains("RestartPolicy") &&
          j["HostConfig"]["RestartPolicy"].is_object()) {
        const std::string policy = j["HostConfig"]["RestartPolicy"].value("Name", "");
        *restarts = !policy.empty() && policy != "no";
      }
      if (j.contains("Config") && j["Config"].is_object()) {
        const Json& sig = j["Config"].value("StopSignal", Json());
        if (sig.is_string()) {
          *stop_signal = docker_internal::ParseStopSignal(sig.get<std::string>());
        }
      }
      obs->set_exists(true);
      obs->set_container_id(j.value("Id", ""));
      obs->set_running(state.value("Running", false));
      obs->set_exit_code(state.value("ExitCode", 0));
      obs->set_oom_killed(state.value("OOMKilled", false));
      obs->set_restart_count(j.value("RestartCount", 0));
      obs->set_pid(state.value("Pid", 0));
      absl::Time t;
      if (ParseDockerTime(state.value("StartedAt", ""), &t)) {
        *obs->mutable_started_at() = upkeep::ToProto(t);
      }
      if (ParseDockerTime(state.value("FinishedAt", ""), &t)) {
        *obs->mutable_finished_at() = upkeep::ToProto(t);
      }
      // The container's own addresses, so a diagnosis can compare them with the address nginx
      // dialled (an upstream by name is resolved once, when nginx loads its config).
      if (j.contains("NetworkSettings") && j["NetworkSettings"].is_object()) {
        const Json& ns = j["NetworkSettings"];
        if (ns.contains("Networks") && ns["Networks"].is_object()) {
          for (const auto& [name, net] : ns["Networks"].items()) {
            if (!net.is_object()) continue;
            for (const char* key : {"IPAddress", "GlobalIPv6Address"}) {
              const std::string ip = net.value(key, "");
              if (!ip.empty()) obs->add_addresses(ip);
            }
          }
        }
      }
      if (state.contains("Health") && state["Health"].is_object()) {
        const std::string h = state["Health"].value("Status", "");
        if (h == "starting") obs->set_runtime_health(upkeep::v1::RUNTIME_HEALTH_STARTING);
        if (h == "healthy") obs->set_runtime_health(upkeep::v1::RUNTIME_HEALTH_HEALTHY);
        if (h == "unhealthy") obs->set_runtime_health(upkeep::v1::RUNTIME_HEALTH_UNHEALTHY);
      }
      return absl::OkStatus();
    } catch (const std::exception&) {
      obs->set_exists(false);
      return absl::UnavailableError(
          absl::StrCat("unexpected container inspect body: ", Shorten(body)));
    }
  }

  absl::Status Action(const ServiceSpec& spec, const std::string& verb, const std::string& query,
                      absl::Duration timeout) {
    bool cached = false;
    auto id = FindContainer(spec, &cached);
    if (!id.ok()) return id.status();
    const std::string what = ContainerSelector(spec);
    if (id->empty()) return absl::NotFoundError(absl::StrCat(what, ": no such container"));
    // The kill/die/stop events of our own stop or restart are stamped while the call runs.
    const bool stops = verb == "stop" || verb == "restart";
    const absl::Time begin = stops ? BeginOwnCall(*id) : absl::InfinitePast();
    auto resp = Call("POST", absl::StrCat("/containers/", *id, "/", verb, query), timeout);
    if (stops) EndOwnCall(*id, begin);
    if (!resp.ok()) return resp.status();
    if (resp->code == 204 || resp->code == 304 || resp->code == 200) {
      ForgetExit(*id);  // its start event may not have reached the stream yet
      return absl::OkStatus();
    }
    if (resp->code == 404 && cached) {
      ForgetResolved(spec);
      return Action(spec, verb, query, timeout);
    }
    if (resp->code == 404) return absl::NotFoundError(absl::StrCat(what, ": no such container"));
    return absl::UnavailableError(
        absl::StrCat(what, ": ", verb, ": HTTP ", resp->code, ": ", ErrorMessage(resp->body)));
  }

  // ---- an exit told by the events stream ----

  // Where a container's runs stood when an Inspect was sent (see RememberRun).
  struct RunMark {
    uint64_t generation = 0;
    absl::Time live_since;
    uint64_t starts = 0;
    absl::Time asked;
  };

  RunMark MarkRun(const std::string& id) {
    RunMark m;
    m.asked = absl::Now();
    absl::MutexLock lock(&hist_mu_);
    m.generation = generation_;
    m.live_since = live_since_;
    auto it = history_.find(id);
    if (it != history_.end()) m.starts = it->second.starts;
    return m;
  }

  // Keeps what an Inspect said of a running container, for ExitFromEvents: only when the stream
  // was live before the Inspect was sent and no start of the container (nor a break of the
  // stream) came since, so the answer is of the run the next `die` ends.
  void RememberRun(const std::string& id, const RunMark& mark, const ServiceObservation& obs,
                   int stop_signal) {
    absl::MutexLock lock(&hist_mu_);
    if (mark.generation != generation_ || mark.live_since != live_since_ ||
        mark.live_since > mark.asked) {
      return;
    }
    History& h = history_[id];
    if (h.starts != mark.starts) return;
    h.touched = absl::Now();
    h.run = obs;
    h.run_stop_signal = stop_signal;
    h.run_starts = mark.starts;
    h.has_run = true;
  }

  // A start begins a new run (a `docker restart` or a restart policy logs `start` too); a `die`
  // (exitCode in its attributes) ends the current one.
  void NoteRun(const std::string& id, const ContainerEvent& event, const Json& attrs) {
    int exit_code = 0;
    const bool die = event.action == "die" && attrs.contains("exitCode") &&
                     attrs["exitCode"].is_string() &&
                     absl::SimpleAtoi(attrs["exitCode"].get<std::string>(), &exit_code);
    absl::MutexLock lock(&hist_mu_);
    auto it = history_.find(id);
    if (it == history_.end()) return;
    History& h = it->second;
    if (event.action == "start") {
      ++h.starts;
      h.died = false;
    } else if (die) {
      h.died = true;
      h.died_read = absl::Now();
      h.died_starts = h.starts;
      h.died_at = event.at;
      h.died_exit_code = exit_code;
    }
  }

  // An action of ours changed the container: until the stream tells how, ask dockerd.
  void ForgetExit(const std::string& id) {
    absl::MutexLock lock(&hist_mu_);
    auto it = history_.find(id);
    if (it != history_.end()) it->second.died = false;
  }

  // The service's container exited and the events stream said so: its state, from the `die`
  // event (exit code, time) and the last Inspect of the run it ended, without asking dockerd.
  // dockerd publishes `die` while it still holds the container's lock for its clean-up
  // (unmounts, network, the state written to disk: 20-30 ms here), and an Inspect sent then
  // waits for all of it; a `start` waits for it too, but sent at once it queues behind the
  // clean-up instead of after it. nullopt: not known that way (ask dockerd).
  std::optional<ServiceObservation> ExitFromEvents(const ServiceSpec& spec, const std::string& id) {
    ServiceObservation obs;
    ExitFacts exit;
    {
      absl::MutexLock lock(&hist_mu_);
      if (live_since_ == absl::InfiniteFuture()) return std::nullopt;
      auto it = history_.find(id);
      if (it == history_.end()) return std::nullopt;
      const History& h = it->second;
      if (!h.died || absl::Now() - h.died_read >= kExitFromEventFor || !h.has_run ||
          h.run_starts != h.died_starts || !h.run.has_started_at()) {
        return std::nullopt;
      }
      obs = h.run;
      exit.started_at = upkeep::FromProto(h.run.started_at());
      exit.stop_signal = h.run_stop_signal;
      exit.exit_code = h.died_exit_code;
      exit.oom_killed = std::any_of(h.events.begin(), h.events.end(), [&](const ContainerEvent& e) {
        return e.action == "oom" && e.at >= exit.started_at && e.at <= h.died_at;
      });
      *obs.mutable_finished_at() = upkeep::ToProto(h.died_at);
    }
    obs.set_name(spec.name());
    obs.set_running(false);
    obs.set_pid(0);
    obs.set_exit_code(exit.exit_code);
    obs.set_oom_killed(exit.oom_killed);
    obs.clear_addresses();  // a stopped container has none
    obs.clear_listening();
    if (!exit.oom_killed) obs.set_stopped_by_person(!OutsideStop(spec, id, exit).empty());
    return obs;
  }

  // ---- a person's stop ----

  // Why the container's last run ended by a person's stop; "" when it did not.
  std::string OutsideStop(const ServiceSpec& spec, const std::string& id, const ExitFacts& exit) {
    if (id.empty()) return "";
    bool replay;
    {
      absl::MutexLock lock(&hist_mu_);
      History& h = history_[id];
      h.touched = absl::Now();
      replay = h.replayed_run != exit.started_at;
      // The stream saw the whole run, up to its die (events arrive in order): nothing to ask.
      if (replay && live_since_ <= exit.started_at) {
        for (const auto& e : h.events) {
          if (e.action == "die" && e.at >= exit.started_at) replay = false;
        }
      }
    }
    if (replay) {
      auto events = Replay(id, exit.started_at);
      if (events.ok()) {
        AddEvents(id, *events);
        absl::MutexLock lock(&hist_mu_);
        history_[id].replayed_run = exit.started_at;
      } else {
        UPKEEP_LOG(
            warn, "docker_events_replay_failed",
            {{"container", id.substr(0, 12)}, {"error", std::string(events.status().message())}});
      }
    }
    std::vector<ContainerEvent> events;
    std::vector<OwnCall> own;
    {
      absl::MutexLock lock(&hist_mu_);
      auto it = history_.find(id);
      if (it != history_.end()) events = it->second.events;
      auto o = own_.find(id);
      if (o != own_.end()) own = o->second;
    }
    std::string cause = docker_internal::OutsideStopCause(events, own, exit);
    if (!cause.empty()) {
      absl::MutexLock lock(&hist_mu_);
      auto it = history_.find(id);
      if (it != history_.end() && it->second.logged_run != exit.started_at) {
        it->second.logged_run = exit.started_at;
        UPKEEP_LOG(info, "docker_stopped_outside_upkeep",
                   {{"service", spec.name()}, {"container", id.substr(0, 12)}, {"cause", cause}});
      }
    }
    return cause;
  }

  // The container's kill/die/stop/start/restart/oom events since `started_at` from dockerd's
  // own event buffer: one request that ends at once (`until` is now, in the past on arrival).
  absl::StatusOr<std::vector<ContainerEvent>> Replay(const std::string& id, absl::Time started_at) {
    const Json filters = {{"type", Json::array({"container"})}, {"container", Json::array({id})}};
    const std::string path = absl::StrCat(
        "/events?since=", DockerTimestamp(started_at - absl::Seconds(1)),
        "&until=", DockerTimestamp(absl::Now()), "&filters=", UrlEncode(filters.dump()));
    auto resp = Call("GET", path, absl::Seconds(5));
    if (!resp.ok()) return resp.status();
    if (resp->code != 200) {
      return absl::UnavailableError(absl::StrCat("events of ", id.substr(0, 12), ": HTTP ",
                                                 resp->code, ": ", ErrorMessage(resp->body)));
    }
    std::vector<ContainerEvent> out;
    size_t start = 0;
    while (start < resp->body.size()) {
      size_t nl = resp->body.find('\n', start);
      if (nl == std::string::npos) nl = resp->body.size();
      const std::string line = resp->body.substr(start, nl - start);
      start = nl + 1;
      if (absl::StripAsciiWhitespace(line).empty()) continue;
      try {
        const Json ev = Json::parse(line);
        ContainerEvent e;
        if (ev.value("Type", "") == "container" && ev.at("Actor").value("ID", "") == id &&
            ParseEvent(ev, &e)) {
          out.push_back(std::move(e));
        }
      } catch (const std::exception&) {
        return absl::UnavailableError(
            absl::StrCat("events of ", id.substr(0, 12), ": unexpected line: ", Shorten(line)));
      }
    }
    return out;
  }

  // An event that tells how a run ended, with its time and (kill) signal.
  static bool ParseEvent(const Json& ev, ContainerEvent* out) {
    const std::string action = ev.value("Action", "");
    if (!IsExitEvent(action)) return false;
    int64_t ns = 0;
    if (ev.contains("timeNano") && ev["timeNano"].is_number_integer()) {
      ns = ev["timeNano"].get<int64_t>();
    } else if (ev.contains("time") && ev["time"].is_number_integer()) {
      ns = ev["time"].get<int64_t>() * 1000000000;
    } else {
      return false;
    }
    out->action = action;
    out->at = absl::FromUnixNanos(ns);
    out->signal = 0;
    if (action == "kill") {
      const Json attrs = ev.at("Actor").value("Attributes", Json::object());
      const std::string sig = attrs.value("signal", "");
      if (!absl::SimpleAtoi(sig, &out->signal)) out->signal = docker_internal::ParseStopSignal(sig);
    }
    return true;
  }

  void AddEvents(const std::string& id, const std::vector<ContainerEvent>& events) {
    absl::MutexLock lock(&hist_mu_);
    History& h = history_[id];
    h.touched = absl::Now();
    for (const auto& e : events) {
      const bool seen = std::any_of(h.events.begin(), h.events.end(), [&](const ContainerEvent& k) {
        return k.at == e.at && k.action == e.action && k.signal == e.signal;
      });
      if (!seen) h.events.push_back(e);
    }
    std::stable_sort(h.events.begin(), h.events.end(),
                     [](const ContainerEvent& a, const ContainerEvent& b) { return a.at < b.at; });
    if (h.events.size() > kEventsPerContainer) {
      h.events.erase(h.events.begin(), h.events.end() - kEventsPerContainer);
    }
    while (history_.size() > kContainersKept) {
      auto oldest = history_.begin();
      for (auto it = history_.begin(); it != history_.end(); ++it) {
        if (it->second.touched < oldest->second.touched) oldest = it;
      }
      history_.erase(oldest);
    }
  }

  // The stream broke or dockerd could not be reached: what it told may be from a daemon that
  // has since shut down (stopping its containers as `docker stop` would). Judge again from the
  // daemon that answers next.
  void ForgetEvents(bool stream_down) {
    absl::MutexLock lock(&hist_mu_);
    history_.clear();
    resolved_.clear();
    ++generation_;
    if (stream_down) live_since_ = absl::InfiniteFuture();
  }

  absl::Time BeginOwnCall(const std::string& id) {
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&hist_mu_);
    auto& calls = own_[id];
    calls.erase(std::remove_if(calls.begin(), calls.end(),
                               [&](const OwnCall& c) { return c.end < now - kOwnCallKept; }),
                calls.end());
    if (calls.size() >= kOwnCallsPerContainer) calls.erase(calls.begin());
    calls.push_back({now, absl::InfiniteFuture()});
    return now;
  }

  void EndOwnCall(const std::string& id, absl::Time begin) {
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&hist_mu_);
    for (auto& c : own_[id]) {
      if (c.begin == begin && c.end == absl::InfiniteFuture()) {
        c.end = now;
        break;
      }
    }
  }

  // ---- events ----

  struct StreamState {
    DockerRuntime* self;
    std::string buffer;
  };

  static size_t OnEventsData(char* data, size_t size, size_t n, void* user) {
    auto* st = static_cast<StreamState*>(user);
    st->buffer.append(data, size * n);
    size_t nl;
    while ((nl = st->buffer.find('\n')) != std::string::npos) {
      st->self->HandleEvent(st->buffer.substr(0, nl));
      st->buffer.erase(0, nl + 1);
    }
    if (st->buffer.size() > (1 << 20)) st->buffer.clear();  // a runaway line
    return size * n;
  }

  static bool Matches(const ServiceSpec& spec, const Json& attrs) {
    const auto& c = spec.container();
    auto attr = [&](const char* key) {
      auto it = attrs.find(key);
      return it != attrs.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    if (!c.compose().project().empty() || !c.compose().service().empty()) {
      return (c.compose().project().empty() ||
              attr("com.docker.compose.project") == c.compose().project()) &&
             (c.compose().service().empty() ||
              attr("com.docker.compose.service") == c.compose().service());
    }
    const std::string name = c.name().empty() ? spec.name() : c.name();
    return attr("name") == name;
  }

  void HandleEvent(const std::string& line) {
    if (line.empty()) return;
    std::string action;
    std::string id;
    Json attrs;
    ContainerEvent event;
    try {
      const Json ev = Json::parse(line);
      if (ev.value("Type", "") != "container") return;
      action = ev.value("Action", "");
      attrs = ev.at("Actor").value("Attributes", Json::object());
      id = ev.at("Actor").value("ID", "");
      if (!ParseEvent(ev, &event)) event.action.clear();
    } catch (const std::exception&) {
      UPKEEP_LOG(warn, "docker_event_unparsable", {{"line", Shorten(line)}});
      return;
    }
    const std::string verb = action.substr(0, action.find(':'));
    if (verb == "create" || verb == "destroy" || verb == "rename") {
      // Which container a selector names may have changed: every lookup is asked again.
      absl::MutexLock lock(&hist_mu_);
      resolved_.clear();
      ++generation_;
    }
    if (!id.empty()) {
      if (action == "destroy") {
        absl::MutexLock lock(&hist_mu_);
        history_.erase(id);
      } else if (!event.action.empty()) {
        AddEvents(id, {event});
        NoteRun(id, event, attrs);
      }
    }
    static const char* kInteresting[] = {"die",           "start", "stop",    "restart", "kill",
                                         "health_status", "oom",   "destroy", "pause",   "unpause"};
    if (std::none_of(std::begin(kInteresting), std::end(kInteresting),
                     [&](const char* v) { return verb == v; })) {
      return;
    }
    watchers_.Notify(
        [&](const std::vector<ServiceSpec>& watched, const ServiceWatchers::Callback& call) {
          for (const auto& s : watched) {
            if (Matches(s, attrs)) call(s.name());
          }
        });
  }

  void NotifyAll() {
    watchers_.Notify(
        [](const std::vector<ServiceSpec>& watched, const ServiceWatchers::Callback& call) {
          for (const auto& s : watched) call(s.name());
        });
  }

  // Streams /events until it breaks or the runtime is destroyed. Returns whether data flowed.
  bool StreamOnce() {
    auto prefix = Prefix();
    if (!prefix.ok()) return false;
    const Json filters = {{"type", Json::array({"container"})}};
    const std::string url =
        absl::StrCat("http://localhost", *prefix, "/events?filters=", UrlEncode(filters.dump()));
    CURL* h = curl_easy_init();
    CURLM* m = curl_multi_init();
    StreamState st{this, ""};
    curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, socket_.c_str());
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, OnEventsData);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &st);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_multi_add_handle(m, h);
    {
      absl::MutexLock lock(&mu_);
      multi_ = m;
    }
    bool connected = false;
    bool ok_status = true;
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) break;
      }
      int running = 0;
      curl_multi_perform(m, &running);
      if (!connected) {
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        if (code == 200) {
          connected = true;
          OnConnected();
        } else if (code != 0) {
          ok_status = false;
          UPKEEP_LOG(warn, "docker_events_http_error", {{"code", std::to_string(code)}});
          break;
        }
      }
      if (running == 0) break;
      curl_multi_poll(m, nullptr, 0, 1000, nullptr);
    }
    {
      absl::MutexLock lock(&mu_);
      multi_ = nullptr;
    }
    curl_multi_remove_handle(m, h);
    curl_easy_cleanup(h);
    curl_multi_cleanup(m);
    return connected && ok_status;
  }

  void OnConnected() {
    {
      absl::MutexLock lock(&hist_mu_);
      live_since_ = absl::Now();  // every event from now on reaches HandleEvent
    }
    bool reconnect;
    {
      absl::MutexLock lock(&mu_);
      reconnect = ever_connected_;
      ever_connected_ = true;
      ++connects_;
    }
    UPKEEP_LOG(info, "docker_events_connected", {{"socket", socket_}});
    // Changes may have happened while the stream was down: have everything re-inspected.
    if (reconnect) NotifyAll();
  }

  void EventsLoop() {
    absl::Duration backoff = absl::Milliseconds(100);
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) return;
      }
      const bool had_data = StreamOnce();
      ForgetEvents(/*stream_down=*/true);
      if (had_data) backoff = absl::Milliseconds(100);
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) return;
        prefix_.clear();
      }
      UPKEEP_LOG(info, "docker_events_reconnecting",
                 {{"socket", socket_}, {"in", absl::FormatDuration(backoff)}});
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), backoff);
      if (stopping_) return;
      backoff = std::min(backoff * 2, absl::Seconds(2));
    }
  }

  const std::string socket_;
  absl::Mutex mu_;
  std::string prefix_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  CURLM* multi_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool ever_connected_ ABSL_GUARDED_BY(mu_) = false;
  int connects_ ABSL_GUARDED_BY(mu_) = 0;
  ServiceWatchers watchers_;
  std::thread events_thread_;

  // What is known of each container's recent runs (by id). hist_mu_ is never held across I/O.
  struct History {
    std::vector<ContainerEvent> events;              // sorted by time, at most kEventsPerContainer
    absl::Time replayed_run = absl::InfinitePast();  // StartedAt of the run replayed from dockerd
    absl::Time logged_run = absl::InfinitePast();    // StartedAt of the run logged as stopped
    absl::Time touched = absl::InfinitePast();
    // Runs, as the stream told them (ExitFromEvents): `starts` counts start events; `run`
    // is the last Inspect of the container running, taken in run `run_starts` (RememberRun; only
    // for a container without a restart policy); `died`: a `die` ended run `died_starts` at
    // `died_at` with `died_exit_code`, and no start came since (used for kExitFromEventFor).
    uint64_t starts = 0;
    bool has_run = false;
    ServiceObservation run;
    int run_stop_signal = SIGTERM;
    uint64_t run_starts = 0;
    bool died = false;
    absl::Time died_read;  // when the stream delivered that `die`
    uint64_t died_starts = 0;
    absl::Time died_at;
    int died_exit_code = 0;
  };
  absl::Mutex hist_mu_;
  std::map<std::string, History> history_ ABSL_GUARDED_BY(hist_mu_);
  // Since when the events stream has delivered every event; InfiniteFuture while it is down.
  absl::Time live_since_ ABSL_GUARDED_BY(hist_mu_) = absl::InfiniteFuture();
  // This runtime's own stops and restarts, by container id (kept apart from history_: a broken
  // stream forgets events, never our own calls).
  std::map<std::string, std::vector<OwnCall>> own_ ABSL_GUARDED_BY(hist_mu_);
  // Which container each selector (ContainerSelector) resolved to, so that an Inspect or an
  // action costs one request instead of a list and a request. An entry holds while the events
  // stream stays up and no container is created, destroyed or renamed (each of those bumps
  // generation_ and clears them all); only answers that cannot change otherwise are kept (see
  // LookUpContainer). A 404 on a kept id forgets it and asks again.
  struct Resolved {
    std::string id;
    uint64_t generation = 0;
  };
  std::map<std::string, Resolved> resolved_ ABSL_GUARDED_BY(hist_mu_);
  uint64_t generation_ ABSL_GUARDED_BY(hist_mu_) = 0;
};

}  // namespace

namespace docker_internal {

int ParseStopSignal(const std::string& raw) {
  std::string s = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(raw));
  if (s.empty()) return SIGTERM;
  int n = 0;
  if (absl::SimpleAtoi(s, &n)) return n > 0 && n < 65 ? n : 0;
  if (absl::StartsWith(s, "SIG")) s = s.substr(3);
  static const std::pair<const char*, int> kNames[] = {
      {"HUP", SIGHUP},       {"INT", SIGINT},   {"QUIT", SIGQUIT},   {"ILL", SIGILL},
      {"TRAP", SIGTRAP},     {"ABRT", SIGABRT}, {"BUS", SIGBUS},     {"FPE", SIGFPE},
      {"KILL", SIGKILL},     {"USR1", SIGUSR1}, {"SEGV", SIGSEGV},   {"USR2", SIGUSR2},
      {"PIPE", SIGPIPE},     {"ALRM", SIGALRM}, {"TERM", SIGTERM},   {"CHLD", SIGCHLD},
      {"CONT", SIGCONT},     {"STOP", SIGSTOP}, {"TSTP", SIGTSTP},   {"TTIN", SIGTTIN},
      {"TTOU", SIGTTOU},     {"URG", SIGURG},   {"XCPU", SIGXCPU},   {"XFSZ", SIGXFSZ},
      {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},
      {"PWR", SIGPWR},       {"SYS", SIGSYS}};
  for (const auto& [name, num] : kNames) {
    if (s == name) return num;
  }
  return 0;
}

std::string OutsideStopCause(const std::vector<ContainerEvent>& unsorted,
                             const std::vector<OwnCall>& own, const ExitFacts& exit) {
  if (exit.oom_killed) return "";
  std::vector<ContainerEvent> events = unsorted;
  std::stable_sort(events.begin(), events.end(),
                   [](const ContainerEvent& a, const ContainerEvent& b) { return a.at < b.at; });
  std::string cause;
  for (const auto& e : events) {
    if (e.at < exit.started_at) continue;  // an earlier run
    if (e.action == "oom") return "";      // the OOM killer is never a person
    const bool ours = std::any_of(
        own.begin(), own.end(), [&](const OwnCall& c) { return c.begin <= e.at && e.at <= c.end; });
    if (ours) continue;
    if (e.action == "start" || e.action == "restart") {
      cause.clear();  // a later start ends what came before
    } else if (e.action == "stop") {
      cause = "docker stop";
    } else if (e.action == "kill" && e.signal > 0) {
      if (e.signal == SIGKILL) {
        cause = "docker kill (SIGKILL)";
      } else if (e.signal == exit.stop_signal) {
        cause = absl::StrCat("docker stop or kill (signal ", e.signal,
                             ", the container's stop signal)");
      } else if (exit.exit_code == 128 + e.signal) {
        cause = absl::StrCat("docker kill (signal ", e.signal, ", exit code ", exit.exit_code, ")");
      }
    }
  }
  return cause;
}

}  // namespace docker_internal

std::string DemuxDockerStream(const std::string& raw) {
  std::string out;
  size_t off = 0;
  while (off + 8 <= raw.size()) {
    const auto* h = reinterpret_cast<const unsigned char*>(raw.data() + off);
    if (h[0] > 2 || h[1] != 0 || h[2] != 0 || h[3] != 0) {
      out.append(raw, off, std::string::npos);  // not multiplexed after all
      return out;
    }
    const size_t len = (size_t{h[4]} << 24) | (size_t{h[5]} << 16) | (size_t{h[6]} << 8) | h[7];
    off += 8;
    out.append(raw, off, std::min(len, raw.size() - off));
    off += len;
  }
  if (off < raw.size()) out.append(raw, off, std::string::npos);
  return out;
}

absl::StatusOr<std::unique_ptr<Runtime>> CreateDockerRuntime(const std::string& socket_path) {
  if (socket_path.empty()) return absl::InvalidArgumentError("docker socket path is empty");
  static const bool curl_ready = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  if (!curl_ready) return absl::InternalError("curl_global_init failed");
  return std::unique_ptr<Runtime>(new DockerRuntime(socket_path));
}

}  // namespace upkeep::agent
