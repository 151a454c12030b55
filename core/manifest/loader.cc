#include "core/manifest/loader.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/manifest/yaml_tree.h"
#include "core/proto_time.h"

namespace upkeep::manifest {
namespace {

namespace v1 = upkeep::v1;

constexpr size_t kMaxFileBytes = 1 << 20;
constexpr int kMaxDepth = 64;
constexpr int kMaxNodes = 100000;
// The shortest probe period a manifest may ask for (services and routes).
constexpr absl::Duration kMinProbePeriod = absl::Milliseconds(100);

// A handle on a node that may be absent (a key not written), asking what the walk asks.
class Node {
 public:
  Node() = default;
  explicit Node(const YamlNode* n) : n_(n) {}
  explicit operator bool() const { return n_ != nullptr; }
  bool IsNull() const { return n_ != nullptr && n_->IsNull(); }
  bool IsScalar() const { return n_ != nullptr && n_->IsScalar(); }
  bool IsSequence() const { return n_ != nullptr && n_->IsSequence(); }
  bool IsMap() const { return n_ != nullptr && n_->IsMap(); }
  const std::string& Scalar() const {
    static const std::string* const kEmpty = new std::string();
    return n_ != nullptr ? n_->scalar() : *kEmpty;
  }
  int line() const { return n_ != nullptr ? n_->line() : 0; }
  Node operator[](absl::string_view key) const { return Node(IsMap() ? n_->Get(key) : nullptr); }
  Node operator[](size_t i) const {
    return Node(IsSequence() && i < n_->items().size() ? n_->items()[i] : nullptr);
  }
  size_t size() const {
    if (IsSequence()) return n_->items().size();
    if (IsMap()) return n_->entries().size();
    return 0;
  }
  std::vector<Node> items() const {
    std::vector<Node> out;
    if (IsSequence()) {
      for (const YamlNode* i : n_->items()) out.emplace_back(i);
    }
    return out;
  }
  std::vector<std::pair<Node, Node>> entries() const {
    std::vector<std::pair<Node, Node>> out;
    if (IsMap()) {
      for (const auto& [k, v] : n_->entries()) out.emplace_back(Node(k), Node(v));
    }
    return out;
  }

 private:
  const YamlNode* n_ = nullptr;
};

int LineOf(const Node& n) { return n.line(); }

// Walks one document, collecting errors with their line and field path.
class Walker {
 public:
  Walker(std::string file, std::vector<ManifestError>* errors)
      : file_(std::move(file)), errors_(errors) {}

  void Error(const Node& at, const std::string& path, const std::string& message) {
    errors_->push_back({file_, LineOf(at), path, message});
  }
  void ErrorLine(int line, const std::string& path, const std::string& message) {
    errors_->push_back({file_, line, path, message});
  }
  bool Budget() { return ++nodes_ <= kMaxNodes; }

  // Unknown keys are errors (with a suggestion); returns false when `n` is not a map.
  bool CheckMap(const Node& n, const std::string& path, const std::vector<std::string>& known) {
    if (!n.IsMap()) {
      Error(n, path, "must be a mapping");
      return false;
    }
    std::map<std::string, int> seen;  // key -> line
    for (const auto& kv : n.entries()) {
      if (!Budget()) return false;
      if (!kv.first.IsScalar()) {
        Error(kv.first, path, "keys must be strings");
        continue;
      }
      const std::string key = kv.first.Scalar();
      if (auto [it, inserted] = seen.emplace(key, LineOf(kv.first)); !inserted) {
        Error(kv.first, Join(path, key),
              absl::StrCat("duplicate key \"", key, "\" (also at line ", it->second, ")"));
        continue;
      }
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        std::string msg = absl::StrCat("unknown field \"", key, "\"");
        if (auto s = Suggest(key, known)) absl::StrAppend(&msg, " (did you mean \"", *s, "\"?)");
        Error(kv.first, Join(path, key), msg);
      }
    }
    return true;
  }

  static std::string Join(const std::string& path, const std::string& key) {
    return path.empty() ? key : absl::StrCat(path, ".", key);
  }

  std::optional<std::string> String(const Node& n, const std::string& path) {
    if (!n.IsScalar()) {
      Error(n, path, "must be a string");
      return std::nullopt;
    }
    return n.Scalar();
  }

  std::optional<int64_t> Int(const Node& n, const std::string& path, int64_t min, int64_t max) {
    int64_t v = 0;
    if (!n.IsScalar() || !absl::SimpleAtoi(n.Scalar(), &v)) {
      Error(n, path, "must be an integer");
      return std::nullopt;
    }
    if (v < min || v > max) {
      Error(n, path, absl::StrCat("must be between ", min, " and ", max, ", got ", v));
      return std::nullopt;
    }
    return v;
  }

  std::optional<absl::Duration> Duration(const Node& n, const std::string& path,
                                         bool allow_zero = false) {
    if (!n.IsScalar()) {
      Error(n, path, "must be a duration such as 500ms, 2s, 10m");
      return std::nullopt;
    }
    auto d = ParseDuration(n.Scalar());
    if (!d.has_value()) {
      Error(n, path,
            absl::StrCat("bad duration \"", n.Scalar(),
                         "\": use a number with a unit, such as "
                         "500ms, 2s, 10m, 1h, 1m30s"));
      return std::nullopt;
    }
    if (!allow_zero && *d == absl::ZeroDuration()) {
      Error(n, path, "must be greater than 0");
      return std::nullopt;
    }
    return d;
  }

  // A probe's period: a duration of at least kMinProbePeriod.
  std::optional<absl::Duration> ProbePeriod(const Node& n, const std::string& path) {
    auto d = Duration(n, path);
    if (d.has_value() && *d < kMinProbePeriod) {
      Error(n, path,
            absl::StrCat("must be at least ", absl::FormatDuration(kMinProbePeriod),
                         ": each probe is a request to the service"));
      return std::nullopt;
    }
    return d;
  }

