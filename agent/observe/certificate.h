// The certificate an https route serves: a TLS handshake (no verification: we read, not trust)
// to the route's probe URL, keeping the leaf's notAfter and subject. Results are cached per URL
// for `refresh` (a certificate changes on renewal, not per second), so an assembly costs a
// handshake at most once an hour per route. Thread-safe (a mutex around the cache).
#ifndef UPKEEP_AGENT_OBSERVE_CERTIFICATE_H_
#define UPKEEP_AGENT_OBSERVE_CERTIFICATE_H_

#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "upkeep/v1/observation.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::agent {

struct Certificate {
  absl::Time not_after;
  std::string subject;
};

// One handshake to the host and port of an https URL ("https://127.0.0.1:8443/x"; SNI from
// `server_name`, or the URL's host when it is a name). Fails for other schemes.
absl::StatusOr<Certificate> ReadCertificate(const std::string& url, const std::string& server_name,
                                            absl::Duration timeout);

class CertificateCache {
 public:
  static constexpr absl::Duration kRetryFailed = absl::Seconds(5);
  explicit CertificateCache(absl::Duration refresh = absl::Hours(1)) : refresh_(refresh) {}
  // The cached certificate of `url`, read again when older than `refresh`; nullopt-like error
  // when it cannot be read (the route's own probe says why), and then read again after
  // kRetryFailed.
  absl::StatusOr<Certificate> Get(const std::string& url, const std::string& server_name,
                                  absl::Time now);

 private:
  struct Entry {
    absl::StatusOr<Certificate> cert;
    absl::Time at;
  };
  const absl::Duration refresh_;
  absl::Mutex mu_;
  std::map<std::string, Entry> cache_ ABSL_GUARDED_BY(mu_);
};

// Fills certificate_not_after/subject of each route in `proxy` whose probe URL is https.
void AddCertificates(const upkeep::v1::Stack& stack, CertificateCache* cache,
                     upkeep::v1::ProxyObservation* proxy);

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_OBSERVE_CERTIFICATE_H_
