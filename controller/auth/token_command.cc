#include "controller/auth/token_command.h"

#include <cstdio>
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "controller/auth/token_store.h"

namespace upkeep::controller_auth {
namespace {

constexpr char kUsage[] =
    "usage: upkeep-controller token create --data DIR --name NAME --role viewer|operator|admin\n"
    "       upkeep-controller token list   --data DIR\n"
    "       upkeep-controller token revoke --data DIR --name NAME\n";

constexpr char kDefaultData[] = "/var/lib/upkeep";  // the controller's own --data default

int Usage(const std::string& error) {
  if (!error.empty()) std::fprintf(stderr, "token: %s\n", error.c_str());
  std::fputs(kUsage, stderr);
  return 2;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "token: %s\n", std::string(s.message()).c_str());
  return 1;
}

}  // namespace

int RunTokenCommand(int argc, char** argv) {
  if (argc < 2) return Usage("");
  const std::string sub = argv[1];
  if (sub == "-h" || sub == "--help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  std::map<std::string, std::string> flags = {{"data", kDefaultData}};
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (!absl::StartsWith(arg, "--")) return Usage("unexpected argument " + arg);
    arg = arg.substr(2);
    std::string value;
    const size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return Usage("--" + arg + " needs a value");
    }
    if (arg != "data" && arg != "name" && arg != "role") return Usage("unknown flag --" + arg);
    flags[arg] = value;
  }
  if (sub != "create" && sub != "list" && sub != "revoke") {
    return Usage("unknown token command \"" + sub + "\"");
  }
  if (sub != "list" && flags["name"].empty()) return Usage("--name is required");
  if (sub != "create" && flags.count("role")) return Usage("--role is only for create");
  std::optional<Role> role;
  if (sub == "create") {
    role = ParseRole(flags["role"]);
    if (!role) return Usage("--role must be viewer, operator or admin");
  }

  auto store = TokenStore::Open(flags["data"]);
  if (!store.ok()) return Fail(store.status());
  if (sub == "create") {
    auto token = (*store)->Create(flags["name"], *role);
    if (!token.ok()) return Fail(token.status());
    std::printf("%s\n", token->c_str());
    std::fprintf(stderr,
                 "token \"%s\" (%s) created; it is shown only now. Use it with "
                 "`upkeepctl --token TOKEN` or UPKEEP_TOKEN.\n",
                 flags["name"].c_str(), RoleName(*role));
    return 0;
  }
  if (sub == "revoke") {
    const absl::Status s = (*store)->Revoke(flags["name"]);
    if (!s.ok()) return Fail(s);
    std::printf("revoked %s\n", flags["name"].c_str());
    return 0;
  }
  auto list = (*store)->List();
  if (!list.ok()) return Fail(list.status());
  std::printf("%-24s %-9s %s\n", "NAME", "ROLE", "CREATED");
  for (const TokenStore::Info& t : *list) {
    std::printf("%-24s %-9s %s\n", t.name.c_str(), RoleName(t.role),
                absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t.created, absl::UTCTimeZone()).c_str());
  }
  return 0;
}

}  // namespace upkeep::controller_auth