  std::vector<std::string> StringList(const Node& n, const std::string& path) {
    std::vector<std::string> out;
    if (!n.IsSequence()) {
      Error(n, path, "must be a list of strings");
      return out;
    }
    int i = 0;
    for (const auto& item : n.items()) {
      if (!Budget()) break;
      if (auto s = String(item, absl::StrCat(path, "[", i, "]"))) out.push_back(*s);
      ++i;
    }
    return out;
  }

  std::vector<int32_t> StatusList(const Node& n, const std::string& path) {
    std::vector<int32_t> out;
    if (!n.IsSequence()) {
      Error(n, path, "must be a list of HTTP status codes");
      return out;
    }
    int i = 0;
    for (const auto& item : n.items()) {
      if (!Budget()) break;
      if (auto v = Int(item, absl::StrCat(path, "[", i, "]"), 100, 599)) out.push_back(*v);
      ++i;
    }
    return out;
  }

  static std::optional<absl::Duration> ParseDuration(absl::string_view s) {
    s = absl::StripAsciiWhitespace(s);
    if (s.empty()) return std::nullopt;
    absl::Duration total = absl::ZeroDuration();
    size_t i = 0;
    while (i < s.size()) {
      size_t j = i;
      while (j < s.size() && (absl::ascii_isdigit(s[j]) || s[j] == '.')) ++j;
      if (j == i) return std::nullopt;
      double v = 0;
      if (!absl::SimpleAtod(s.substr(i, j - i), &v)) return std::nullopt;
      size_t k = j;
      while (k < s.size() && absl::ascii_isalpha(s[k])) ++k;
      const absl::string_view unit = s.substr(j, k - j);
      if (unit == "ms")
        total += absl::Milliseconds(v);
      else if (unit == "s")
        total += absl::Seconds(v);
      else if (unit == "m")
        total += absl::Minutes(v);
      else if (unit == "h")
        total += absl::Hours(v);
      else if (unit == "d")
        total += absl::Hours(24 * v);
      else
        return std::nullopt;
      i = k;
    }
    if (total > absl::Hours(24 * 365)) return std::nullopt;
    return total;
  }

 private:
  static std::optional<std::string> Suggest(const std::string& key,
                                            const std::vector<std::string>& known) {
    auto lower = absl::AsciiStrToLower(key);
    for (const auto& k : known) {
      if (absl::AsciiStrToLower(k) == lower) return k;
      if (k.size() > 3 && (absl::StrContains(k, key) || absl::StrContains(key, k))) return k;
    }
    return std::nullopt;
  }

  std::string file_;
  std::vector<ManifestError>* errors_;
  int nodes_ = 0;
};

bool IsDnsLabel(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s) {
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-')) return false;
  }
  return s.front() != '-' && s.back() != '-';
}

