// Authentication and authorization of every call on the controller's TLS port.
//
// AuthProcessor is a grpc::AuthMetadataProcessor, installed on the server credentials (use
// SecureServerCredentials below, which does it, or creds->SetAuthMetadataProcessor(...)).
// gRPC runs it for every call on that port, after the TLS handshake and before any handler,
// whatever API serves the method (the sync FleetService, the callback AgentService, the health
// service). It reads the principal (bearer token if one is sent, else the client certificate),
// runs Authorize against the call's method (":path"), and fails the call with UNAUTHENTICATED
// or PERMISSION_DENIED before a handler or reactor exists. On success it records the principal
// in the call's AuthContext, where handlers read it with PrincipalOf (requested_by; the agent
// service compares the hello's host id with it). The "authorization" header is consumed:
// handlers never see a token.
//
// Why not a grpc::experimental server interceptor: in gRPC 1.51 a server interceptor cannot
// refuse a call before the handler runs (no hijacking on the server side; the handler of a sync
// method, or the reactor of a callback method, would still run), so it could only ever be a
// second line. A helper called by each handler would work with both APIs but leaves every new
// handler one forgotten line away from open. The processor is one place, default-deny, for all.
// Its limit: it exists only on secure ports — a plaintext port (loopback, --insecure) has no
// AuthContext to read and no place to install it; PrincipalOf then says anonymous.
//
// Thread-safety: Process runs on gRPC's executor threads (IsBlocking: a token check reads
// SQLite) concurrently; it holds no state beyond the TokenStore, which is thread-safe.
#ifndef UPKEEP_CONTROLLER_AUTH_AUTHENTICATOR_H_
#define UPKEEP_CONTROLLER_AUTH_AUTHENTICATOR_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "controller/auth/principal.h"
#include "controller/auth/token_store.h"
#include "core/tls/tls.h"
#include "grpcpp/security/auth_context.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "grpcpp/server_context.h"

namespace upkeep::controller_auth {

// The principal a call presents: the bearer token in `authorization` ("Bearer TOKEN") when
// given (an invalid one is UNAUTHENTICATED, never a fallback to the certificate), else the one
// `upkeep://` URI SAN of the verified client certificate in `auth`, else anonymous. A
// certificate with no upkeep identity, or more than one, is UNAUTHENTICATED. `tokens` may be
// null (tokens are then refused).
absl::StatusOr<Principal> Authenticate(const grpc::AuthContext& auth,
                                       std::optional<absl::string_view> authorization,
                                       TokenStore* tokens);

class AuthProcessor final : public grpc::AuthMetadataProcessor {
 public:
  // `tokens` may be null (certificates only); it must outlive the server.
  explicit AuthProcessor(TokenStore* tokens) : tokens_(tokens) {}

  bool IsBlocking() const override { return true; }
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  TokenStore* const tokens_;
};

// The controller's TLS server credentials (core/tls ServerCredentials: client certificates
// optional, verified against `ca` when given) with an AuthProcessor over `tokens` installed, so
// that no call on the port skips authentication. `tokens` may be null; it must outlive the
// server.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> SecureServerCredentials(
    const std::string& cert, const std::string& key, const std::string& ca, TokenStore* tokens,
    const tls::ServerTlsOptions& options = {});

// The principal AuthProcessor recorded for this call. Without one (a port with no processor),
// the verified client certificate's identity if there is one, else anonymous.
Principal PrincipalOf(const grpc::ServerContextBase& context);

}  // namespace upkeep::controller_auth

#endif  // UPKEEP_CONTROLLER_AUTH_AUTHENTICATOR_H_
