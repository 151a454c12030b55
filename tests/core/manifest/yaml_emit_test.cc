// The `-o yaml` emitter: what it writes reads back through the loader's parser to the same
// values, whatever the strings hold.
#include "core/manifest/yaml_emit.h"

#include <string>

#include "core/manifest/yaml_tree.h"
#include "gtest/gtest.h"

namespace upkeep::manifest {
namespace {

using nlohmann::json;

// The tree as JSON, every scalar a string (the parser keeps text, not types).
json ToJson(const YamlNode& n) {
  switch (n.kind()) {
    case YamlNode::Kind::kNull:
      return nullptr;
    case YamlNode::Kind::kScalar:
      return n.scalar();
    case YamlNode::Kind::kSequence: {
      json out = json::array();
      for (const YamlNode* i : n.items()) out.push_back(ToJson(*i));
      return out;
    }
    case YamlNode::Kind::kMapping: {
      json out = json::object();
      for (const auto& [k, v] : n.entries()) out[k->scalar()] = ToJson(*v);
      return out;
    }
  }
  return nullptr;
}

// `j` with numbers and booleans as the text a reader sees.
json Textual(const json& j) {
  if (j.is_object()) {
    json out = json::object();
    for (auto it = j.begin(); it != j.end(); ++it) out[it.key()] = Textual(it.value());
    return out;
  }
  if (j.is_array()) {
    json out = json::array();
    for (const auto& v : j) out.push_back(Textual(v));
    return out;
  }
  if (j.is_null() || j.is_string()) return j;
  return j.dump();
}

json RoundTrip(const json& j) {
  const std::string text = EmitYaml(j);
  const YamlStream s = YamlStream::Parse(text);
  EXPECT_TRUE(s.ok()) << s.error().line << ": " << s.error().message << "\n" << text;
  if (!s.ok() || s.documents().size() != 1) return "not one document";
  return ToJson(*s.documents()[0].root);
}

TEST(EmitYaml, RoundTripsThroughTheParser) {
  const json status = json::parse(R"({
    "metadata": {"name": "shop", "labels": {"team": "web", "a b": "c: d", "": "empty key"}},
    "spec": {"hosts": ["web-1", "web-2"], "runtime": "RUNTIME_KIND_PROCESS",
             "services": [{"name": "api", "port": 8080, "probe": {"period": "2s"}},
                          {"name": "db", "dependsOn": [], "env": {}}]},
    "status": {"observedGeneration": "3", "ready": true, "ratio": 0.25, "none": null,
               "conditions": [[1, 2], [], [{"x": "y"}]]}
  })");
  EXPECT_EQ(RoundTrip(status), Textual(status));
}

TEST(EmitYaml, QuotesStringsThatWouldReadAsSomethingElse) {
  for (const char* s :
       {"true",   "No",          "null",      "~",           "",       "123", "1.5", "-",   "- x",
        "a: b",   "#x",          "x #y",      "*a",          "&a",     "!t",  "[1]", "{a}", "'q'",
        "\"dq\"", "line\nbreak", "tab\there", " lead",       "trail ", "%x",  "@x",  "`x",  "|",
        ">",      "?",           ",",         "caf\xc3\xa9", "---",    "...", "\x01"}) {
    const json j = {{"k", s}, {"list", {s}}};
    EXPECT_EQ(RoundTrip(j), j) << EmitYaml(j);
  }
}

TEST(EmitYaml, WritesPlainBlockYaml) {
  const json j = json::parse(R"({"name": "shop", "hosts": ["web-1"], "port": 80,
                                  "routes": [{"path": "/api/", "upstream": "api"}]})");
  EXPECT_EQ(
      EmitYaml(j),
      "hosts:\n  - web-1\nname: shop\nport: 80\nroutes:\n  - path: /api/\n    upstream: api\n");
  EXPECT_EQ(EmitYaml(json::object()), "{}\n");
  EXPECT_EQ(EmitYaml("x"), "x\n");
}

}  // namespace
}  // namespace upkeep::manifest
