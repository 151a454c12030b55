#include "controller/http/status_server.h"

#include <httplib.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "controller/auth/principal.h"
#include "controller/http/assets.h"
#include "core/log.h"
#include "google/protobuf/util/json_util.h"

namespace upkeep::controller {
namespace {

namespace auth = upkeep::controller_auth;

// The upkeep:// URI SAN of a verified client certificate, or empty.
std::string CertificateUri(const SSL* ssl) {
  if (ssl == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return "";
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) return "";
  std::string uri;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type != GEN_URI) continue;
    const auto* s = n->d.uniformResourceIdentifier;
    std::string v(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s));
    if (absl::StartsWith(v, "upkeep://")) uri = v;
  }
  GENERAL_NAMES_free(names);
  X509_free(cert);
  return uri;
}

std::string CookieToken(const httplib::Request& req) {
  const std::string cookies = req.get_header_value("Cookie");
  for (absl::string_view c : absl::StrSplit(cookies, ';')) {
    c = absl::StripAsciiWhitespace(c);
    if (absl::ConsumePrefix(&c, "upkeep_token=")) return std::string(c);
  }
  return "";
}

}  // namespace

StatusServer::StatusServer(StatusServerOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<StatusServer>> StatusServer::Start(StatusServerOptions options) {
  const std::string address = options.address;
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--http ", address, ": want HOST:PORT, e.g. 127.0.0.1:9400"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
  const bool tls = !options.tls_cert.empty();
  std::unique_ptr<StatusServer> s(new StatusServer(std::move(options)));
  if (tls) {
    const StatusServerOptions& o = s->options_;
    // Client certificates are asked for, not required: a browser may bring a token instead
    // (the verify callback accepts the handshake; CertificateUri reads the verify result).
    auto ssl = std::make_unique<httplib::SSLServer>([&o](SSL_CTX& ctx) {
      if (SSL_CTX_use_certificate_chain_file(&ctx, o.tls_cert.c_str()) != 1 ||
          SSL_CTX_use_PrivateKey_file(&ctx, o.tls_key.c_str(), SSL_FILETYPE_PEM) != 1 ||
          SSL_CTX_load_verify_locations(&ctx, o.tls_ca.c_str(), nullptr) != 1) {
        return false;
      }
      SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
      SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 1; });
      // With SSL_VERIFY_PEER, OpenSSL refuses to resume a session (ID or TLS 1.3 ticket) on a
      // context without a session id context: a fatal internal_error alert ("session id
      // context uninitialized", ssl_sess.c). Browsers resume on every new connection after
      // the first, so Chromium failed sub-resources and the event stream with
      // ERR_SSL_PROTOCOL_ERROR. A resumed session keeps the peer certificate and its verify
      // result, so roles hold across resumption.
      static const unsigned char kContext[] = "upkeep-status";
      return SSL_CTX_set_session_id_context(&ctx, kContext, sizeof(kContext) - 1) == 1;
    });
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat("--http with TLS: cannot load ", o.tls_cert,
                                                     " / ", o.tls_key, " / ", o.tls_ca));
    }
    s->server_ = std::move(ssl);
  } else {
    s->server_ = std::make_unique<httplib::Server>();
  }
  StatusServer* self = s.get();
  // Roles: on TLS every path but /healthz wants a viewer.
  s->server_->set_pre_routing_handler([self, tls](const httplib::Request& req,
                                                  httplib::Response& res) {
    if (!tls || req.path == "/healthz") return httplib::Server::HandlerResponse::Unhandled;
    std::string token;
    const std::string authz = req.get_header_value("Authorization");
    if (absl::StartsWith(authz, "Bearer ")) token = authz.substr(7);
    const bool from_query = req.has_param("token");
    if (token.empty() && from_query) token = req.get_param_value("token");
    if (token.empty()) token = CookieToken(req);
    auth::Principal who;
    std::string why = "a viewer token (Authorization: Bearer, or ?token=) or client certificate";
    if (!token.empty() && self->options_.tokens != nullptr) {
      auto p = self->options_.tokens->Authenticate(token);
      if (p.ok())
        who = *p;
      else
        why = std::string(p.status().message());
    } else if (const std::string uri = CertificateUri(req.ssl); !uri.empty()) {
      auto p = auth::PrincipalFromUri(uri);
      if (p.ok()) who = *p;
    }
    if (who.kind != auth::Principal::Kind::kUser || who.role < auth::Role::kViewer) {
      res.status = who.kind == auth::Principal::Kind::kAnonymous ? 401 : 403;
      res.set_content(
          absl::StrCat(res.status == 401 ? "unauthenticated: " : "forbidden: ",
                       res.status == 401 ? why : who.ToString() + " is not a user", "\n"),
          "text/plain");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (from_query) {
      res.set_header("Set-Cookie", absl::StrCat("upkeep_token=", token,
                                                "; HttpOnly; Secure; SameSite=Strict; Path=/"));
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  Metrics* metrics = s->options_.metrics;
  s->server_->Get("/metrics", [metrics](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics != nullptr ? metrics->Render() : "", "text/plain; version=0.0.4");
  });
  s->server_->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  auto asset = [](const char* body, const char* type) {
    return [body, type](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Content-Type-Options", "nosniff");
      res.set_header("Content-Security-Policy",
                     "default-src 'self'; style-src 'self'; script-src 'self'; "
                     "connect-src 'self'; frame-ancestors 'none'");
      res.set_content(body, type);
    };
  };
  s->server_->Get("/", asset(kIndexHtml, "text/html; charset=utf-8"));
  s->server_->Get("/favicon.ico",
                  [](const httplib::Request&, httplib::Response& res) { res.status = 204; });
  s->server_->Get("/app.css", asset(kAppCss, "text/css; charset=utf-8"));
  s->server_->Get("/app.js", asset(kAppJs, "application/javascript; charset=utf-8"));
  s->server_->Get("/api/state", [self](const httplib::Request&, httplib::Response& res) {
    res.set_header("Cache-Control", "no-store");
    res.set_content(self->options_.state ? self->options_.state() : "{}", "application/json");
  });
  s->server_->Get("/api/events", [self](const httplib::Request&, httplib::Response& res) {
    auto stream = std::make_shared<Stream>();
    {
      absl::MutexLock lock(&self->mu_);
      if (self->stopping_ || static_cast<int>(self->streams_.size()) >= kMaxStreams) {
        res.status = 503;
        res.set_content("too many event streams\n", "text/plain");
        return;
      }
      self->streams_.push_back(stream);
    }
    res.set_header("Cache-Control", "no-store");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [stream](size_t, httplib::DataSink& sink) {
          std::deque<std::string> out;
          {
            absl::MutexLock lock(&stream->mu);
            if (stream->queue.empty() && !stream->closed) {
              stream->cv.WaitWithTimeout(&stream->mu, absl::Seconds(15));
            }
            if (stream->closed) return false;
            out.swap(stream->queue);
          }
          if (out.empty()) {
            const std::string ping = ": keep-alive\n\n";
            return sink.write(ping.data(), ping.size());
          }
          for (const std::string& data : out) {
            const std::string frame = absl::StrCat("event: upkeep\ndata: ", data, "\n\n");
            if (!sink.write(frame.data(), frame.size())) return false;
          }
          return true;
        },
        [self, stream](bool) {
          absl::MutexLock lock(&self->mu_);
          self->streams_.remove(stream);
        });
  });
  if (port == 0) {
    s->port_ = s->server_->bind_to_any_port(host);
  } else if (s->server_->bind_to_port(host, port)) {
    s->port_ = port;
  } else {
    s->port_ = -1;
  }
  if (s->port_ <= 0) return absl::UnavailableError(absl::StrCat("cannot listen on ", address));
  if (s->options_.events != nullptr) {
    s->subscription_ = s->options_.events->Subscribe("", [self](const upkeep::v1::Event& e) {
      std::string json;
      (void)google::protobuf::util::MessageToJsonString(e, &json);
      self->Publish(json);
    });
  }
  httplib::Server* raw = s->server_.get();
  s->thread_ = std::thread([raw] { raw->listen_after_bind(); });
  return s;
}

void StatusServer::Publish(const std::string& data) {
  absl::MutexLock lock(&mu_);
  for (auto& stream : streams_) {
    absl::MutexLock l(&stream->mu);
    if (stream->queue.size() < 1000) stream->queue.push_back(data);
    stream->cv.Signal();
  }
}

void StatusServer::Stop() {
  subscription_.reset();
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (auto& stream : streams_) {
      absl::MutexLock l(&stream->mu);
      stream->closed = true;
      stream->cv.Signal();
    }
  }
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

StatusServer::~StatusServer() { Stop(); }

}  // namespace upkeep::controller
