// The fleet's own certificate authority and the gRPC credentials built on it.
//
// A fleet has one CA (`InitCa`) that issues three kinds of certificates (`Issue`). Who a peer
// is travels in exactly one URI subject-alternative name, which gRPC exposes to the server in
// the call's AuthContext under "peer_uri" (GRPC_PEER_URI_PROPERTY_NAME; tested for gRPC 1.51):
//   controller NAME  upkeep://controller/NAME       EKU serverAuth, plus the DNS/IP SANs given
//   agent HOST       upkeep://agent/HOST            EKU clientAuth
//   user NAME        upkeep://user/NAME?role=ROLE   EKU clientAuth, ROLE viewer|operator|admin
// Leaf certificates carry one EKU only, so an agent's or a user's key cannot serve as the
// controller, and the controller's key cannot act as a client.
//
// On-disk layout of a CA directory (written here, read by `Issue` and by people):
//   DIR/ca.crt, DIR/ca.key                    the CA (key 0600); InitCa never overwrites them
//   DIR/controller-NAME.{crt,key}             one pair per issued identity (keys 0600)
//   DIR/agent-HOST.{crt,key}
//   DIR/user-NAME.{crt,key}
// Every file is written to a temporary name and renamed into place, the key before the
// certificate, so a watcher never reads a half-written file. Issuing a name again replaces its
// pair (that is how a certificate is rotated).
//
// Keys are EC P-256, certificates are X.509 v3 signed with ECDSA-SHA256.
// Functions here are thread-compatible: they touch only the files named.
#ifndef UPKEEP_CORE_TLS_TLS_H_
#define UPKEEP_CORE_TLS_TLS_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace upkeep::tls {

// The URI scheme of identities in certificates.
inline constexpr char kIdentityScheme[] = "upkeep://";

struct CaOptions {
  std::string common_name = "upkeep fleet CA";
  absl::Duration validity = absl::Hours(24 * 365 * 10);
};

// Creates DIR (0700) if needed and writes DIR/ca.crt and DIR/ca.key. Refuses (AlreadyExists)
// when either file exists: a new CA would orphan every certificate issued by the old one.
absl::Status InitCa(const std::string& dir, const CaOptions& options = {});

enum class IdentityKind { kController, kAgent, kUser };

struct IssueRequest {
  static IssueRequest Controller(std::string name, std::vector<std::string> sans);
  static IssueRequest Agent(std::string host);
  static IssueRequest User(std::string name, std::string role);

  IdentityKind kind = IdentityKind::kAgent;
  // NAME or HOST: letters, digits, '.', '_', '-'; at most 128 characters; not starting with '.'.
  std::string name;
  // kUser only: viewer, operator or admin.
  std::string role;
  // kController only: DNS names and IP addresses (v4 or v6) the controller is reached by.
  std::vector<std::string> sans;
  // Validity window. Unset not_before means now minus five minutes (clock skew). A not_after in
  // the past makes an already-expired certificate (tests).
  std::optional<absl::Time> not_before;
  absl::Duration validity = absl::Hours(24 * 365);
};

struct IssuedFiles {
  std::string cert;  // DIR/<kind>-<name>.crt
  std::string key;   // DIR/<kind>-<name>.key
  std::string uri;   // the identity URI SAN written into the certificate
};

// Parses "127.0.0.1,controller.example" into its parts (empty parts are dropped).
std::vector<std::string> SplitSans(const std::string& comma_separated);

// Issues a certificate signed by DIR/ca.{crt,key} for `request` and writes it with a fresh key.
absl::StatusOr<IssuedFiles> Issue(const std::string& dir, const IssueRequest& request);

// The identity URI for a kind and name ("upkeep://agent/web-1", "upkeep://user/ann?role=admin").
std::string IdentityUri(IdentityKind kind, const std::string& name, const std::string& role = "");

// --- gRPC credentials ---------------------------------------------------------------------
// Both sides read their files through grpc::experimental::FileWatcherCertificateProvider:
// the files are re-read every `refresh`, new handshakes use what was read last, and
// connections already established (and their streams) are not touched. Creation checks that
// the files exist, parse, and that the key matches the certificate, so a typo fails at start
// rather than at every handshake.

struct ServerTlsOptions {
  absl::Duration refresh = absl::Seconds(10);
  // The controller serves agents (which always present a certificate) and people or tools
  // (which present a certificate or a bearer token), so the TLS layer verifies any certificate
  // presented against the CA but lets a client without one finish the handshake; the
  // authentication layer (controller/auth) then refuses a call that has neither. Set true to
  // require a certificate in the handshake itself (a port only agents use).
  bool require_client_certificate = false;
};

// Server credentials: this controller's `cert`/`key`, client certificates verified against
// `ca`.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const std::string& cert, const std::string& key, const std::string& ca,
    const ServerTlsOptions& options = {});

struct ChannelTlsOptions {
  absl::Duration refresh = absl::Seconds(10);
  // When set, every call carries "authorization: Bearer TOKEN" (people and tools without a
  // certificate). Only ever sent over TLS.
  std::string bearer_token;
};

// Channel credentials: the server's certificate is verified against `ca` and must name the host
// dialled (DNS or IP SAN). `cert`/`key` are this client's identity; both empty means none (a
// token user). Agents must give theirs.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const std::string& ca, const std::string& cert = "", const std::string& key = "",
    const ChannelTlsOptions& options = {});

// How a client (agent, upkeepctl) reaches the controller at `address`: mutual TLS when `ca` is
// given; plaintext only to a loopback address, or anywhere with `insecure` (the operator's
// explicit choice); otherwise FailedPrecondition saying which flags to give. A token is only
// ever sent over TLS.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(
    const std::string& address, const std::string& ca, const std::string& cert,
    const std::string& key, const ChannelTlsOptions& options = {}, bool insecure = false);

}  // namespace upkeep::tls

#endif  // UPKEEP_CORE_TLS_TLS_H_
