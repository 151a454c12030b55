// The role table and identity parsing, as data.
#include "controller/auth/principal.h"

#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "upkeep/v1/fleet_service.pb.h"

namespace upkeep::controller_auth {
namespace {

Principal User(const std::string& name, Role role) {
  Principal p;
  p.kind = Principal::Kind::kUser;
  p.name = name;
  p.role = role;
  p.source = Principal::Source::kCertificate;
  return p;
}
Principal Agent(const std::string& host) {
  Principal p;
  p.kind = Principal::Kind::kAgent;
  p.name = host;
  p.source = Principal::Source::kCertificate;
  return p;
}
Principal Controller(const std::string& name) {
  Principal p;
  p.kind = Principal::Kind::kController;
  p.name = name;
  p.source = Principal::Source::kCertificate;
  return p;
}

constexpr absl::StatusCode kOk = absl::StatusCode::kOk;
constexpr absl::StatusCode kDenied = absl::StatusCode::kPermissionDenied;
constexpr absl::StatusCode kUnauth = absl::StatusCode::kUnauthenticated;

TEST(Authorize, RoleTable) {
  struct Case {
    Principal who;
    const char* method;
    absl::StatusCode want;
  };
  const Principal viewer = User("v", Role::kViewer);
  const Principal op = User("o", Role::kOperator);
  const Principal admin = User("a", Role::kAdmin);
  const std::vector<Case> cases = {
      {Principal{}, "/upkeep.v1.FleetService/ListStacks", kUnauth},
      {Principal{}, "/upkeep.v1.AgentService/Connect", kUnauth},
      {viewer, "/upkeep.v1.FleetService/GetStack", kOk},
      {viewer, "/upkeep.v1.FleetService/ListStacks", kOk},
      {viewer, "/upkeep.v1.FleetService/ListHosts", kOk},
      {viewer, "/upkeep.v1.FleetService/DescribeStack", kOk},
      {viewer, "/upkeep.v1.FleetService/Plan", kOk},
      {viewer, "/upkeep.v1.FleetService/ListEvents", kOk},
      {viewer, "/upkeep.v1.FleetService/WatchEvents", kOk},
      {viewer, "/upkeep.v1.FleetService/ListActions", kOk},
      {viewer, "/upkeep.v1.ControllerService/ListControllers", kOk},
      {Agent("web-1"), "/upkeep.v1.ControllerService/ListControllers", kDenied},
      {viewer, "/grpc.health.v1.Health/Check", kOk},
      {viewer, "/upkeep.v1.FleetService/Pause", kDenied},
      {viewer, "/upkeep.v1.FleetService/RunAction", kDenied},
      {viewer, "/upkeep.v1.FleetService/Apply", kDenied},
      {op, "/upkeep.v1.FleetService/Pause", kOk},
      {op, "/upkeep.v1.FleetService/Resume", kOk},
      {op, "/upkeep.v1.FleetService/RunAction", kOk},
      {op, "/upkeep.v1.FleetService/ListActions", kOk},
      {op, "/upkeep.v1.FleetService/Apply", kDenied},
      {op, "/upkeep.v1.FleetService/DeleteStack", kDenied},
      {admin, "/upkeep.v1.FleetService/Apply", kOk},
      {admin, "/upkeep.v1.FleetService/DeleteStack", kOk},
      {admin, "/upkeep.v1.FleetService/RunAction", kOk},
      {admin, "/upkeep.v1.AgentService/Connect", kDenied},
      {admin, "/upkeep.v1.FleetService/NotYetInvented", kDenied},
      // Server reflection is a read: a viewer may list the services (grpcurl, grpc_cli).
      {viewer, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", kOk},
      {Agent("web-1"), "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", kDenied},
      {Agent("web-1"), "/upkeep.v1.AgentService/Connect", kOk},
      {Agent("web-1"), "/upkeep.v1.FleetService/ListStacks", kDenied},
      {Agent("web-1"), "/upkeep.v1.FleetService/Apply", kDenied},
      {Agent("web-1"), "/grpc.health.v1.Health/Check", kDenied},
      {Controller("c1"), "/grpc.health.v1.Health/Check", kOk},
      {Controller("c1"), "/upkeep.v1.FleetService/ListStacks", kDenied},
      {Controller("c1"), "/upkeep.v1.AgentService/Connect", kDenied},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Authorize(c.who, c.method).code(), c.want) << c.who.ToString() << " " << c.method;
  }
}

TEST(Authorize, EveryFleetServiceMethodHasARole) {
  const auto* service =
      upkeep::v1::ApplyRequest::descriptor()->file()->FindServiceByName("FleetService");
  ASSERT_NE(service, nullptr);
  for (int i = 0; i < service->method_count(); ++i) {
    const std::string method = "/upkeep.v1.FleetService/" + service->method(i)->name();
    EXPECT_TRUE(RequiredRole(method).has_value())
        << method << " has no role in controller/auth/principal.cc: nobody can call it";
  }
}

TEST(AuthorizeHello, AnAgentSaysHelloOnlyAsItsOwnHost) {
  struct Case {
    Principal who;
    const char* host;
    bool identity_required;
    absl::StatusCode want;
  };
  const std::vector<Case> cases = {
      {Agent("web-1"), "web-1", true, kOk},
      {Agent("web-1"), "web-2", true, kDenied},
      {Agent("web-1"), "web-2", false, kDenied},
      {Principal{}, "web-1", true, kUnauth},
      {Principal{}, "web-1", false, kOk},
      {User("ada", Role::kAdmin), "web-1", true, kDenied},
      {Controller("c1"), "web-1", true, kDenied},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(AuthorizeHello(c.who, c.host, c.identity_required).code(), c.want)
        << c.who.ToString() << " as " << c.host;
  }
}

TEST(PrincipalFromUri, ParsesTheThreeKindsAndRefusesTheRest) {
  auto a = PrincipalFromUri("upkeep://agent/web-1");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, Agent("web-1"));
  auto u = PrincipalFromUri("upkeep://user/ann?role=operator");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(*u, User("ann", Role::kOperator));
  EXPECT_EQ(u->RequestedBy(), "user:ann");
  EXPECT_EQ(u->ToString(), "user:ann(operator)");
  auto c = PrincipalFromUri("upkeep://controller/c1");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, Controller("c1"));
  for (const char* bad :
       {"spiffe://agent/web-1", "upkeep://agent/", "upkeep://agent/a/b", "upkeep://user/ann",
        "upkeep://user/ann?role=root", "upkeep://agent/web-1?role=admin", "upkeep://admin/x"}) {
    EXPECT_FALSE(PrincipalFromUri(bad).ok()) << bad;
  }
}

TEST(Principal, RequestedByNamesTokensApart) {
  Principal t = User("ci", Role::kViewer);
  t.source = Principal::Source::kToken;
  EXPECT_EQ(t.RequestedBy(), "token:ci");
  EXPECT_EQ(Agent("h").RequestedBy(), "agent:h");
  EXPECT_EQ(Principal{}.RequestedBy(), "anonymous");
}

}  // namespace
}  // namespace upkeep::controller_auth
