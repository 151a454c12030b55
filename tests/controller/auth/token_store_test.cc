// TokenStore on a real SQLite file, and the `token` command around it.
#include "controller/auth/token_store.h"

#include <sys/stat.h>

#include "controller/auth/token_command.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/temp_dir.h"

namespace upkeep::controller_auth {
namespace {

using ::upkeep::testing::TempDir;

using ::upkeep::testing::ReadFile;

TEST(TokenStore, CreatedTokenAuthenticatesAsItsNameAndRole) {
  TempDir dir;
  auto store = TokenStore::Open(dir.path());
  ASSERT_TRUE(store.ok()) << store.status();
  auto token = (*store)->Create("ci", Role::kOperator);
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_THAT(*token, ::testing::StartsWith("upk_"));
  auto p = (*store)->Authenticate(*token);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->kind, Principal::Kind::kUser);
  EXPECT_EQ(p->source, Principal::Source::kToken);
  EXPECT_EQ(p->name, "ci");
  EXPECT_EQ(p->role, Role::kOperator);
  EXPECT_EQ((*store)->Authenticate(*token + "x").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*store)->Authenticate("not-a-token").status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(TokenStore, StoresOnlyAHashInAPrivateFile) {
  TempDir dir;
  std::string token;
  {
    auto store = TokenStore::Open(dir.path());
    ASSERT_TRUE(store.ok());
    auto t = (*store)->Create("ci", Role::kViewer);
    ASSERT_TRUE(t.ok());
    token = *t;
  }  // closed: the WAL is checkpointed into tokens.db
  struct stat st {};
  ASSERT_EQ(::stat(dir.Join("tokens.db").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string bytes = ReadFile(dir.Join("tokens.db")) + ReadFile(dir.Join("tokens.db-wal"));
  EXPECT_THAT(bytes, ::testing::HasSubstr("ci"));
  EXPECT_EQ(bytes.find(token.substr(4)), std::string::npos) << "the token is stored in clear";
}

TEST(TokenStore, RevokeByAnotherProcessTakesEffectAtTheNextLookup) {
  TempDir dir;
  auto controller = TokenStore::Open(dir.path());  // the running controller's handle
  auto cli = TokenStore::Open(dir.path());         // `upkeep-controller token revoke`
  ASSERT_TRUE(controller.ok() && cli.ok());
  auto token = (*cli)->Create("ci", Role::kViewer);
  ASSERT_TRUE(token.ok());
  ASSERT_TRUE((*controller)->Authenticate(*token).ok());
  ASSERT_TRUE((*cli)->Revoke("ci").ok());
  EXPECT_EQ((*controller)->Authenticate(*token).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*cli)->Revoke("ci").code(), absl::StatusCode::kNotFound);
}

TEST(TokenStore, NamesAreUniqueAndValidated) {
  TempDir dir;
  auto store = TokenStore::Open(dir.path());
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Create("ci", Role::kViewer).ok());
  EXPECT_EQ((*store)->Create("ci", Role::kAdmin).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ((*store)->Create("a b", Role::kAdmin).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*store)->Create("x", Role::kNone).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*store)->Create("bot", Role::kAdmin).ok());
  auto list = (*store)->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "bot");
  EXPECT_EQ((*list)[0].role, Role::kAdmin);
  EXPECT_EQ((*list)[1].name, "ci");
}

int RunCommand(std::vector<std::string> args, std::string* out) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  const int rc = RunTokenCommand(static_cast<int>(argv.size()), argv.data());
  *out = ::testing::internal::GetCapturedStdout();
  ::testing::internal::GetCapturedStderr();
  return rc;
}

TEST(TokenCommand, CreateListRevoke) {
  TempDir dir;
  std::string out;
  ASSERT_EQ(
      RunCommand({"token", "create", "--data", dir.path(), "--name", "ci", "--role", "viewer"},
                 &out),
      0);
  const std::string token = out.substr(0, out.find('\n'));
  EXPECT_THAT(token, ::testing::StartsWith("upk_"));
  ASSERT_EQ(RunCommand({"token", "list", "--data=" + dir.path()}, &out), 0);
  EXPECT_THAT(out, ::testing::HasSubstr("ci"));
  EXPECT_THAT(out, ::testing::HasSubstr("viewer"));
  EXPECT_EQ(out.find(token), std::string::npos) << "list must not show the token";
  ASSERT_EQ(RunCommand({"token", "revoke", "--data", dir.path(), "--name", "ci"}, &out), 0);
  auto store = TokenStore::Open(dir.path());
  ASSERT_TRUE(store.ok());
  EXPECT_FALSE((*store)->Authenticate(token).ok());
  EXPECT_EQ(RunCommand({"token", "revoke", "--data", dir.path(), "--name", "ci"}, &out), 1);
}

TEST(TokenCommand, UsageErrorsExitTwo) {
  TempDir dir;
  std::string out;
  EXPECT_EQ(RunCommand({"token"}, &out), 2);
  EXPECT_EQ(RunCommand({"token", "create", "--data", dir.path(), "--name", "ci"}, &out), 2);
  EXPECT_EQ(
      RunCommand({"token", "create", "--data", dir.path(), "--name", "ci", "--role", "root"}, &out),
      2);
  EXPECT_EQ(RunCommand({"token", "revoke", "--data", dir.path()}, &out), 2);
  EXPECT_EQ(RunCommand({"token", "frobnicate", "--data", dir.path()}, &out), 2);
  EXPECT_EQ(RunCommand({"token", "list", "--bogus", "x"}, &out), 2);
}

}  // namespace
}  // namespace upkeep::controller_auth
