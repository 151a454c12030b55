#include "controller/notify/message.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/proto_time.h"
#include "nlohmann/json.hpp"

namespace upkeep::notify {
namespace {

namespace v1 = upkeep::v1;
using json = nlohmann::json;

std::string Lower(v1::Severity s) {
  switch (s) {
    case v1::SEVERITY_ALERT:
      return "alert";
    case v1::SEVERITY_WARNING:
      return "warning";
    case v1::SEVERITY_INFO:
      return "info";
    default:
      return "";
  }
}

std::string SeverityOf(const Message& m) {
  if (m.test) return "info";
  const std::string c = EventClass(m.event);
  if (c == "alerts" || c == "crashLoops") return "alert";
  if (c == "actionsFailed") return "warning";
  return "info";
}

json Evidence(const google::protobuf::Map<std::string, std::string>& ev) {
  json out = json::object();
  for (const auto& [k, v] : ev) out[k] = v;
  return out;
}

// Findings that belong to this event: the one with its code and target when there is one.
std::vector<const v1::Finding*> Relevant(const Message& m) {
  std::vector<const v1::Finding*> out;
  if (!m.diagnosis) return out;
  const std::string code = FindingCode(m.event);
  for (const auto& f : m.diagnosis->findings()) {
    if (code.empty() ||
        (f.code() == code && (m.event.target().empty() || f.target() == m.event.target()))) {
      out.push_back(&f);
    }
  }
  if (out.empty()) {
    for (const auto& f : m.diagnosis->findings()) out.push_back(&f);
  }
  return out;
}

}  // namespace

std::string EventClass(const v1::Event& e) {
  const std::string& r = e.reason();
  if (r == "Alert") return "alerts";
  if (r == "CrashLooping") return "crashLoops";
  if (r == "ActionFailed") return "actionsFailed";
  if (r == "Healed") return "healed";
  if (r == "Resolved") return "resolved";
  return "";
}

std::string FindingCode(const v1::Event& e) {
  if (e.reason() == "CrashLooping") return "CrashLooping";
  if (e.reason() == "Alert" || e.reason() == "Resolved") {
    const size_t colon = e.message().find(':');
    if (colon != std::string::npos) return e.message().substr(0, colon);
  }
  return "";
}

std::string Headline(const Message& m) {
  const std::string cls = m.test ? "test" : EventClass(m.event);
  std::string where = m.event.stack();
  if (!m.event.host().empty()) absl::StrAppend(&where, "@", m.event.host());
  if (where.empty()) where = "fleet";
  return absl::StrCat("[upkeep ", cls, "] ", where,
                      m.event.target().empty() ? "" : absl::StrCat(" ", m.event.target()), ": ",
                      m.event.message());
}

std::string PathText(const v1::Diagnosis& d) {
  std::string out;
  for (const auto& n : d.path()) {
    absl::StrAppend(&out, std::string(2 * std::max(0, n.depth()), ' '), n.step());
    if (!n.target().empty()) absl::StrAppend(&out, " [", n.target(), "]");
    absl::StrAppend(&out, " -> ", n.decision(), "\n");
    for (const auto& [k, v] : n.evidence()) {
      absl::StrAppend(&out, std::string(2 * std::max(0, n.depth()) + 4, ' '), k, ": ", v, "\n");
    }
  }
  return out;
}

std::string WebhookJson(const Message& m) {
  json j;
  j["notifier"] = m.notifier;
  j["event"] = m.test ? "test" : EventClass(m.event);
  j["severity"] = SeverityOf(m);
  j["stack"] = m.event.stack();
  j["host"] = m.event.host();
  j["target"] = m.event.target();
  j["code"] = FindingCode(m.event);
  j["reason"] = m.event.reason();
  j["message"] = m.event.message();
  j["at"] = m.event.has_at()
                ? absl::FormatTime(absl::RFC3339_full, FromProto(m.event.at()), absl::UTCTimeZone())
                : "";
  j["seq"] = m.event.seq();
  if (!m.event.action_id().empty()) j["action_id"] = m.event.action_id();
  j["text"] = Headline(m);
  if (m.diagnosis) {
    j["verdict"] = v1::Verdict_Name(m.diagnosis->verdict());
    j["summary"] = m.diagnosis->summary();
    json findings = json::array();
    for (const v1::Finding* f : Relevant(m)) {
      findings.push_back({{"code", f->code()},
                          {"severity", Lower(f->severity())},
                          {"target", f->target()},
                          {"message", f->message()},
                          {"evidence", Evidence(f->evidence())}});
    }
    j["findings"] = findings;
    json path = json::array();
    for (const auto& n : m.diagnosis->path()) {
      path.push_back({{"step", n.step()},
                      {"target", n.target()},
                      {"decision", n.decision()},
                      {"depth", n.depth()},
                      {"evidence", Evidence(n.evidence())}});
    }
    j["path"] = path;
  }
  return j.dump();
}

std::string SlackJson(const Message& m) {
  json blocks = json::array();
  blocks.push_back({{"type", "section"}, {"text", {{"type", "mrkdwn"}, {"text", Headline(m)}}}});
  if (m.diagnosis) {
    std::string findings;
    for (const v1::Finding* f : Relevant(m)) {
      absl::StrAppend(&findings, "*", f->code(), "* ", f->target(), ": ", f->message(), "\n");
      for (const auto& [k, v] : f->evidence()) absl::StrAppend(&findings, "• ", k, ": `", v, "`\n");
    }
    if (!findings.empty()) {
      blocks.push_back({{"type", "section"}, {"text", {{"type", "mrkdwn"}, {"text", findings}}}});
    }
    std::string path = PathText(*m.diagnosis);
    if (path.size() > 2800) path = path.substr(0, 2800) + "...\n";
    if (!path.empty()) {
      blocks.push_back(
          {{"type", "section"},
           {"text", {{"type", "mrkdwn"}, {"text", absl::StrCat("```", path, "```")}}}});
    }
  }
  json j;
  j["text"] = Headline(m);
  j["blocks"] = blocks;
  return j.dump();
}

std::string Render(v1::NotifierType type, const Message& m) {
  return type == v1::NOTIFIER_TYPE_SLACK ? SlackJson(m) : WebhookJson(m);
}

}  // namespace upkeep::notify
