#include "controller/auth/principal.h"

#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace upkeep::controller_auth {
namespace {

constexpr char kAgentConnect[] = "/upkeep.v1.AgentService/Connect";
constexpr char kAgentServicePrefix[] = "/upkeep.v1.AgentService/";

const absl::flat_hash_map<std::string, Role>& RoleTable() {
  static const auto* table = new absl::flat_hash_map<std::string, Role>{
      {"/upkeep.v1.FleetService/GetStack", Role::kViewer},
      {"/upkeep.v1.FleetService/ListStacks", Role::kViewer},
      {"/upkeep.v1.FleetService/ListHosts", Role::kViewer},
      {"/upkeep.v1.FleetService/DescribeStack", Role::kViewer},
      {"/upkeep.v1.FleetService/Plan", Role::kViewer},
      {"/upkeep.v1.FleetService/ListEvents", Role::kViewer},
      {"/upkeep.v1.FleetService/WatchEvents", Role::kViewer},
      {"/upkeep.v1.FleetService/ListActions", Role::kViewer},
      {"/upkeep.v1.ControllerService/ListControllers", Role::kViewer},
      {"/upkeep.v1.FleetService/ListNotifiers", Role::kViewer},
      {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Role::kViewer},
      {"/grpc.health.v1.Health/Check", Role::kViewer},
      {"/grpc.health.v1.Health/Watch", Role::kViewer},
      {"/upkeep.v1.FleetService/Pause", Role::kOperator},
      {"/upkeep.v1.FleetService/Resume", Role::kOperator},
      {"/upkeep.v1.FleetService/RunAction", Role::kOperator},
      {"/upkeep.v1.FleetService/TestNotifier", Role::kOperator},
      {"/upkeep.v1.FleetService/Apply", Role::kAdmin},
      {"/upkeep.v1.FleetService/DeleteStack", Role::kAdmin},
      {"/upkeep.v1.FleetService/DeleteNotifier", Role::kAdmin},
  };
  return *table;
}

bool ValidName(absl::string_view name) {
  if (name.empty() || name.size() > 128 || name[0] == '.') return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

std::optional<Role> ParseRole(absl::string_view s) {
  if (s == "viewer") return Role::kViewer;
  if (s == "operator") return Role::kOperator;
  if (s == "admin") return Role::kAdmin;
  return std::nullopt;
}

const char* RoleName(Role role) {
  switch (role) {
    case Role::kViewer:
      return "viewer";
    case Role::kOperator:
      return "operator";
    case Role::kAdmin:
      return "admin";
    case Role::kNone:
      break;
  }
  return "none";
}

std::string Principal::RequestedBy() const {
  switch (kind) {
    case Kind::kAgent:
      return absl::StrCat("agent:", name);
    case Kind::kController:
      return absl::StrCat("controller:", name);
    case Kind::kUser:
      return absl::StrCat(source == Source::kToken ? "token:" : "user:", name);
    case Kind::kAnonymous:
      break;
  }
  return "anonymous";
}

std::string Principal::ToString() const {
  if (kind != Kind::kUser) return RequestedBy();
  return absl::StrCat(RequestedBy(), "(", RoleName(role), ")");
}

absl::StatusOr<Principal> PrincipalFromUri(absl::string_view uri) {
  absl::string_view rest = uri;
  if (!absl::ConsumePrefix(&rest, "upkeep://")) {
    return absl::InvalidArgumentError(absl::StrCat("\"", uri, "\" is not an upkeep identity"));
  }
  Principal p;
  p.source = Principal::Source::kCertificate;
  if (absl::ConsumePrefix(&rest, "agent/")) {
    p.kind = Principal::Kind::kAgent;
  } else if (absl::ConsumePrefix(&rest, "controller/")) {
    p.kind = Principal::Kind::kController;
  } else if (absl::ConsumePrefix(&rest, "user/")) {
    p.kind = Principal::Kind::kUser;
    const size_t q = rest.find("?role=");
    if (q == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("user identity \"", uri, "\" has no role"));
    }
    const std::optional<Role> role = ParseRole(rest.substr(q + 6));
    if (!role) {
      return absl::InvalidArgumentError(absl::StrCat("user identity \"", uri, "\": bad role"));
    }
    p.role = *role;
    rest = rest.substr(0, q);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("\"", uri, "\": unknown identity kind"));
  }
  if (!ValidName(rest)) {
    return absl::InvalidArgumentError(absl::StrCat("\"", uri, "\": bad name"));
  }
  p.name = std::string(rest);
  return p;
}

std::optional<Role> RequiredRole(absl::string_view full_method) {
  const auto& table = RoleTable();
  auto it = table.find(full_method);
  if (it == table.end()) return std::nullopt;
  return it->second;
}

absl::Status Authorize(const Principal& principal, absl::string_view full_method) {
  using Kind = Principal::Kind;
  switch (principal.kind) {
    case Kind::kAnonymous:
      return absl::UnauthenticatedError(
          absl::StrCat(full_method,
                       " needs a client certificate from the fleet's CA or a bearer token "
                       "(upkeepctl --token, or UPKEEP_TOKEN)"));
    case Kind::kAgent:
      if (full_method == kAgentConnect) return absl::OkStatus();
      return absl::PermissionDeniedError(absl::StrCat(principal.ToString(), " may call only ",
                                                      kAgentConnect, ", not ", full_method));
    case Kind::kController:
      if (absl::StartsWith(full_method, "/grpc.health.v1.Health/")) return absl::OkStatus();
      return absl::PermissionDeniedError(absl::StrCat(
          principal.ToString(), " is a controller identity; it may not call ", full_method));
    case Kind::kUser:
      break;
  }
  if (absl::StartsWith(full_method, kAgentServicePrefix)) {
    return absl::PermissionDeniedError(absl::StrCat(principal.ToString(), " is not an agent; ",
                                                    full_method, " needs an agent certificate"));
  }
  const std::optional<Role> needed = RequiredRole(full_method);
  if (!needed) {
    return absl::PermissionDeniedError(
        absl::StrCat(full_method, " is not open to anyone (no role grants it)"));
  }
  if (static_cast<int>(principal.role) < static_cast<int>(*needed)) {
    return absl::PermissionDeniedError(absl::StrCat(principal.ToString(), " may not call ",
                                                    full_method, "; it needs the role ",
                                                    RoleName(*needed)));
  }
  return absl::OkStatus();
}

absl::Status AuthorizeHello(const Principal& principal, absl::string_view host_id,
                            bool identity_required) {
  switch (principal.kind) {
    case Principal::Kind::kAgent:
      if (principal.name == host_id) return absl::OkStatus();
      return absl::PermissionDeniedError(absl::StrCat("the certificate of agent ", principal.name,
                                                      " may not say hello as host ", host_id));
    case Principal::Kind::kAnonymous:
      if (!identity_required) return absl::OkStatus();
      return absl::UnauthenticatedError(
          absl::StrCat("hello as host ", host_id, " without an agent certificate"));
    case Principal::Kind::kUser:
    case Principal::Kind::kController:
      break;
  }
  return absl::PermissionDeniedError(
      absl::StrCat(principal.ToString(), " is not an agent and may not say hello"));
}

}  // namespace upkeep::controller_auth