bool IsHostId(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  for (char c : s) {
    if (!(absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_')) return false;
  }
  return true;
}

void ParseHttpProbe(Walker& w, const Node& n, const std::string& path, v1::HttpProbeSpec* out) {
  if (n.IsNull()) return;
  if (!w.CheckMap(n, path, {"path", "scheme", "host", "expectedStatus"})) return;
  if (n["path"]) {
    if (auto s = w.String(n["path"], path + ".path")) {
      if (s->empty() || (*s)[0] != '/') w.Error(n["path"], path + ".path", "must start with /");
      out->set_path(*s);
    }
  }
  if (n["scheme"]) {
    if (auto s = w.String(n["scheme"], path + ".scheme")) {
      if (*s != "http" && *s != "https") {
        w.Error(n["scheme"], path + ".scheme", "must be http or https");
      }
      out->set_scheme(*s);
    }
  }
  if (n["host"]) {
    if (auto s = w.String(n["host"], path + ".host")) out->set_host(*s);
  }
  if (n["expectedStatus"]) {
    for (int32_t c : w.StatusList(n["expectedStatus"], path + ".expectedStatus")) {
      out->add_expected_status(c);
    }
  }
}

void ParseProbe(Walker& w, const Node& n, const std::string& path, v1::ProbeSpec* out) {
  if (!w.CheckMap(n, path,
                  {"http", "tcp", "period", "timeout", "failureThreshold", "successThreshold",
                   "startPeriod"})) {
    return;
  }
  if (n["http"] && n["tcp"]) w.Error(n, path, "set one of http or tcp, not both");
  if (n["http"]) ParseHttpProbe(w, n["http"], path + ".http", out->mutable_http());
  if (n["tcp"]) {
    if (!n["tcp"].IsNull()) w.CheckMap(n["tcp"], path + ".tcp", {});
    out->mutable_tcp();
  }
  if (n["period"]) {
    if (auto d = w.ProbePeriod(n["period"], path + ".period")) *out->mutable_period() = ToProto(*d);
  }
  if (n["timeout"]) {
    if (auto d = w.Duration(n["timeout"], path + ".timeout")) *out->mutable_timeout() = ToProto(*d);
  }
  if (n["startPeriod"]) {
    if (auto d = w.Duration(n["startPeriod"], path + ".startPeriod", true)) {
      *out->mutable_start_period() = ToProto(*d);
    }
  }
  if (n["failureThreshold"]) {
    if (auto v = w.Int(n["failureThreshold"], path + ".failureThreshold", 1, 1000)) {
      out->set_failure_threshold(*v);
    }
  }
  if (n["successThreshold"]) {
    if (auto v = w.Int(n["successThreshold"], path + ".successThreshold", 1, 1000)) {
      out->set_success_threshold(*v);
    }
  }
}

void ParseService(Walker& w, const Node& n, const std::string& path, v1::ServiceSpec* out) {
  if (!w.CheckMap(n, path,
                  {"name", "container", "process", "port", "address", "probe", "logs", "dependsOn",
                   "stopTimeout", "dataPaths"})) {
    return;
  }
  if (!n["name"]) {
    w.Error(n, path + ".name", "required");
  } else if (auto s = w.String(n["name"], path + ".name")) {
    if (!IsDnsLabel(*s)) {
      w.Error(n["name"], path + ".name",
              absl::StrCat("\"", *s, "\" must be lower-case letters, digits and '-'"));
    }
    out->set_name(*s);
  }
  if (n["container"]) {
    const std::string p = path + ".container";
    const Node c = n["container"];
    if (w.CheckMap(c, p, {"name", "compose"})) {
      if (c["name"]) {
        if (auto s = w.String(c["name"], p + ".name")) out->mutable_container()->set_name(*s);
      }
      if (c["compose"] &&
          w.CheckMap(c["compose"], p + ".compose", {"project", "service", "file", "profile"})) {
        const Node cc = c["compose"];
        auto* compose = out->mutable_container()->mutable_compose();
        for (const char* key : {"project", "service"}) {
          if (!cc[key]) {
            w.Error(cc, absl::StrCat(p, ".compose.", key), "required");
          } else if (auto s = w.String(cc[key], absl::StrCat(p, ".compose.", key))) {
            std::string(key) == "project" ? compose->set_project(*s) : compose->set_service(*s);
          }
        }
        if (cc["file"]) {
          if (auto s = w.String(cc["file"], p + ".compose.file")) {
            if (s->empty() || (*s)[0] != '/') {
              w.Error(cc["file"], p + ".compose.file",
                      "must be an absolute path (the agent runs compose from anywhere)");
            }
            compose->set_file(*s);
          }
        }
        if (cc["profile"]) {
          if (auto s = w.String(cc["profile"], p + ".compose.profile")) {
            if (!cc["file"]) w.Error(cc["profile"], p + ".compose.profile", "needs compose.file");
            compose->set_profile(*s);
          }
        }
      }
      if (!c["name"] && !c["compose"]) w.Error(c, p, "set name or compose");
    }
  }
  if (n["process"]) {
    const std::string p = path + ".process";
    const Node pr = n["process"];
    if (w.CheckMap(pr, p, {"command", "env", "workdir"})) {
      if (!pr["command"]) {
        w.Error(pr, p + ".command", "required");
      } else if (pr["command"].IsScalar()) {
        for (absl::string_view part :
             absl::StrSplit(pr["command"].Scalar(), ' ', absl::SkipEmpty())) {
          out->mutable_process()->add_command(std::string(part));
        }
      } else {
        for (auto& s : w.StringList(pr["command"], p + ".command")) {
          out->mutable_process()->add_command(s);
        }
      }
      if (pr["command"] && out->process().command().empty()) {
        w.Error(pr["command"], p + ".command", "must not be empty");
      }
      if (pr["env"] && !pr["env"].IsMap()) w.Error(pr["env"], p + ".env", "must be a mapping");
      if (pr["env"] && pr["env"].IsMap()) {
        for (const auto& kv : pr["env"].entries()) {
          if (kv.first.IsScalar() && kv.second.IsScalar()) {
            (*out->mutable_process()->mutable_env())[kv.first.Scalar()] = kv.second.Scalar();
          }
        }
      }
      if (pr["workdir"]) {
        if (auto s = w.String(pr["workdir"], p + ".workdir"))
          out->mutable_process()->set_workdir(*s);
      }
    }
  }
  if (n["port"]) {
    if (auto v = w.Int(n["port"], path + ".port", 1, 65535)) out->set_port(*v);
  }
  if (n["address"]) {
    if (auto s = w.String(n["address"], path + ".address")) out->set_address(*s);
  }
  if (n["probe"]) ParseProbe(w, n["probe"], path + ".probe", out->mutable_probe());
  if (n["logs"] && w.CheckMap(n["logs"], path + ".logs", {"tail"})) {
    if (n["logs"]["tail"]) {
      if (auto v = w.Int(n["logs"]["tail"], path + ".logs.tail", 0, 100000)) {
        out->mutable_logs()->set_tail(*v);
      }
    }
  }
  if (n["dependsOn"]) {
    for (auto& s : w.StringList(n["dependsOn"], path + ".dependsOn")) out->add_depends_on(s);
  }
  if (n["dataPaths"]) {
    for (auto& s : w.StringList(n["dataPaths"], path + ".dataPaths")) {
      if (s.empty() || s[0] != '/') {
        w.Error(n["dataPaths"], path + ".dataPaths", absl::StrCat("\"", s, "\" is not absolute"));
      }
      out->add_data_paths(s);
    }
  }
  if (n["stopTimeout"]) {
    if (auto d = w.Duration(n["stopTimeout"], path + ".stopTimeout", true)) {
      *out->mutable_stop_timeout() = ToProto(*d);
    }
  }
}

void ParseProxy(Walker& w, const Node& n, const std::string& path, v1::ProxySpec* out) {
  if (!w.CheckMap(n, path, {"nginx", "routes"})) return;
  if (!n["nginx"]) {
    w.Error(n, path + ".nginx", "required");
  } else {
    const std::string p = path + ".nginx";
    const Node g = n["nginx"];
    if (w.CheckMap(g, p,
                   {"config", "binary", "prefix", "pidFile", "errorLog", "startCommand",
                    "testCommand", "proxyReadTimeout", "service"})) {
      auto* nginx = out->mutable_nginx();
      if (!g["config"]) w.Error(g, p + ".config", "required");
      const std::vector<std::pair<const char*, std::function<void(std::string)>>> strings = {
          {"config", [&](std::string s) { nginx->set_config(s); }},
          {"binary", [&](std::string s) { nginx->set_binary(s); }},
          {"prefix", [&](std::string s) { nginx->set_prefix(s); }},
          {"pidFile", [&](std::string s) { nginx->set_pid_file(s); }},
          {"errorLog", [&](std::string s) { nginx->set_error_log(s); }},
          {"service", [&](std::string s) { nginx->set_service(s); }},
      };
      for (const auto& [key, set] : strings) {
        if (g[key]) {
          if (auto s = w.String(g[key], absl::StrCat(p, ".", key))) set(*s);
        }
      }
      if (g["startCommand"]) {
        for (auto& s : w.StringList(g["startCommand"], p + ".startCommand")) {
          nginx->add_start_command(s);
        }
      }
      if (g["testCommand"]) {
        for (auto& s : w.StringList(g["testCommand"], p + ".testCommand")) {
          nginx->add_test_command(s);
        }
      }
      if (g["proxyReadTimeout"]) {
        if (auto d = w.Duration(g["proxyReadTimeout"], p + ".proxyReadTimeout")) {
          *nginx->mutable_proxy_read_timeout() = ToProto(*d);
        }
      }
    }
  }
  if (n["routes"]) {
    const Node routes = n["routes"];
    if (!routes.IsSequence()) {
      w.Error(routes, path + ".routes", "must be a list");
      return;
    }
    int i = 0;
    for (const auto& r : routes.items()) {
      if (!w.Budget()) break;
      const std::string p = absl::StrCat(path, ".routes[", i++, "]");
      auto* route = out->add_routes();
      if (!w.CheckMap(r, p, {"path", "upstream", "probe"})) continue;
      if (!r["path"]) {
        w.Error(r, p + ".path", "required");
      } else if (auto s = w.String(r["path"], p + ".path")) {
        if (s->empty() || (*s)[0] != '/') w.Error(r["path"], p + ".path", "must start with /");
        route->set_path(*s);
      }
      if (!r["upstream"]) {
        w.Error(r, p + ".upstream", "required");
      } else if (auto s = w.String(r["upstream"], p + ".upstream")) {
        route->set_upstream(*s);
      }
      if (r["probe"]) {
        const Node pr = r["probe"];
        const std::string pp = p + ".probe";
        if (w.CheckMap(pr, pp, {"url", "host", "expectedStatus", "timeout", "period"})) {
          auto* probe = route->mutable_probe();
          if (!pr["url"]) {
            w.Error(pr, pp + ".url", "required");
          } else if (auto s = w.String(pr["url"], pp + ".url")) {
            if (!absl::StartsWith(*s, "http://") && !absl::StartsWith(*s, "https://")) {
              w.Error(pr["url"], pp + ".url", "must be an http:// or https:// URL");
            }
            probe->set_url(*s);
          }
          if (pr["host"]) {
            if (auto s = w.String(pr["host"], pp + ".host")) probe->set_host(*s);
          }
          if (pr["expectedStatus"]) {
            for (int32_t c : w.StatusList(pr["expectedStatus"], pp + ".expectedStatus")) {
              probe->add_expected_status(c);
            }
          }
          if (pr["timeout"]) {
            if (auto d = w.Duration(pr["timeout"], pp + ".timeout")) {
              *probe->mutable_timeout() = ToProto(*d);
            }
          }
          if (pr["period"]) {
            if (auto d = w.ProbePeriod(pr["period"], pp + ".period")) {
              *probe->mutable_period() = ToProto(*d);
            }
          }
        }
      }
    }
  }
}

void ParsePolicy(Walker& w, const Node& n, const std::string& path, v1::PolicySpec* out) {
  if (!w.CheckMap(n, path,
                  {"mode", "restartBudget", "backoff", "healthyReset", "maxActionsPerMinute",
                   "staleAfter", "certificateWarning", "diskWarning"})) {
    return;
  }
  if (n["mode"]) {
    if (auto s = w.String(n["mode"], path + ".mode")) {
      if (*s == "enforce")
        out->set_mode(v1::POLICY_MODE_ENFORCE);
      else if (*s == "dry-run")
        out->set_mode(v1::POLICY_MODE_DRY_RUN);
      else
        w.Error(n["mode"], path + ".mode", absl::StrCat("\"", *s, "\": use enforce or dry-run"));
    }
  }
  if (n["restartBudget"] &&
      w.CheckMap(n["restartBudget"], path + ".restartBudget", {"max", "window"})) {
    const Node b = n["restartBudget"];
    if (b["max"]) {
      if (auto v = w.Int(b["max"], path + ".restartBudget.max", 1, 10000)) {
        out->mutable_restart_budget()->set_max(*v);
      }
    }
    if (b["window"]) {
      if (auto d = w.Duration(b["window"], path + ".restartBudget.window")) {
        *out->mutable_restart_budget()->mutable_window() = ToProto(*d);
      }
    }
  }
  if (n["backoff"] && w.CheckMap(n["backoff"], path + ".backoff", {"initial", "max"})) {
    const Node b = n["backoff"];
    std::optional<absl::Duration> initial, max;
    if (b["initial"]) {
      if ((initial = w.Duration(b["initial"], path + ".backoff.initial"))) {
        *out->mutable_backoff()->mutable_initial() = ToProto(*initial);
      }
    }
    if (b["max"]) {
      if ((max = w.Duration(b["max"], path + ".backoff.max"))) {
        *out->mutable_backoff()->mutable_max() = ToProto(*max);
      }
    }
    if (initial && max && *max < *initial) {
      w.Error(b["max"], path + ".backoff.max", "must not be less than backoff.initial");
    }
  }
  if (n["healthyReset"]) {
    if (auto d = w.Duration(n["healthyReset"], path + ".healthyReset")) {
      *out->mutable_healthy_reset() = ToProto(*d);
    }
  }
  if (n["staleAfter"]) {
    if (auto d = w.Duration(n["staleAfter"], path + ".staleAfter")) {
      *out->mutable_stale_after() = ToProto(*d);
    }
  }
  if (n["certificateWarning"]) {
    if (auto d = w.Duration(n["certificateWarning"], path + ".certificateWarning")) {
      *out->mutable_certificate_warning() = ToProto(*d);
    }
  }
  if (n["diskWarning"]) {
    if (auto v = w.Int(n["diskWarning"], path + ".diskWarning", 1, 100)) {
      out->set_disk_warning(*v);
    }
  }
  if (n["maxActionsPerMinute"]) {
    if (auto v = w.Int(n["maxActionsPerMinute"], path + ".maxActionsPerMinute", 1, 100000)) {
      out->set_max_actions_per_minute(*v);
    }
  }
}

// Cross-field checks: duplicates, references, cycles, runtime handles.
void CheckStack(Walker& w, const Node& spec_node, const v1::Stack& stack) {
  const auto& spec = stack.spec();
  std::map<std::string, int> index;
  const Node services = spec_node["services"];
  auto svc_node = [&](int i) -> Node {
    return services && services.IsSequence() && i < static_cast<int>(services.size()) ? services[i]
                                                                                      : spec_node;
  };
  for (int i = 0; i < spec.services_size(); ++i) {
    const auto& s = spec.services(i);
    const std::string p = absl::StrCat("spec.services[", i, "]");
    if (s.name().empty()) continue;
    if (!index.emplace(s.name(), i).second) {
      w.Error(svc_node(i), p + ".name", absl::StrCat("duplicate service name \"", s.name(), "\""));
    }
    if (spec.runtime() == v1::RUNTIME_KIND_DOCKER && !s.has_container()) {
      w.Error(svc_node(i), p + ".container", "required with runtime docker");
    }
    if (spec.runtime() == v1::RUNTIME_KIND_PROCESS && !s.has_process()) {
      w.Error(svc_node(i), p + ".process", "required with runtime process");
    }
    if (s.port() == 0 && !svc_node(i)["port"]) {
      w.Error(svc_node(i), p + ".port", "required (the port the service listens on)");
    }
  }
  for (int i = 0; i < spec.services_size(); ++i) {
    const auto& s = spec.services(i);
    for (int j = 0; j < s.depends_on_size(); ++j) {
      const std::string& d = s.depends_on(j);
      const std::string p = absl::StrCat("spec.services[", i, "].dependsOn[", j, "]");
      if (index.count(d) == 0) {
        w.Error(svc_node(i), p, absl::StrCat("no service named \"", d, "\""));
      } else if (d == s.name()) {
        w.Error(svc_node(i), p, "a service cannot depend on itself");
      }
    }
  }
  // Cycles: DFS with colours; report each cycle once, naming it.
  std::map<std::string, int> colour;
  std::vector<std::string> stack_names;
  std::set<std::string> reported;
  std::function<void(const std::string&)> visit = [&](const std::string& name) {
    colour[name] = 1;
    stack_names.push_back(name);
    const auto& s = spec.services(index[name]);
    for (const auto& d : s.depends_on()) {
      if (index.count(d) == 0 || d == name) continue;
      if (colour[d] == 1) {
        auto it = std::find(stack_names.begin(), stack_names.end(), d);
        std::vector<std::string> cycle(it, stack_names.end());
        cycle.push_back(d);
        const std::string text = absl::StrJoin(cycle, " -> ");
        if (reported.insert(d).second) {
          const int i = index[name];
          w.Error(svc_node(i), absl::StrCat("spec.services[", i, "].dependsOn"),
                  absl::StrCat("dependency cycle: ", text));
        }
      } else if (colour[d] == 0) {
        visit(d);
      }
    }
    stack_names.pop_back();
    colour[name] = 2;
  };
  for (const auto& [name, i] : index) {
    if (colour[name] == 0) visit(name);
  }
  const Node routes =
      spec_node["proxy"] && spec_node["proxy"].IsMap() ? spec_node["proxy"]["routes"] : Node();
  std::set<std::string> paths;
  for (int i = 0; i < spec.proxy().routes_size(); ++i) {
    const auto& r = spec.proxy().routes(i);
    const Node rn = routes && routes.IsSequence() && i < static_cast<int>(routes.size())
                        ? routes[i]
                        : spec_node;
    const std::string p = absl::StrCat("spec.proxy.routes[", i, "]");
    if (!r.upstream().empty() && index.count(r.upstream()) == 0) {
      w.Error(rn, p + ".upstream", absl::StrCat("no service named \"", r.upstream(), "\""));
    }
    if (!r.path().empty() && !paths.insert(r.path()).second) {
      w.Error(rn, p + ".path", absl::StrCat("duplicate route path \"", r.path(), "\""));
    }
  }
}

// kind: Notifier — where alerts go. Secrets are references (env / file), never values.
void ParseNotifierDocument(Walker& w, const Node& doc, LoadResult* result,
                           const std::string& filename) {
  if (!w.CheckMap(doc, "", {"apiVersion", "kind", "metadata", "spec"})) return;
  v1::Notifier n;
  n.set_kind("Notifier");
  if (auto s = w.String(doc["apiVersion"], "apiVersion")) {
    if (*s != "upkeep/v1") {
      w.Error(doc["apiVersion"], "apiVersion", absl::StrCat("\"", *s, "\": must be upkeep/v1"));
    }
    n.set_api_version(*s);
  }
  const Node meta = doc["metadata"];
  if (!meta) {
    w.Error(doc, "metadata", "required");
  } else if (w.CheckMap(meta, "metadata", {"name", "labels"})) {
    if (auto s = w.String(meta["name"], "metadata.name")) {
      if (!IsDnsLabel(*s)) {
        w.Error(meta["name"], "metadata.name",
                absl::StrCat("\"", *s, "\" must be lower-case letters, digits and '-'"));
      }
      n.mutable_metadata()->set_name(*s);
    }
  }
  n.mutable_metadata()->set_source(filename);
  const Node spec = doc["spec"];
  auto secret = [&](const Node& node, const std::string& path, v1::SecretRef* out) {
    if (node.IsScalar()) {
      w.Error(node, path,
              "must be {env: VAR} or {file: PATH}: a secret is read by the controller, never "
              "written in a manifest");
      return;
    }
    if (!w.CheckMap(node, path, {"env", "file"})) return;
    if (node["env"] && node["file"]) {
      w.Error(node, path, "give env or file, not both");
    } else if (node["env"]) {
      if (auto s = w.String(node["env"], path + ".env")) out->set_env(*s);
    } else if (node["file"]) {
      if (auto s = w.String(node["file"], path + ".file")) out->set_file(*s);
    } else {
      w.Error(node, path, "needs env or file");
    }
  };
  if (!spec) {
    w.Error(doc, "spec", "required");
  } else if (w.CheckMap(spec, "spec",
                        {"type", "url", "token", "events", "stacks", "matchLabels", "rateLimit",
                         "retry", "timeout"})) {
    auto* out = n.mutable_spec();
    if (!spec["type"]) {
      w.Error(spec, "spec.type", "required: webhook or slack");
    } else if (auto s = w.String(spec["type"], "spec.type")) {
      if (*s == "webhook") {
        out->set_type(v1::NOTIFIER_TYPE_WEBHOOK);
      } else if (*s == "slack") {
        out->set_type(v1::NOTIFIER_TYPE_SLACK);
      } else {
        w.Error(spec["type"], "spec.type", absl::StrCat("\"", *s, "\": must be webhook or slack"));
      }
    }
    if (!spec["url"]) {
      w.Error(spec, "spec.url", "required: {env: VAR} or {file: PATH}");
    } else {
      secret(spec["url"], "spec.url", out->mutable_url());
    }
    if (spec["token"]) secret(spec["token"], "spec.token", out->mutable_token());
    if (spec["events"]) {
      const std::vector<std::string> known = {"alerts", "crashLoops", "actionsFailed", "healed",
                                              "resolved"};
      int i = 0;
      for (const auto& e : w.StringList(spec["events"], "spec.events")) {
        if (std::find(known.begin(), known.end(), e) == known.end()) {
          const std::string msg =
              absl::StrCat("unknown event \"", e, "\"; one of ", absl::StrJoin(known, ", "));
          w.Error(spec["events"], absl::StrCat("spec.events[", i, "]"), msg);
        }
        out->add_events(e);
        ++i;
      }
    }
    if (spec["stacks"]) {
      for (auto& s : w.StringList(spec["stacks"], "spec.stacks")) out->add_stacks(s);
    }
    if (spec["matchLabels"]) {
      if (!spec["matchLabels"].IsMap()) {
        w.Error(spec["matchLabels"], "spec.matchLabels", "must be a mapping");
      } else {
        for (const auto& kv : spec["matchLabels"].entries()) {
          if (kv.first.IsScalar() && kv.second.IsScalar()) {
            (*out->mutable_match_labels())[kv.first.Scalar()] = kv.second.Scalar();
          } else {
            w.Error(kv.first, "spec.matchLabels", "keys and values must be strings");
          }
        }
      }
    }
    if (spec["rateLimit"] && w.CheckMap(spec["rateLimit"], "spec.rateLimit", {"perMinute"})) {
      if (auto v = w.Int(spec["rateLimit"]["perMinute"], "spec.rateLimit.perMinute", 1, 10000)) {
        out->set_max_per_minute(static_cast<int32_t>(*v));
      }
    }
    if (spec["retry"] &&
        w.CheckMap(spec["retry"], "spec.retry", {"maxAttempts", "initialBackoff", "maxBackoff"})) {
      const Node r = spec["retry"];
      if (r["maxAttempts"]) {
        if (auto v = w.Int(r["maxAttempts"], "spec.retry.maxAttempts", 1, 100)) {
          out->set_max_attempts(static_cast<int32_t>(*v));
        }
      }
      if (r["initialBackoff"]) {
        if (auto d = w.Duration(r["initialBackoff"], "spec.retry.initialBackoff")) {
          *out->mutable_initial_backoff() = ToProto(*d);
        }
      }
      if (r["maxBackoff"]) {
        if (auto d = w.Duration(r["maxBackoff"], "spec.retry.maxBackoff")) {
          *out->mutable_max_backoff() = ToProto(*d);
        }
      }
    }
    if (spec["timeout"]) {
      if (auto d = w.Duration(spec["timeout"], "spec.timeout")) {
        *out->mutable_timeout() = ToProto(*d);
      }
    }
  }
  ApplyNotifierDefaults(&n);
  result->notifiers.push_back(std::move(n));
}

void ParseDocument(Walker& w, const Node& doc, LoadResult* result, const std::string& filename) {
  if (doc.IsMap() && doc["kind"].IsScalar() && doc["kind"].Scalar() == "Notifier") {
    ParseNotifierDocument(w, doc, result, filename);
    return;
  }
  if (!w.CheckMap(doc, "", {"apiVersion", "kind", "metadata", "spec", "status"})) return;
  v1::Stack stack;
  if (!doc["apiVersion"]) {
    w.Error(doc, "apiVersion", "required (upkeep/v1)");
  } else if (auto s = w.String(doc["apiVersion"], "apiVersion")) {
    if (*s != "upkeep/v1") {
      w.Error(doc["apiVersion"], "apiVersion", absl::StrCat("\"", *s, "\": must be upkeep/v1"));
    }
    stack.set_api_version(*s);
  }
  if (!doc["kind"]) {
    w.Error(doc, "kind", "required (Stack)");
  } else if (auto s = w.String(doc["kind"], "kind")) {
    if (*s != "Stack") w.Error(doc["kind"], "kind", absl::StrCat("\"", *s, "\": must be Stack"));
    stack.set_kind(*s);
  }
  const Node meta = doc["metadata"];
  if (!meta) {
    w.Error(doc, "metadata", "required");
  } else if (w.CheckMap(meta, "metadata", {"name", "labels"})) {
    if (!meta["name"]) {
      w.Error(meta, "metadata.name", "required");
    } else if (auto s = w.String(meta["name"], "metadata.name")) {
      if (!IsDnsLabel(*s)) {
        w.Error(meta["name"], "metadata.name",
                absl::StrCat("\"", *s, "\" must be lower-case letters, digits and '-'"));
      }
      stack.mutable_metadata()->set_name(*s);
    }
    if (meta["labels"] && meta["labels"].IsMap()) {
      for (const auto& kv : meta["labels"].entries()) {
        if (kv.first.IsScalar() && kv.second.IsScalar()) {
          (*stack.mutable_metadata()->mutable_labels())[kv.first.Scalar()] = kv.second.Scalar();
        }
      }
    } else if (meta["labels"]) {
      w.Error(meta["labels"], "metadata.labels", "must be a mapping");
    }
  }
  stack.mutable_metadata()->set_source(filename);
  const Node spec = doc["spec"];
  if (!spec) {
    w.Error(doc, "spec", "required");
  } else if (w.CheckMap(spec, "spec", {"hosts", "runtime", "services", "proxy", "policy"})) {
    auto* out = stack.mutable_spec();
    if (!spec["hosts"]) {
      w.Error(spec, "spec.hosts", "required: the host ids the stack runs on");
    } else {
      auto hosts = w.StringList(spec["hosts"], "spec.hosts");
      if (spec["hosts"].IsSequence() && hosts.empty()) {
        w.Error(spec["hosts"], "spec.hosts", "must name at least one host");
      }
      for (auto& h : hosts) {
        if (!IsHostId(h))
          w.Error(spec["hosts"], "spec.hosts", absl::StrCat("bad host id \"", h, "\""));
        out->add_hosts(h);
      }
    }
    if (!spec["runtime"]) {
      w.Error(spec, "spec.runtime", "required: docker or process");
    } else if (auto s = w.String(spec["runtime"], "spec.runtime")) {
      if (*s == "docker")
        out->set_runtime(v1::RUNTIME_KIND_DOCKER);
      else if (*s == "process")
        out->set_runtime(v1::RUNTIME_KIND_PROCESS);
      else
        w.Error(spec["runtime"], "spec.runtime",
                absl::StrCat("\"", *s, "\": use docker or process"));
    }
    if (!spec["services"]) {
      w.Error(spec, "spec.services", "required");
    } else if (!spec["services"].IsSequence() || spec["services"].size() == 0) {
      w.Error(spec["services"], "spec.services", "must be a non-empty list");
    } else {
      int i = 0;
      for (const auto& s : spec["services"].items()) {
        if (!w.Budget()) break;
        ParseService(w, s, absl::StrCat("spec.services[", i++, "]"), out->add_services());
      }
    }
    if (spec["proxy"]) ParseProxy(w, spec["proxy"], "spec.proxy", out->mutable_proxy());
    if (spec["policy"]) ParsePolicy(w, spec["policy"], "spec.policy", out->mutable_policy());
    CheckStack(w, spec, stack);
  }
  ApplyDefaults(&stack);
  result->stacks.push_back(std::move(stack));
}

}  // namespace

std::string ManifestError::ToString() const {
  return absl::StrCat(file, ":", line, ": ", field.empty() ? "(document)" : field, ": ", message);
}

absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text) {
  auto d = Walker::ParseDuration(text);
  if (!d.has_value())
    return absl::InvalidArgumentError(absl::StrCat("bad duration \"", text, "\""));
  return *d;
}

