// The Compose command upkeep runs to recreate a missing container: the runbook's
// `docker compose --profile aws up -d backend-aws`, with --no-deps and the runtime's daemon.
#include "agent/runtime/docker/compose.h"

#include "absl/strings/str_join.h"
#include "gtest/gtest.h"

namespace upkeep::agent {
namespace {

upkeep::v1::ComposeRef Ref() {
  upkeep::v1::ComposeRef r;
  r.set_project("atp");
  r.set_service("backend-aws");
  r.set_file("/srv/atp/docker-compose.yml");
  r.set_profile("aws");
  return r;
}

TEST(Compose, DebianDockerComposeGetsTheRunbookCommand) {
  EXPECT_EQ(absl::StrJoin(ComposeUpArgv({"/usr/bin/docker-compose"}, Ref(), "/run/d.sock"), " "),
            "/usr/bin/docker-compose -H unix:///run/d.sock -p atp -f /srv/atp/docker-compose.yml "
            "--profile aws up -d --no-deps backend-aws");
}

TEST(Compose, ThePluginTakesTheDaemonBeforeTheSubcommand) {
  auto ref = Ref();
  ref.clear_profile();
  EXPECT_EQ(absl::StrJoin(ComposeUpArgv({"/usr/bin/docker", "compose"}, ref, "/d.sock"), " "),
            "/usr/bin/docker -H unix:///d.sock compose -p atp -f /srv/atp/docker-compose.yml up "
            "-d --no-deps backend-aws");
}

TEST(Compose, RefusesAServiceWithoutAComposeFile) {
  auto ref = Ref();
  ref.clear_file();
  auto r = ComposeUp(ref, "/d.sock", absl::Seconds(5));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("names no compose file"), std::string::npos);
}

}  // namespace
}  // namespace upkeep::agent
