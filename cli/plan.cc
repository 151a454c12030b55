// upkeepctl plan -f STACK.yaml --observed SNAPSHOT.json [-o json|text] [--now RFC3339]
//                [--paused]
// The diagnosis the engine makes for that observation, offline. SNAPSHOT.json is the protobuf
// JSON mapping of upkeep.v1.StackObservation, with the action history in `history` (which also
// carries manual stops) and the pause state in `paused`. "Now" is --now or the current time,
// never the snapshot's own time: an old snapshot is judged stale, as the controller would.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cli/commands.h"
#include "core/decision/diagnose.h"
#include "core/decision/render.h"
#include "core/manifest/loader.h"
#include "core/proto_time.h"
#include "google/protobuf/util/json_util.h"

namespace upkeep::cli {

int RunPlanOffline(int argc, char** argv) {
  std::string file, observed, output = "text", now_text;
  bool paused = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    bool ok = true;
    if (a == "-f" || a == "--filename")
      ok = value(&file);
    else if (a == "--observed")
      ok = value(&observed);
    else if (a == "-o" || a == "--output")
      ok = value(&output);
    else if (a == "--now")
      ok = value(&now_text);
    else if (a == "--paused")
      paused = true;
    else
      ok = false;
    if (!ok) {
      std::fprintf(stderr,
                   "usage: upkeepctl plan -f STACK.yaml --observed SNAPSHOT.json "
                   "[-o json|text] [--now RFC3339] [--paused]\n");
      return 2;
    }
  }
  if (file.empty() || observed.empty() || (output != "json" && output != "text")) {
    std::fprintf(stderr,
                 "usage: upkeepctl plan -f STACK.yaml --observed SNAPSHOT.json "
                 "[-o json|text] [--now RFC3339] [--paused]\n");
    return 2;
  }
  const manifest::LoadResult loaded = manifest::LoadPath(file);
  if (!loaded.ok()) {
    for (const auto& e : loaded.errors) std::fprintf(stderr, "%s\n", e.ToString().c_str());
    return 1;
  }
  std::ifstream in(observed);
  if (!in) {
    std::fprintf(stderr, "upkeepctl plan: cannot read %s\n", observed.c_str());
    return 1;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  upkeep::v1::StackObservation snapshot;
  google::protobuf::util::JsonParseOptions opts;
  const auto st = google::protobuf::util::JsonStringToMessage(ss.str(), &snapshot, opts);
  if (!st.ok()) {
    std::fprintf(stderr, "upkeepctl plan: %s: not a StackObservation: %s\n", observed.c_str(),
                 st.ToString().c_str());
    return 1;
  }
  const upkeep::v1::Stack* stack = nullptr;
  for (const auto& s : loaded.stacks) {
    if (s.metadata().name() == snapshot.stack() || loaded.stacks.size() == 1) stack = &s;
  }
  if (stack == nullptr) {
    std::fprintf(stderr, "upkeepctl plan: %s holds no stack named \"%s\"\n", file.c_str(),
                 snapshot.stack().c_str());
    return 1;
  }
  absl::Time now = absl::Now();
  if (!now_text.empty()) {
    std::string err;
    if (!absl::ParseTime(absl::RFC3339_full, now_text, &now, &err)) {
      std::fprintf(stderr, "upkeepctl plan: --now %s: %s\n", now_text.c_str(), err.c_str());
      return 2;
    }
  }
  std::vector<upkeep::v1::ActionRecord> history(snapshot.history().begin(),
                                                snapshot.history().end());
  decision::DiagnoseOptions options;
  options.paused = paused || snapshot.paused();
  const upkeep::v1::Diagnosis d = decision::Diagnose(*stack, snapshot, history, now, options);
  if (output == "json") {
    std::string json;
    google::protobuf::util::JsonPrintOptions p;
    p.add_whitespace = true;
    (void)google::protobuf::util::MessageToJsonString(d, &json, p);
    std::fputs(json.c_str(), stdout);
  } else {
    std::fputs(decision::RenderDiagnosisText(d).c_str(), stdout);
  }
  return 0;
}

}  // namespace upkeep::cli
