#include "controller/auth/authenticator.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/log.h"
#include "grpc/grpc_security_constants.h"

namespace upkeep::controller_auth {
namespace {

// Properties AuthProcessor adds to a call's AuthContext. Only the server can add properties;
// a client cannot send these.
constexpr char kKindProperty[] = "upkeep.principal.kind";
constexpr char kNameProperty[] = "upkeep.principal.name";
constexpr char kRoleProperty[] = "upkeep.principal.role";
constexpr char kSourceProperty[] = "upkeep.principal.source";

std::string Str(const grpc::string_ref& r) { return std::string(r.data(), r.size()); }

std::optional<std::string> First(const grpc::AuthContext& auth, const char* name) {
  auto values = auth.FindPropertyValues(name);
  if (values.empty()) return std::nullopt;
  return Str(values.front());
}

const char* KindWord(Principal::Kind kind) {
  switch (kind) {
    case Principal::Kind::kAgent:
      return "agent";
    case Principal::Kind::kUser:
      return "user";
    case Principal::Kind::kController:
      return "controller";
    case Principal::Kind::kAnonymous:
      break;
  }
  return "anonymous";
}

// The certificate's identity; anonymous when no certificate was presented.
absl::StatusOr<Principal> FromCertificate(const grpc::AuthContext& auth) {
  std::vector<std::string> ours;
  for (const auto& v : auth.FindPropertyValues(GRPC_PEER_URI_PROPERTY_NAME)) {
    if (absl::StartsWith(absl::string_view(v.data(), v.size()), "upkeep://"))
      ours.push_back(Str(v));
  }
  if (ours.empty()) {
    // A certificate from our CA always names an identity; a client without a certificate has
    // no x509 properties at all.
    if (auth.FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME).empty()) return Principal{};
    return absl::UnauthenticatedError("the client certificate names no upkeep identity");
  }
  if (ours.size() > 1) {
    return absl::UnauthenticatedError("the client certificate names more than one identity");
  }
  auto p = PrincipalFromUri(ours.front());
  if (!p.ok()) return absl::UnauthenticatedError(p.status().message());
  return p;
}

}  // namespace

absl::StatusOr<Principal> Authenticate(const grpc::AuthContext& auth,
                                       std::optional<absl::string_view> authorization,
                                       TokenStore* tokens) {
  if (authorization.has_value()) {
    absl::string_view v = absl::StripAsciiWhitespace(*authorization);
    if (!absl::ConsumePrefix(&v, "Bearer ") && !absl::ConsumePrefix(&v, "bearer ")) {
      return absl::UnauthenticatedError("authorization metadata is not \"Bearer TOKEN\"");
    }
    if (tokens == nullptr) {
      return absl::UnauthenticatedError("this controller accepts no bearer tokens");
    }
    return tokens->Authenticate(absl::StripAsciiWhitespace(v));
  }
  return FromCertificate(auth);
}

grpc::Status AuthProcessor::Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                                    OutputMetadata* consumed_auth_metadata,
                                    OutputMetadata* response_metadata) {
  std::string method;
  std::optional<absl::string_view> authorization;
  for (const auto& [k, v] : auth_metadata) {
    const absl::string_view key(k.data(), k.size());
    if (key == ":path") method = Str(v);
    if (key == "authorization") {
      if (authorization.has_value()) {
        return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "more than one authorization");
      }
      authorization = absl::string_view(v.data(), v.size());
      consumed_auth_metadata->emplace("authorization", Str(v));
    }
  }
  if (method.empty()) {
    // Fail closed: without the method there is nothing to authorize against.
    return grpc::Status(grpc::StatusCode::INTERNAL, "auth: the call carries no method (:path)");
  }
  absl::StatusOr<Principal> principal = Authenticate(*context, authorization, tokens_);
  absl::Status allowed = principal.ok() ? Authorize(*principal, method) : principal.status();
  if (!allowed.ok()) {
    UPKEEP_LOG(warn, "call_refused",
               {{"method", method},
                {"principal", principal.ok() ? principal->ToString() : "unauthenticated"},
                {"code", absl::StatusCodeToString(allowed.code())},
                {"reason", std::string(allowed.message())}});
    const auto code = allowed.code() == absl::StatusCode::kUnauthenticated ||
                              allowed.code() == absl::StatusCode::kPermissionDenied ||
                              allowed.code() == absl::StatusCode::kUnavailable
                          ? static_cast<grpc::StatusCode>(allowed.code())
                          : grpc::StatusCode::INTERNAL;
    return grpc::Status(code, std::string(allowed.message()));
  }
  context->AddProperty(kKindProperty, KindWord(principal->kind));
  context->AddProperty(kNameProperty, principal->name);
  context->AddProperty(kRoleProperty, RoleName(principal->role));
  context->AddProperty(kSourceProperty,
                       principal->source == Principal::Source::kToken ? "token" : "certificate");
  return grpc::Status::OK;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> SecureServerCredentials(
    const std::string& cert, const std::string& key, const std::string& ca, TokenStore* tokens,
    const tls::ServerTlsOptions& options) {
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds =
      tls::ServerCredentials(cert, key, ca, options);
  if (!creds.ok()) return creds.status();
  (*creds)->SetAuthMetadataProcessor(std::make_shared<AuthProcessor>(tokens));
  return creds;
}

Principal PrincipalOf(const grpc::ServerContextBase& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr) return Principal{};
  const std::optional<std::string> kind = First(*auth, kKindProperty);
  if (!kind.has_value()) {
    auto p = FromCertificate(*auth);
    return p.ok() ? *p : Principal{};
  }
  Principal p;
  if (*kind == "agent") p.kind = Principal::Kind::kAgent;
  if (*kind == "user") p.kind = Principal::Kind::kUser;
  if (*kind == "controller") p.kind = Principal::Kind::kController;
  p.name = First(*auth, kNameProperty).value_or("");
  p.role = ParseRole(First(*auth, kRoleProperty).value_or("")).value_or(Role::kNone);
  p.source = First(*auth, kSourceProperty).value_or("") == "token"
                 ? Principal::Source::kToken
                 : Principal::Source::kCertificate;
  return p;
}

}  // namespace upkeep::controller_auth
