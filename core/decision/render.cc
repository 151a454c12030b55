#include "core/decision/render.h"

#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/proto_time.h"

namespace upkeep::decision {
namespace {

namespace v1 = upkeep::v1;

std::string Lower(std::string s, const std::string& prefix) {
  if (s.rfind(prefix, 0) == 0) s = s.substr(prefix.size());
  s = absl::AsciiStrToLower(s);
  return absl::StrReplaceAll(s, {{"_", "-"}});
}

std::string OneLine(const std::string& s) {
  std::string out = absl::StrReplaceAll(s, {{"\n", " ⏎ "}});
  if (out.size() > 160) out = out.substr(0, 157) + "...";
  return out;
}

}  // namespace

std::string ActionKindName(v1::ActionKind kind) {
  return Lower(v1::ActionKind_Name(kind), "ACTION_KIND_");
}

v1::ActionKind ParseActionKind(const std::string& name) {
  for (int k = v1::ActionKind_MIN; k <= v1::ActionKind_MAX; ++k) {
    if (!v1::ActionKind_IsValid(k) || k == v1::ACTION_KIND_UNSPECIFIED) continue;
    if (ActionKindName(static_cast<v1::ActionKind>(k)) == name) {
      return static_cast<v1::ActionKind>(k);
    }
  }
  return v1::ACTION_KIND_UNSPECIFIED;
}

std::string RenderDiagnosisText(const v1::Diagnosis& d) {
  std::string out = absl::StrCat("stack ", d.stack(), " on host ", d.host(), ": ",
                                 absl::AsciiStrToUpper(Lower(v1::Verdict_Name(d.verdict()),
                                                             "VERDICT_")),
                                 "\n  ", d.summary(), "\n");
  if (d.has_at()) absl::StrAppend(&out, "  at ", absl::FormatTime(FromProto(d.at())), "\n");
  absl::StrAppend(&out, "\ndecision path:\n");
  for (const auto& n : d.path()) {
    std::string indent(2 + 4 * n.depth(), ' ');
    absl::StrAppend(&out, indent, n.depth() > 0 ? "└─ " : "", n.step());
    if (!n.target().empty()) absl::StrAppend(&out, " [", n.target(), "]");
    absl::StrAppend(&out, ": ", n.decision(), "\n");
    std::map<std::string, std::string> ev(n.evidence().begin(), n.evidence().end());
    for (const auto& [k, v] : ev) {
      absl::StrAppend(&out, indent, n.depth() > 0 ? "   " : "", "    ", k, " = ", OneLine(v),
                      "\n");
    }
  }
  if (d.findings_size() > 0) {
    absl::StrAppend(&out, "\nfindings:\n");
    for (const auto& f : d.findings()) {
      absl::StrAppend(&out, "  ", Lower(v1::Severity_Name(f.severity()), "SEVERITY_"), " ",
                      f.code(), " [", f.target(), "]: ", f.message(), "\n");
      std::map<std::string, std::string> ev(f.evidence().begin(), f.evidence().end());
      for (const auto& [k, v] : ev) absl::StrAppend(&out, "      ", k, " = ", OneLine(v), "\n");
    }
  }
  if (d.actions_size() > 0) {
    absl::StrAppend(&out, "\nactions:\n");
    int i = 0;
    for (const auto& a : d.actions()) {
      absl::StrAppend(&out, "  ", ++i, ". ", ActionKindName(a.action().kind()), " ",
                      a.action().target(), "  [", Lower(v1::PolicyVerdict_Name(a.policy()),
                                                         "POLICY_VERDICT_"),
                      "] ", a.action().reason(), "\n");
      if (a.policy() != v1::POLICY_VERDICT_ALLOWED) {
        absl::StrAppend(&out, "       policy: ", a.policy_reason(), "\n");
      }
    }
  }
  return out;
}

}  // namespace upkeep::decision
