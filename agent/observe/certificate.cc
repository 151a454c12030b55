#include "agent/observe/certificate.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstring>
#include <ctime>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace upkeep::agent {
namespace {

struct Target {
  std::string host;
  std::string port = "443";
};

absl::StatusOr<Target> Parse(const std::string& url) {
  if (!absl::StartsWith(url, "https://")) {
    return absl::InvalidArgumentError(absl::StrCat(url, ": not an https URL"));
  }
  std::string rest = url.substr(8);
  if (auto p = rest.find('/'); p != std::string::npos) rest = rest.substr(0, p);
  Target t;
  if (!rest.empty() && rest[0] == '[') {
    const auto close = rest.find(']');
    if (close == std::string::npos) return absl::InvalidArgumentError(url + ": bad IPv6 host");
    t.host = rest.substr(1, close - 1);
    if (close + 2 < rest.size() && rest[close + 1] == ':') t.port = rest.substr(close + 2);
  } else if (auto colon = rest.rfind(':'); colon != std::string::npos) {
    t.host = rest.substr(0, colon);
    t.port = rest.substr(colon + 1);
  } else {
    t.host = rest;
  }
  int port = 0;
  if (t.host.empty() || !absl::SimpleAtoi(t.port, &port) || port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(url, ": bad host or port"));
  }
  return t;
}

bool IsAddress(const std::string& host) {
  return host.find(':') != std::string::npos ||
         host.find_first_not_of("0123456789.") == std::string::npos;
}

}  // namespace

absl::StatusOr<Certificate> ReadCertificate(const std::string& url, const std::string& server_name,
                                            absl::Duration timeout) {
  absl::StatusOr<Target> t = Parse(url);
  if (!t.ok()) return t.status();
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                        SSL_CTX_free);
  if (ctx == nullptr) return absl::InternalError("SSL_CTX_new failed");
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  const std::string addr = t->host.find(':') != std::string::npos
                               ? absl::StrCat("[", t->host, "]:", t->port)
                               : absl::StrCat(t->host, ":", t->port);
  std::unique_ptr<BIO, decltype(&BIO_free_all)> bio(BIO_new_ssl_connect(ctx.get()), BIO_free_all);
  if (bio == nullptr) return absl::InternalError("BIO_new_ssl_connect failed");
  BIO_set_conn_hostname(bio.get(), addr.c_str());
  SSL* ssl = nullptr;
  BIO_get_ssl(bio.get(), &ssl);
  const std::string sni = !server_name.empty() ? server_name : t->host;
  if (ssl != nullptr && !IsAddress(sni)) SSL_set_tlsext_host_name(ssl, sni.c_str());
  // Connect non-blocking so the timeout holds.
  BIO_set_nbio(bio.get(), 1);
  const absl::Time deadline = absl::Now() + timeout;
  while (BIO_do_handshake(bio.get()) <= 0) {
    if (!BIO_should_retry(bio.get()) || absl::Now() >= deadline) {
      return absl::UnavailableError(absl::StrCat("TLS handshake with ", addr, " failed"));
    }
    BIO_wait(bio.get(), std::time(nullptr) + 1, 10);
  }
  std::unique_ptr<X509, decltype(&X509_free)> cert(SSL_get1_peer_certificate(ssl), X509_free);
  if (cert == nullptr) return absl::UnavailableError(addr + " sent no certificate");
  struct tm tm {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert.get()), &tm) != 1) {
    return absl::DataLossError(addr + ": unreadable notAfter");
  }
  Certificate out;
  out.not_after = absl::FromTimeT(timegm(&tm));
  char subject[512] = {};
  X509_NAME_oneline(X509_get_subject_name(cert.get()), subject, sizeof(subject) - 1);
  out.subject = subject;
  return out;
}

absl::StatusOr<Certificate> CertificateCache::Get(const std::string& url,
                                                  const std::string& server_name, absl::Time now) {
  const std::string key = url + "\n" + server_name;
  {
    absl::MutexLock lock(&mu_);
    auto it = cache_.find(key);
    if (it != cache_.end() && now - it->second.at < refresh_) return it->second.cert;
  }
  absl::StatusOr<Certificate> cert = ReadCertificate(url, server_name, absl::Seconds(2));
  absl::MutexLock lock(&mu_);
  // A failed read is retried sooner: the proxy may have been down (nginx starting with the
  // agent), and a certificate seen an hour late would hide an expiry warning that long.
  cache_.insert_or_assign(key, Entry{cert, cert.ok() ? now : now - refresh_ + kRetryFailed});
  return cert;
}

void AddCertificates(const upkeep::v1::Stack& stack, CertificateCache* cache,
                     upkeep::v1::ProxyObservation* proxy) {
  for (const auto& r : stack.spec().proxy().routes()) {
    if (!r.has_probe() || !absl::StartsWith(r.probe().url(), "https://")) continue;
    absl::StatusOr<Certificate> cert = cache->Get(r.probe().url(), r.probe().host(), absl::Now());
    if (!cert.ok()) continue;
    for (auto& ro : *proxy->mutable_routes()) {
      if (ro.path() != r.path()) continue;
      ro.mutable_certificate_not_after()->set_seconds(absl::ToUnixSeconds(cert->not_after));
      ro.set_certificate_subject(cert->subject);
    }
  }
}

}  // namespace upkeep::agent
