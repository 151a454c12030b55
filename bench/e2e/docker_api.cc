#include "bench/e2e/docker_api.h"

#include <curl/curl.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"

namespace upkeep::bench {
namespace {

size_t Append(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

}  // namespace

DockerApi::~DockerApi() {
  stop_ = true;
  if (watch_.joinable()) watch_.join();
}

absl::StatusOr<std::string> DockerApi::Call(const std::string& method, const std::string& path) {
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  std::string body;
  curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, socket_.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, absl::StrCat("http://localhost", path).c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method == "POST") curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Append);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 30000L);
  const CURLcode rc = curl_easy_perform(curl);
  long code = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_cleanup(curl);
  if (rc != CURLE_OK) {
    return absl::UnavailableError(
        absl::StrCat(method, " ", path, " on ", socket_, ": ", curl_easy_strerror(rc)));
  }
  if (code >= 300 && code != 304) {
    return absl::InternalError(absl::StrCat(method, " ", path, ": HTTP ", code, " ", body));
  }
  return body;
}

absl::Status DockerApi::Start(const std::string& name) {
  return Call("POST", absl::StrCat("/containers/", name, "/start")).status();
}

absl::StatusOr<std::pair<std::string, int>> DockerApi::IdAndPid(const std::string& name) {
  absl::StatusOr<std::string> body = Call("GET", absl::StrCat("/containers/", name, "/json"));
  if (!body.ok()) return body.status();
  const nlohmann::json j = nlohmann::json::parse(*body, nullptr, false);
  if (j.is_discarded() || !j.contains("Id") || !j.contains("State")) {
    return absl::InternalError(absl::StrCat("inspect ", name, ": unexpected answer"));
  }
  return std::make_pair(j["Id"].get<std::string>(), j["State"].value("Pid", 0));
}

absl::Status DockerApi::WatchDies(absl::Duration timeout) {
  if (!watch_.joinable()) watch_ = std::thread([this] { WatchLoop(); });
  absl::MutexLock lock(&mu_);
  auto done = [this]()
                  ABSL_SHARED_LOCKS_REQUIRED(mu_) { return connected_ || !watch_error_.empty(); };
  mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  if (connected_) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("docker events: ", watch_error_.empty() ? "no answer" : watch_error_));
}

void DockerApi::OnEventData(const char* data, size_t n) {
  const absl::Time now = absl::Now();
  partial_.append(data, n);
  size_t nl;
  while ((nl = partial_.find('\n')) != std::string::npos) {
    const nlohmann::json j = nlohmann::json::parse(partial_.substr(0, nl), nullptr, false);
    partial_.erase(0, nl + 1);
    if (j.is_discarded() || j.value("Action", "") != "die") continue;
    absl::MutexLock lock(&mu_);
    dies_.push_back({j.value("id", ""), now});
  }
}

void DockerApi::WatchLoop() {
  CURL* curl = curl_easy_init();
  if (curl == nullptr) {
    absl::MutexLock lock(&mu_);
    watch_error_ = "curl_easy_init failed";
    return;
  }
  // filters={"type":["container"],"event":["die"]}
  const std::string url =
      "http://localhost/events?filters=%7B%22type%22%3A%5B%22container%22%5D%2C%22event%22%3A%5B"
      "%22die%22%5D%7D";
  curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, socket_.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(
      curl, CURLOPT_HEADERFUNCTION, +[](char* data, size_t size, size_t n, void* self) {
        auto* api = static_cast<DockerApi*>(self);
        absl::MutexLock lock(&api->mu_);
        api->connected_ = true;  // dockerd answered: events from here on reach us
        return size * n;
      });
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, this);
  curl_easy_setopt(
      curl, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t n, void* self) {
        static_cast<DockerApi*>(self)->OnEventData(data, size * n);
        return size * n;
      });
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, this);
  // The progress callback ends the stream when the destructor asks (it runs about once a
  // second while nothing arrives).
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(
      curl, CURLOPT_XFERINFOFUNCTION,
      +[](void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
        return static_cast<DockerApi*>(self)->stop_.load() ? 1 : 0;
      });
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, this);
  const CURLcode rc = curl_easy_perform(curl);
  curl_easy_cleanup(curl);
  if (!stop_) {
    absl::MutexLock lock(&mu_);
    watch_error_ = curl_easy_strerror(rc);
  }
}

absl::Time DockerApi::WaitDie(const std::string& id, absl::Time after, absl::Duration timeout) {
  absl::Time at = absl::InfiniteFuture();
  auto found = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    for (const Die& d : dies_) {
      if (d.id == id && d.arrived >= after) {
        at = d.arrived;
        return true;
      }
    }
    return !watch_error_.empty();
  };
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&found), timeout);
  return at;
}

}  // namespace upkeep::bench