void ApplyDefaults(v1::Stack* stack) {
  if (stack->api_version().empty()) stack->set_api_version("upkeep/v1");
  if (stack->kind().empty()) stack->set_kind("Stack");
  auto* spec = stack->mutable_spec();
  auto set_duration = [](google::protobuf::Duration* d, absl::Duration v) {
    if (d->seconds() == 0 && d->nanos() == 0) *d = ToProto(v);
  };
  for (auto& s : *spec->mutable_services()) {
    if (s.address().empty()) s.set_address("127.0.0.1");
    auto* p = s.mutable_probe();
    if (!p->has_http() && !p->has_tcp()) p->mutable_tcp();
    if (p->has_http() && p->http().path().empty()) p->mutable_http()->set_path("/");
    if (p->has_http() && p->http().scheme().empty()) p->mutable_http()->set_scheme("http");
    set_duration(p->mutable_period(), absl::Seconds(1));
    set_duration(p->mutable_timeout(), absl::Seconds(1));
    if (p->failure_threshold() == 0) p->set_failure_threshold(3);
    if (p->success_threshold() == 0) p->set_success_threshold(1);
    if (!s.has_logs()) s.mutable_logs()->set_tail(100);
    set_duration(s.mutable_stop_timeout(), absl::Seconds(10));
  }
  if (spec->has_proxy()) {
    auto* nginx = spec->mutable_proxy()->mutable_nginx();
    if (nginx->binary().empty()) nginx->set_binary("nginx");
    if (nginx->pid_file().empty()) nginx->set_pid_file("/run/nginx.pid");
    if (nginx->error_log().empty()) nginx->set_error_log("/var/log/nginx/error.log");
    set_duration(nginx->mutable_proxy_read_timeout(), absl::Seconds(60));
    for (auto& r : *spec->mutable_proxy()->mutable_routes()) {
      if (!r.has_probe()) continue;
      set_duration(r.mutable_probe()->mutable_timeout(), absl::Seconds(2));
      set_duration(r.mutable_probe()->mutable_period(), absl::Seconds(1));
    }
  }
  auto* policy = spec->mutable_policy();
  if (policy->mode() == v1::POLICY_MODE_UNSPECIFIED) policy->set_mode(v1::POLICY_MODE_ENFORCE);
  if (policy->restart_budget().max() == 0) policy->mutable_restart_budget()->set_max(5);
  set_duration(policy->mutable_restart_budget()->mutable_window(), absl::Minutes(10));
  set_duration(policy->mutable_backoff()->mutable_initial(), absl::Seconds(1));
  set_duration(policy->mutable_backoff()->mutable_max(), absl::Minutes(5));
  set_duration(policy->mutable_healthy_reset(), absl::Minutes(10));
  if (policy->max_actions_per_minute() == 0) policy->set_max_actions_per_minute(30);
  set_duration(policy->mutable_stale_after(), absl::Seconds(15));
  set_duration(policy->mutable_certificate_warning(), absl::Hours(24 * 14));
  if (policy->disk_warning() == 0) policy->set_disk_warning(95);
}

