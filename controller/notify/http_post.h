// HttpPost: one JSON POST with libcurl, bounded by a timeout; what the receiver answered.
// Used by the notifier channels on their own threads. Thread-safe (one easy handle per call).
#ifndef UPKEEP_CONTROLLER_NOTIFY_HTTP_POST_H_
#define UPKEEP_CONTROLLER_NOTIFY_HTTP_POST_H_

#include <string>

#include "absl/time/time.h"

namespace upkeep::notify {

struct HttpAnswer {
  int status = 0;     // 0: no HTTP answer (see error)
  std::string body;   // first 4 KiB
  std::string error;  // transport error (connection refused, timeout), empty when answered
  bool ok() const { return error.empty() && status >= 200 && status < 300; }
  // Worth another attempt: no answer, 408, 429, or 5xx. Other 4xx will not get better.
  bool retryable() const {
    return !error.empty() || status == 408 || status == 429 || status >= 500;
  }
};

// POSTs `body` (application/json) to `url`; `bearer` (when not empty) as Authorization.
HttpAnswer HttpPost(const std::string& url, const std::string& bearer, const std::string& body,
                    absl::Duration timeout);

// "https://hooks.slack.com/services/..." -> "hooks.slack.com": where a message went, without
// the secret path.
std::string UrlHost(const std::string& url);

}  // namespace upkeep::notify

#endif  // UPKEEP_CONTROLLER_NOTIFY_HTTP_POST_H_
