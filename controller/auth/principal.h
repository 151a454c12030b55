// Who is calling, and what they may call.
//
// A Principal is read from the call's client certificate (its one `upkeep://` URI SAN, see
// core/tls/tls.h) or from a bearer token (TokenStore). `Authorize` is the whole role table:
//   agent      only AgentService.Connect (and, in AgentService, only as its own host: the
//              service checks the hello against `name`)
//   viewer     FleetService reads: GetStack ListStacks ListHosts DescribeStack Plan ListEvents
//              WatchEvents ListActions ListNotifiers; ControllerService.ListControllers;
//              grpc.health.v1 Check/Watch; server reflection
//   operator   viewer + Pause Resume RunAction TestNotifier
//   admin      operator + Apply DeleteStack DeleteNotifier
//   controller health checks only (a controller certificate is a server certificate)
// People and tools never call AgentService. A method not in the table is refused for everyone,
// so a new RPC is closed until it is given a role here.
// Pure functions and values; thread-safe.
#ifndef UPKEEP_CONTROLLER_AUTH_PRINCIPAL_H_
#define UPKEEP_CONTROLLER_AUTH_PRINCIPAL_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace upkeep::controller_auth {

enum class Role { kNone = 0, kViewer = 1, kOperator = 2, kAdmin = 3 };

// "viewer" / "operator" / "admin"; anything else is nullopt.
std::optional<Role> ParseRole(absl::string_view s);
const char* RoleName(Role role);

struct Principal {
  enum class Kind { kAnonymous, kAgent, kUser, kController };
  enum class Source { kNone, kCertificate, kToken };

  Kind kind = Kind::kAnonymous;
  std::string name;         // host id (agent), user or token name, controller name
  Role role = Role::kNone;  // users only
  Source source = Source::kNone;

  // What actions and events record as requested_by: "user:ann", "token:ci", "agent:web-1",
  // "controller:c1", or "anonymous".
  std::string RequestedBy() const;
  // RequestedBy plus the role, for logs: "user:ann(admin)".
  std::string ToString() const;
  bool operator==(const Principal& o) const {
    return kind == o.kind && name == o.name && role == o.role && source == o.source;
  }
};

// Parses a certificate identity URI ("upkeep://agent/web-1", "upkeep://user/ann?role=viewer",
// "upkeep://controller/c1"). InvalidArgument for anything else.
absl::StatusOr<Principal> PrincipalFromUri(absl::string_view uri);

// The least role a user needs for `full_method` ("/upkeep.v1.FleetService/Apply"); nullopt when
// no user may call it (AgentService, unknown methods).
std::optional<Role> RequiredRole(absl::string_view full_method);

// OK, or UNAUTHENTICATED (anonymous) or PERMISSION_DENIED (known but not allowed), with a
// message that says who, what, and what would be needed.
absl::Status Authorize(const Principal& principal, absl::string_view full_method);

// The AgentService rule for a hello: an agent identity says hello only as its own host (else
// PERMISSION_DENIED; the caller must then finish only this stream and leave the real host's
// alone). `identity_required` is true on a TLS port — AuthProcessor has already refused
// anonymous callers there, so an anonymous principal means the port is mis-wired and is
// refused (UNAUTHENTICATED) — and false on a plaintext loopback port, where nobody has an
// identity and any hello is accepted. Users and controllers are PERMISSION_DENIED.
absl::Status AuthorizeHello(const Principal& principal, absl::string_view host_id,
                            bool identity_required);

}  // namespace upkeep::controller_auth

#endif  // UPKEEP_CONTROLLER_AUTH_PRINCIPAL_H_