LoadResult LoadString(absl::string_view content, absl::string_view filename) {
  LoadResult result;
  const std::string file(filename);
  if (content.size() > kMaxFileBytes) {
    result.errors.push_back(
        {file, 0, "", absl::StrCat("file is ", content.size(), " bytes; the limit is 1 MiB")});
    return result;
  }
  if (const size_t nul = content.find('\0'); nul != absl::string_view::npos) {
    const int line = 1 + static_cast<int>(std::count(content.begin(), content.begin() + nul, '\n'));
    result.errors.push_back({file, line, "", "file holds NUL bytes: not a YAML text file"});
    return result;
  }
  const YamlStream yaml = YamlStream::Parse(content, {kMaxDepth, kMaxNodes});
  if (!yaml.ok()) {
    result.errors.push_back({file, yaml.error().line, "", yaml.error().message});
    return result;
  }
  Walker w(file, &result.errors);
  std::map<std::string, int> names;
  for (const YamlStream::Document& d : yaml.documents()) {
    const Node doc(d.root);
    if (doc.IsNull()) continue;  // an empty document (e.g. a trailing ---)
    const size_t before = result.stacks.size();
    ParseDocument(w, doc, &result, file);
    if (result.stacks.size() > before) {
      const std::string& name = result.stacks.back().metadata().name();
      if (!name.empty() && !names.emplace(name, doc.line()).second) {
        w.Error(
            doc["metadata"] ? doc["metadata"]["name"] : doc, "metadata.name",
            absl::StrCat("duplicate stack name \"", name, "\" (also at line ", names[name], ")"));
      }
    }
  }
  if (result.stacks.empty() && result.notifiers.empty()) {
    if (result.errors.empty()) result.errors.push_back({file, 0, "", "no Stack documents"});
  }
  if (!result.errors.empty()) {
    result.stacks.clear();
    result.notifiers.clear();
  }
  return result;
}

