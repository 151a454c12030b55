// upkeepctl tls init|issue: writes the fleet's CA and certificates with core/tls.
#include "cli/tls.h"

#include <cstdio>
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/tls/tls.h"

namespace upkeep::cli {
namespace {

constexpr char kUsage[] =
    "usage: upkeepctl tls init --dir DIR\n"
    "       upkeepctl tls issue --dir DIR --controller NAME --san 127.0.0.1,controller.example\n"
    "       upkeepctl tls issue --dir DIR --agent HOST\n"
    "       upkeepctl tls issue --dir DIR --user NAME --role viewer|operator|admin\n"
    "  issue also takes --days N (default 365). init writes DIR/ca.crt and DIR/ca.key and never\n"
    "  replaces them; issue writes DIR/controller-NAME.{crt,key}, DIR/agent-HOST.{crt,key} or\n"
    "  DIR/user-NAME.{crt,key} (issuing a name again replaces its pair: that is rotation).\n";

int Usage(const std::string& error) {
  if (!error.empty()) std::fprintf(stderr, "upkeepctl tls: %s\n", error.c_str());
  std::fputs(kUsage, stderr);
  return 2;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "upkeepctl tls: %s\n", std::string(s.message()).c_str());
  return 1;
}

}  // namespace

int RunTls(int argc, char** argv) {
  if (argc < 2) return Usage("");
  const std::string sub = argv[1];
  if (sub == "-h" || sub == "--help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (sub != "init" && sub != "issue") return Usage("unknown tls command \"" + sub + "\"");
  std::map<std::string, std::string> flags;
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
    static const char* const kKnown[] = {"dir",  "controller", "agent", "user",
                                         "role", "san",        "days"};
    bool known = false;
    for (const char* k : kKnown) known = known || arg == k;
    if (!known || (sub == "init" && arg != "dir")) return Usage("unknown flag --" + arg);
    flags[arg] = value;
  }
  if (flags["dir"].empty()) return Usage("--dir is required");
  const std::string dir = flags["dir"];

  if (sub == "init") {
    const absl::Status s = tls::InitCa(dir);
    if (!s.ok()) return Fail(s);
    std::printf("wrote %s/ca.crt and %s/ca.key (keep ca.key offline; it signs every identity)\n",
                dir.c_str(), dir.c_str());
    return 0;
  }

  const int kinds = static_cast<int>(flags.count("controller")) +
                    static_cast<int>(flags.count("agent")) + static_cast<int>(flags.count("user"));
  if (kinds != 1) return Usage("give exactly one of --controller, --agent, --user");
  tls::IssueRequest request;
  if (flags.count("controller")) {
    if (flags["san"].empty()) {
      return Usage("--controller needs --san: the addresses agents and upkeepctl dial it by");
    }
    request = tls::IssueRequest::Controller(flags["controller"], tls::SplitSans(flags["san"]));
  } else if (flags.count("agent")) {
    request = tls::IssueRequest::Agent(flags["agent"]);
  } else {
    if (flags["role"].empty()) return Usage("--user needs --role viewer|operator|admin");
    request = tls::IssueRequest::User(flags["user"], flags["role"]);
  }
  if (!flags.count("controller") && flags.count("san")) return Usage("--san is for --controller");
  if (!flags.count("user") && flags.count("role")) return Usage("--role is for --user");
  if (flags.count("days")) {
    int days = 0;
    if (!absl::SimpleAtoi(flags["days"], &days) || days < 1) {
      return Usage("--days must be a positive number");
    }
    request.validity = absl::Hours(24) * days;
  }
  auto issued = tls::Issue(dir, request);
  if (!issued.ok()) return Fail(issued.status());
  const absl::Time until = absl::Now() - absl::Minutes(5) + request.validity;
  std::printf("wrote %s and %s (identity %s, valid until %s)\n", issued->cert.c_str(),
              issued->key.c_str(), issued->uri.c_str(),
              absl::FormatTime("%Y-%m-%d", until, absl::UTCTimeZone()).c_str());
  return 0;
}

}  // namespace upkeep::cli
