#include "agent/observe/prober.h"

#include <curl/curl.h>

#include <algorithm>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/proto_time.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;

size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string Host(const std::string& address) {
  return address.find(':') != std::string::npos ? absl::StrCat("[", address, "]") : address;
}

std::string ErrorText(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
      return "connection refused";
    case CURLE_OPERATION_TIMEDOUT:
      return "timeout";
    case CURLE_GOT_NOTHING:
      return "empty reply";
    case CURLE_RECV_ERROR:
      return "connection reset";
    case CURLE_COULDNT_RESOLVE_HOST:
      return "host not found";
    default:
      return curl_easy_strerror(code);
  }
}

}  // namespace

ProbeRequest ServiceProbe(const v1::ServiceSpec& spec) {
  ProbeRequest r;
  const std::string address = spec.address().empty() ? "127.0.0.1" : spec.address();
  const std::string host =
      (address == "0.0.0.0") ? "127.0.0.1" : (address == "::" ? "::1" : address);
  r.timeout = FromProto(spec.probe().timeout());
  if (spec.probe().has_http()) {
    const auto& h = spec.probe().http();
    r.url = absl::StrCat(h.scheme().empty() ? "http" : h.scheme(), "://", Host(host), ":",
                         spec.port(), h.path().empty() ? "/" : h.path());
    r.host_header = h.host();
    r.expected_status.assign(h.expected_status().begin(), h.expected_status().end());
  } else {
    r.tcp = true;
    r.url = absl::StrCat("http://", Host(host), ":", spec.port(), "/");
  }
  return r;
}

ProbeRequest RouteProbe(const v1::RouteSpec& spec) {
  ProbeRequest r;
  r.url = spec.probe().url();
  r.host_header = spec.probe().host();
  r.timeout = FromProto(spec.probe().timeout());
  r.expected_status.assign(spec.probe().expected_status().begin(),
                           spec.probe().expected_status().end());
  return r;
}

std::vector<v1::ProbeResult> ProbeAll(const std::vector<ProbeRequest>& requests) {
  GlobalInit();
  std::vector<v1::ProbeResult> results(requests.size());
  if (requests.empty()) return results;
  CURLM* multi = curl_multi_init();
  std::vector<CURL*> handles(requests.size(), nullptr);
  std::vector<curl_slist*> headers(requests.size(), nullptr);
  const absl::Time start = absl::Now();
  for (size_t i = 0; i < requests.size(); ++i) {
    const ProbeRequest& r = requests[i];
    CURL* h = curl_easy_init();
    handles[i] = h;
    curl_easy_setopt(h, CURLOPT_URL, r.url.c_str());
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
                     static_cast<long>(std::max<int64_t>(1, absl::ToInt64Milliseconds(r.timeout))));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(std::max<int64_t>(1, absl::ToInt64Milliseconds(r.timeout))));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, Discard);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(h, CURLOPT_PRIVATE, reinterpret_cast<char*>(i));
    if (r.tcp) curl_easy_setopt(h, CURLOPT_CONNECT_ONLY, 1L);
    if (!r.host_header.empty()) {
      headers[i] = curl_slist_append(nullptr, absl::StrCat("Host: ", r.host_header).c_str());
      curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers[i]);
    }
    results[i].set_target(r.tcp ? r.url.substr(7, r.url.size() - 8) : r.url);
    curl_multi_add_handle(multi, h);
  }
  int running = 0;
  do {
    curl_multi_perform(multi, &running);
    int msgs = 0;
    while (CURLMsg* m = curl_multi_info_read(multi, &msgs)) {
      if (m->msg != CURLMSG_DONE) continue;
      char* priv = nullptr;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
      const size_t i = reinterpret_cast<size_t>(priv);
      v1::ProbeResult& res = results[i];
      const ProbeRequest& r = requests[i];
      *res.mutable_latency() = ToProto(absl::Now() - start);
      // Stamped when sent: a probe that straddles a restart or a reload is evidence about what
      // ran before it, never about what runs after.
      *res.mutable_at() = ToProto(start);
      const CURLcode code = m->data.result;
      if (code != CURLE_OK) {
        res.set_ok(false);
        res.set_error(ErrorText(code));
        continue;
      }
      if (r.tcp) {
        res.set_ok(true);
        continue;
      }
      long status = 0;
      curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      res.set_status_code(static_cast<int32_t>(status));
      const bool ok = r.expected_status.empty()
                          ? (status >= 200 && status < 400)
                          : std::find(r.expected_status.begin(), r.expected_status.end(),
                                      static_cast<int>(status)) != r.expected_status.end();
      res.set_ok(ok);
      if (!ok) res.set_error(absl::StrCat("http ", status));
    }
    bool cancelled = false;
    for (const auto& r : requests) cancelled |= r.cancel != nullptr && r.cancel->load();
    if (cancelled) {
      for (auto& res : results) {
        if (!res.has_at()) {
          *res.mutable_at() = ToProto(start);
          res.set_error("cancelled");
        }
      }
      break;
    }
    if (running > 0) curl_multi_poll(multi, nullptr, 0, 50, nullptr);
  } while (running > 0);
  for (size_t i = 0; i < handles.size(); ++i) {
    curl_multi_remove_handle(multi, handles[i]);
    curl_easy_cleanup(handles[i]);
    curl_slist_free_all(headers[i]);
  }
  curl_multi_cleanup(multi);
  return results;
}

v1::ProbeResult Probe(const ProbeRequest& request) { return ProbeAll({request})[0]; }

v1::HealthState HealthTracker::Update(const v1::ProbeResult& result, absl::Time started_at,
                                      absl::Time now) {
  if (started_at != started_at_) {
    // A new process or container: judge it afresh.
    started_at_ = started_at;
    failures_ = 0;
    successes_ = 0;
    state_ = v1::HEALTH_STATE_STARTING;
  }
  // A probe sent before this start was answered (or not) by the previous process.
  if (result.has_at() && started_at != absl::InfinitePast() &&
      FromProto(result.at()) < started_at) {
    return state_;
  }
  const int fail_threshold = spec_.failure_threshold() > 0 ? spec_.failure_threshold() : 3;
  const int ok_threshold = spec_.success_threshold() > 0 ? spec_.success_threshold() : 1;
  const absl::Duration start_period = FromProto(spec_.start_period());
  if (result.ok()) {
    failures_ = 0;
    if (++successes_ >= ok_threshold) state_ = v1::HEALTH_STATE_HEALTHY;
    return state_;
  }
  successes_ = 0;
  // At most one failure counts per half period: a start, an action's refresh and the periodic
  // probe can each fire a probe within milliseconds, and a slow starter refusing all of them is
  // one failed look, not failureThreshold of them (DESIGN: unhealthy = threshold × period).
  const absl::Duration period = spec_.has_period() ? FromProto(spec_.period()) : absl::Seconds(1);
  const absl::Time sent = result.has_at() ? FromProto(result.at()) : now;
  if (failures_ > 0 && sent - last_failure_at_ < period / 2) return state_;
  last_failure_at_ = sent;
  ++failures_;
  const bool in_start_period = state_ == v1::HEALTH_STATE_STARTING &&
                               started_at != absl::InfinitePast() &&
                               now - started_at < start_period;
  if (in_start_period) return state_;
  if (failures_ >= fail_threshold) state_ = v1::HEALTH_STATE_UNHEALTHY;
  return state_;
}

}  // namespace upkeep::agent