LoadResult LoadPath(const std::string& path) {
  namespace fs = std::filesystem;
  LoadResult result;
  std::error_code ec;
  std::vector<std::string> files;
  if (fs::is_directory(path, ec)) {
    for (const auto& entry : fs::directory_iterator(path, ec)) {
      const std::string ext = entry.path().extension().string();
      if (entry.is_regular_file() && (ext == ".yaml" || ext == ".yml")) {
        files.push_back(entry.path().string());
      }
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) {
      result.errors.push_back({path, 0, "", "no *.yaml or *.yml files in this directory"});
      return result;
    }
  } else {
    files.push_back(path);
  }
  std::map<std::string, std::string> seen;  // stack name -> file
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) {
      result.errors.push_back({f, 0, "", "cannot read file"});
      continue;
    }
    std::string content;
    content.resize(kMaxFileBytes + 1);
    in.read(content.data(), static_cast<std::streamsize>(content.size()));
    content.resize(static_cast<size_t>(in.gcount()));
    LoadResult one = LoadString(content, f);
    for (auto& e : one.errors) result.errors.push_back(std::move(e));
    for (auto& s : one.stacks) {
      const std::string name = s.metadata().name();
      if (auto it = seen.find(name); it != seen.end()) {
        result.errors.push_back(
            {f, 0, "metadata.name",
             absl::StrCat("duplicate stack name \"", name, "\" (also in ", it->second, ")")});
        continue;
      }
      seen[name] = f;
      result.stacks.push_back(std::move(s));
    }
    for (auto& n : one.notifiers) result.notifiers.push_back(std::move(n));
  }
  if (!result.errors.empty()) {
    result.stacks.clear();
    result.notifiers.clear();
  }
  return result;
}

void ApplyNotifierDefaults(v1::Notifier* notifier) {
  if (notifier->api_version().empty()) notifier->set_api_version("upkeep/v1");
  if (notifier->kind().empty()) notifier->set_kind("Notifier");
  auto* spec = notifier->mutable_spec();
  if (spec->events().empty()) {
    for (const char* e : {"alerts", "crashLoops", "actionsFailed", "healed", "resolved"}) {
      spec->add_events(e);
    }
  }
  if (spec->max_per_minute() == 0) spec->set_max_per_minute(20);
  if (spec->max_attempts() == 0) spec->set_max_attempts(5);
  auto set_duration = [](google::protobuf::Duration* d, absl::Duration v) {
    if (d->seconds() == 0 && d->nanos() == 0) *d = ToProto(v);
  };
  set_duration(spec->mutable_initial_backoff(), absl::Seconds(1));
  set_duration(spec->mutable_max_backoff(), absl::Minutes(1));
  set_duration(spec->mutable_timeout(), absl::Seconds(5));
}

}  // namespace upkeep::manifest
