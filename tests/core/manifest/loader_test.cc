// The manifest loader: the examples load; each kind of mistake is reported with its file,
// line and field path, all at once; hostile input is rejected cleanly.
#include "core/manifest/loader.h"

#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "core/proto_time.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace upkeep::manifest {
namespace {

namespace v1 = upkeep::v1;

constexpr char kGood[] = R"(apiVersion: upkeep/v1
kind: Stack
metadata: {name: shop}
spec:
  hosts: [web-1]
  runtime: process
  services:
    - name: api
      process: {command: "bin/api --port 8080"}
      port: 8080
      probe: {http: {path: /health}, period: 2s, timeout: 500ms}
  proxy:
    nginx: {config: /etc/nginx/nginx.conf}
    routes:
      - {path: /, upstream: api, probe: {url: "http://127.0.0.1/"}}
)";

TEST(Loader, LoadsTheExampleManifests) {
  const LoadResult r = LoadPath(upkeep::testing::SourcePath("manifests"));
  ASSERT_TRUE(r.ok()) << r.errors[0].ToString();
  ASSERT_EQ(r.stacks.size(), 2u);
  EXPECT_EQ(r.stacks[0].metadata().name(), "dashboard");
  EXPECT_EQ(r.stacks[0].spec().services(1).container().compose().service(), "backend-aws");
  EXPECT_EQ(r.stacks[0].spec().services(1).depends_on(0), "db");
  EXPECT_EQ(r.stacks[1].metadata().name(), "demo");
}

TEST(Loader, FillsDefaults) {
  const LoadResult r = LoadString(kGood, "good.yaml");
  ASSERT_TRUE(r.ok()) << r.errors[0].ToString();
  const auto& s = r.stacks[0];
  EXPECT_EQ(s.spec().services(0).process().command_size(), 3);
  EXPECT_EQ(FromProto(s.spec().services(0).probe().period()), absl::Seconds(2));
  EXPECT_EQ(FromProto(s.spec().services(0).probe().timeout()), absl::Milliseconds(500));
  EXPECT_EQ(s.spec().services(0).probe().failure_threshold(), 3);
  EXPECT_EQ(s.spec().services(0).logs().tail(), 100);
  EXPECT_EQ(s.spec().services(0).address(), "127.0.0.1");
  EXPECT_EQ(s.spec().policy().restart_budget().max(), 5);
  EXPECT_EQ(FromProto(s.spec().policy().backoff().max()), absl::Minutes(5));
  EXPECT_EQ(s.spec().policy().mode(), upkeep::v1::POLICY_MODE_ENFORCE);
  EXPECT_EQ(s.metadata().source(), "good.yaml");
  EXPECT_EQ(FromProto(s.spec().proxy().routes(0).probe().timeout()), absl::Seconds(2));
  EXPECT_EQ(FromProto(s.spec().proxy().routes(0).probe().period()), absl::Seconds(1));
}

TEST(Loader, ReadsARouteProbePeriod) {
  std::string yaml = kGood;
  yaml.replace(yaml.find("probe: {url: \"http://127.0.0.1/\"}"), 33,
               "probe: {url: \"http://127.0.0.1/\", period: 250ms}");
  const LoadResult r = LoadString(yaml, "good.yaml");
  ASSERT_TRUE(r.ok()) << r.errors[0].ToString();
  EXPECT_EQ(FromProto(r.stacks[0].spec().proxy().routes(0).probe().period()),
            absl::Milliseconds(250));
  yaml.replace(yaml.find("period: 250ms"), 13, "period: 20ms");
  const LoadResult bad = LoadString(yaml, "good.yaml");
  ASSERT_EQ(bad.errors.size(), 1u);
  EXPECT_EQ(bad.errors[0].field, "spec.proxy.routes[0].probe.period");
  EXPECT_NE(bad.errors[0].message.find("at least 100ms"), std::string::npos)
      << bad.errors[0].ToString();
}

TEST(Loader, ReadsTheNginxSystemdUnitAndNotifiersBesideStacks) {
  std::string yaml = kGood;
  yaml.replace(yaml.find("{config: /etc/nginx/nginx.conf}"), 31,
               "{config: /etc/nginx/nginx.conf, service: nginx.service}");
  yaml +=
      "---\napiVersion: upkeep/v1\nkind: Notifier\nmetadata: {name: ops}\n"
      "spec: {type: slack, url: {file: /etc/upkeep/slack-url}}\n";
  const LoadResult r = LoadString(yaml, "mixed.yaml");
  ASSERT_TRUE(r.ok()) << r.errors[0].ToString();
  ASSERT_EQ(r.stacks.size(), 1u);
  EXPECT_EQ(r.stacks[0].spec().proxy().nginx().service(), "nginx.service");
  ASSERT_EQ(r.notifiers.size(), 1u);
  EXPECT_EQ(r.notifiers[0].spec().url().file(), "/etc/upkeep/slack-url");
  EXPECT_EQ(r.notifiers[0].spec().events_size(), 5) << "every event class by default";
  EXPECT_EQ(r.notifiers[0].spec().max_per_minute(), 20);
}

TEST(Loader, ReadsComposeFileProfileAndBeyond502Settings) {
  const char* text = R"(apiVersion: upkeep/v1
kind: Stack
metadata: {name: shop}
spec:
  hosts: [aws]
  runtime: docker
  services:
    - name: backend
      container: {compose: {project: shop, service: backend-aws, file: /srv/shop/compose.yml, profile: aws}}
      port: 8002
      dataPaths: [/srv/shop/backend]
  policy: {certificateWarning: 30d, diskWarning: 90}
)";
  const LoadResult r = LoadString(text, "c.yaml");
  ASSERT_TRUE(r.ok()) << r.errors[0].ToString();
  const auto& svc = r.stacks[0].spec().services(0);
  EXPECT_EQ(svc.container().compose().file(), "/srv/shop/compose.yml");
  EXPECT_EQ(svc.container().compose().profile(), "aws");
  EXPECT_EQ(svc.data_paths(0), "/srv/shop/backend");
  EXPECT_EQ(FromProto(r.stacks[0].spec().policy().certificate_warning()), absl::Hours(24 * 30));
  EXPECT_EQ(r.stacks[0].spec().policy().disk_warning(), 90);
  // Defaults: 14 days, 95 %.
  v1::Stack empty;
  ApplyDefaults(&empty);
  EXPECT_EQ(FromProto(empty.spec().policy().certificate_warning()), absl::Hours(24 * 14));
  EXPECT_EQ(empty.spec().policy().disk_warning(), 95);
  const LoadResult bad = LoadString(
      absl::StrReplaceAll(text, {{"file: /srv/shop/compose.yml", "file: compose.yml"}}), "c.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.errors[0].ToString(), "compose.file"))
      << bad.errors[0].ToString();
}

TEST(Loader, ReadsSeveralDocumentsPerFile) {
  std::string two = std::string(kGood) + "---\n" + kGood;
  two.replace(two.rfind("name: shop"), 10, "name: shop2");
  const LoadResult r = LoadString(two, "two.yaml");
  ASSERT_TRUE(r.ok()) << r.errors[0].ToString();
  EXPECT_EQ(r.stacks.size(), 2u);
}

struct ErrorCase {
  std::string name;
  std::string from;  // replaced in kGood ...
  std::string to;    // ... by this
  int line;
  std::string field;
  std::string message;  // a fragment
};

class LoaderErrors : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(LoaderErrors, NamesFileLineAndField) {
  const ErrorCase& c = GetParam();
  std::string text = kGood;
  const size_t at = text.find(c.from);
  ASSERT_NE(at, std::string::npos) << c.from;
  text.replace(at, c.from.size(), c.to);
  const LoadResult r = LoadString(text, "bad.yaml");
  ASSERT_FALSE(r.ok()) << "accepted:\n" << text;
  EXPECT_TRUE(r.stacks.empty());
  bool found = false;
  std::string all;
  for (const auto& e : r.errors) {
    all += e.ToString() + "\n";
    if (e.file == "bad.yaml" && e.line == c.line && e.field == c.field &&
        absl::StrContains(e.message, c.message)) {
      found = true;
    }
  }
  EXPECT_TRUE(found) << "want bad.yaml:" << c.line << ": " << c.field << ": ..." << c.message
                     << "...\ngot:\n"
                     << all;
}

INSTANTIATE_TEST_SUITE_P(
    Mistakes, LoaderErrors,
    ::testing::Values(
        ErrorCase{"WrongApiVersion", "upkeep/v1", "upkeep/v2", 1, "apiVersion", "upkeep/v1"},
        ErrorCase{"WrongKind", "kind: Stack", "kind: Pod", 2, "kind", "must be Stack"},
        ErrorCase{"UnknownField", "  runtime: process", "  runtime: process\n  replicas: 3", 7,
                  "spec.replicas", "unknown field"},
        ErrorCase{"BadDuration", "period: 2s", "period: 2", 11, "spec.services[0].probe.period",
                  "bad duration"},
        ErrorCase{"ProbePeriodTooShort", "period: 2s", "period: 10ms", 11,
                  "spec.services[0].probe.period", "at least 100ms"},
        ErrorCase{"NegativeDuration", "timeout: 500ms", "timeout: -1s", 11,
                  "spec.services[0].probe.timeout", "bad duration"},
        ErrorCase{"PortOutOfRange", "port: 8080", "port: 70000", 10, "spec.services[0].port",
                  "between 1 and 65535"},
        ErrorCase{"WrongType", "port: 8080", "port: [1]", 10, "spec.services[0].port", "integer"},
        ErrorCase{"NegativeThreshold", "timeout: 500ms}", "timeout: 500ms, failureThreshold: -2}",
                  11, "spec.services[0].probe.failureThreshold", "between"},
        ErrorCase{"UnknownUpstream", "upstream: api", "upstream: web", 15,
                  "spec.proxy.routes[0].upstream", "no service named \"web\""},
        ErrorCase{"UnknownDependency", "      port: 8080",
                  "      port: 8080\n      dependsOn: [db]", 8, "spec.services[0].dependsOn[0]",
                  "no service named \"db\""},
        ErrorCase{"MissingName", "metadata: {name: shop}", "metadata: {}", 3, "metadata.name",
                  "required"},
        ErrorCase{"MissingHosts", "  hosts: [web-1]\n", "", 5, "spec.hosts", "required"},
        ErrorCase{"NoRuntimeHandle", "      process: {command: \"bin/api --port 8080\"}\n", "", 8,
                  "spec.services[0].process", "required with runtime process"},
        ErrorCase{"BadMode", "  proxy:", "  policy: {mode: yolo}\n  proxy:", 12, "spec.policy.mode",
                  "enforce or dry-run"},
        ErrorCase{"DiskWarningOver100", "  proxy:", "  policy: {diskWarning: 120}\n  proxy:", 12,
                  "spec.policy.diskWarning", "between"},
        ErrorCase{"RelativeDataPath", "      port: 8080",
                  "      port: 8080\n      dataPaths: [data]", 11, "spec.services[0].dataPaths",
                  "not absolute"},
        ErrorCase{"InvalidYaml", "hosts: [web-1]", "hosts: [web-1", 6, "", "invalid YAML"}),
    [](const ::testing::TestParamInfo<ErrorCase>& info) { return info.param.name; });

TEST(Loader, ReportsEveryErrorOfAFileAtOnce) {
  std::string text = kGood;
  text.replace(text.find("port: 8080"), 10, "port: 0");
  text.replace(text.find("period: 2s"), 10, "period: x");
  text.replace(text.find("upstream: api"), 13, "upstream: nope");
  const LoadResult r = LoadString(text, "bad.yaml");
  EXPECT_GE(r.errors.size(), 3u);
}

TEST(Loader, DuplicateServicesAndCyclesAreErrors) {
  const std::string text = R"(apiVersion: upkeep/v1
kind: Stack
metadata: {name: loop}
spec:
  hosts: [h]
  runtime: process
  services:
    - {name: a, process: {command: [a]}, port: 1, dependsOn: [b]}
    - {name: b, process: {command: [b]}, port: 2, dependsOn: [a]}
    - {name: b, process: {command: [b]}, port: 3}
)";
  const LoadResult r = LoadString(text, "loop.yaml");
  std::string all;
  for (const auto& e : r.errors) all += e.ToString() + "\n";
  EXPECT_TRUE(absl::StrContains(all, "dependency cycle: a -> b -> a")) << all;
  EXPECT_TRUE(absl::StrContains(all, "loop.yaml:10: spec.services[2].name: duplicate")) << all;
}

TEST(Loader, DuplicateStackNamesAcrossFilesAreErrors) {
  upkeep::testing::TempDir dir;
  std::ofstream(dir.Join("a.yaml")) << kGood;
  std::ofstream(dir.Join("b.yaml")) << kGood;
  const LoadResult r = LoadPath(dir.path());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.errors[0].message, "duplicate stack name"))
      << r.errors[0].ToString();
}

TEST(Loader, RejectsDeepNestingHugeInputAndBinaryJunk) {
  EXPECT_FALSE(LoadString(std::string(100000, '['), "deep.yaml").ok());
  std::string block;
  for (int i = 0; i < 200; ++i) block += std::string(i, ' ') + "a:\n";
  EXPECT_FALSE(LoadString(block, "block.yaml").ok());
  EXPECT_FALSE(LoadString(std::string(2 << 20, 'a'), "huge.yaml").ok());
  EXPECT_FALSE(LoadString(std::string("\0\1\2\3", 4), "junk.yaml").ok());
  // Found by the fuzzer: yaml-cpp 0.7 never returned on a document starting with ','.
  EXPECT_FALSE(LoadString(",!!", "hang.yaml").ok());
  EXPECT_EQ(LoadString("a: 1\n--- ,\n", "hang.yaml").errors.at(0).line, 2);
  // A billion laughs: aliases are followed, but the walk is bounded.
  std::string laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'k'; ++c) {
    laughs += std::string(1, c) + ": &" + c + " [*" + static_cast<char>(c - 1) + ", *" +
              static_cast<char>(c - 1) + ", *" + static_cast<char>(c - 1) + "]\n";
  }
  laughs += "apiVersion: upkeep/v1\n";
  EXPECT_FALSE(LoadString(laughs, "laughs.yaml").ok());
}

// Every input on which a parser we used never returned (tests/fuzz/corpus/manifest/yaml-cpp-*):
// each is rejected with an error at once.
struct HangCase {
  std::string name;
  std::string corpus_file;
};

class FuzzerFoundInputs : public ::testing::TestWithParam<HangCase> {};

std::string ReadCorpus(const std::string& name) {
  std::ifstream in(upkeep::testing::SourcePath("tests/fuzz/corpus/manifest/" + name),
                   std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST_P(FuzzerFoundInputs, AreRejectedPromptlyWithAnError) {
  const std::string text = ReadCorpus(GetParam().corpus_file);
  ASSERT_FALSE(text.empty()) << GetParam().corpus_file;
  const absl::Time start = absl::Now();
  const LoadResult r = LoadString(text, "found.yaml");
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.stacks.empty());
  EXPECT_TRUE(absl::StartsWith(r.errors[0].ToString(), "found.yaml:")) << r.errors[0].ToString();
  EXPECT_FALSE(r.errors[0].message.empty());
}

INSTANTIATE_TEST_SUITE_P(
    YamlCppHangs, FuzzerFoundInputs,
    ::testing::Values(HangCase{"CommaThenTag", "yaml-cpp-hang-comma"},                 // ",!!"
                      HangCase{"CommaAfterSequenceEntry", "yaml-cpp-hang-seq-comma"},  // "-\n,"
                      HangCase{"CommaAfterSequenceEntryUtf8", "yaml-cpp-hang-seq-comma-utf8"},
                      HangCase{"CommaAfterTag", "yaml-cpp-hang-tag-comma"},  // "!,"
                      HangCase{"CommaAndBrokenUtf8", "yaml-cpp-hang-utf8-comma"},
                      HangCase{"CommaOnly", "comma-only"},
                      HangCase{"CommaInSecondDocument", "comma-second-doc"}),
    [](const ::testing::TestParamInfo<HangCase>& info) { return info.param.name; });

TEST(Loader, TheTenByteYamlCppHangIsAnInvalidUtf8Error) {
  const LoadResult r = LoadString(std::string("'',\xe3\x35\xb2,\xe3\x35\xb2", 10), "u.yaml");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].line, 1);
  EXPECT_TRUE(absl::StrContains(r.errors[0].message, "UTF-8")) << r.errors[0].ToString();
}

// The limits, each with an error that names it.
struct LimitCase {
  std::string name;
  std::string text;
  int line;
  std::string message;  // a fragment
};

class LoaderLimits : public ::testing::TestWithParam<LimitCase> {};

TEST_P(LoaderLimits, RejectWithAClearError) {
  const LimitCase& c = GetParam();
  const absl::Time start = absl::Now();
  const LoadResult r = LoadString(c.text, "limit.yaml");
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  ASSERT_EQ(r.errors.size(), 1u) << r.errors[0].ToString();
  EXPECT_EQ(r.errors[0].line, c.line) << r.errors[0].ToString();
  EXPECT_TRUE(absl::StrContains(r.errors[0].message, c.message)) << r.errors[0].ToString();
}

std::string Laughs() {
  std::string laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'k'; ++c) {
    laughs += std::string(1, c) + ": &" + c + " [*" + static_cast<char>(c - 1) + ", *" +
              static_cast<char>(c - 1) + ", *" + static_cast<char>(c - 1) + "]\n";
  }
  return laughs;
}

std::string Nested(int levels) {
  std::string block;
  for (int i = 0; i < levels; ++i) block += std::string(i, ' ') + "a:\n";
  return block;
}

INSTANTIATE_TEST_SUITE_P(
    Limits, LoaderLimits,
    ::testing::Values(LimitCase{"Size", std::string((1 << 20) + 1, 'a'), 0, "the limit is 1 MiB"},
                      LimitCase{"NulByte", std::string("a: 1\nb: \0\n", 10), 2, "NUL bytes"},
                      LimitCase{"DeepFlow", std::string(1 << 20, '['), 1, "the limit is 64"},
                      LimitCase{"DeepBlock", Nested(200), 65, "the limit is 64"},
                      LimitCase{"AliasBomb", Laughs(), 9, "billion laughs"},
                      LimitCase{"AliasCycle", "a: &a [1, *a]\n", 1, "cycle"},
                      LimitCase{"UnknownAlias", "a: *nope\n", 1, "names no anchor"},
                      LimitCase{"BrokenUtf8", "a: \xff\n", 1, "UTF-8"}),
    [](const ::testing::TestParamInfo<LimitCase>& info) { return info.param.name; });

TEST(Loader, SixtyFourLevelsAreFine) {
  // Only the parser's limit is under test: the document is then rejected as a manifest.
  const LoadResult r = LoadString(Nested(64), "deep.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(absl::StrContains(r.errors[0].message, "limit")) << r.errors[0].ToString();
}

TEST(Loader, AliasesWithinTheLimitAreFollowed) {
  std::string text = kGood;
  text.replace(text.find("hosts: [web-1]"), 14, "hosts: &h [web-1]\n  x-hosts: *h");
  const LoadResult r = LoadString(text, "alias.yaml");
  ASSERT_FALSE(r.ok());  // x-hosts is unknown, but the alias itself parsed
  EXPECT_TRUE(absl::StartsWith(r.errors[0].ToString(),
                               "alias.yaml:6: spec.x-hosts: unknown field \"x-hosts\""))
      << r.errors[0].ToString();
  text = kGood;
  text.replace(text.find("hosts: [web-1]"), 14, "hosts: *h");
  text.replace(text.find("metadata: {name: shop}"), 22, "metadata: {name: &h shop}");
  const LoadResult ok = LoadString(text, "alias.yaml");
  ASSERT_FALSE(ok.ok());  // hosts must be a list; the alias read as the scalar it names
  EXPECT_EQ(ok.errors[0].ToString(), "alias.yaml:3: spec.hosts: must be a list of strings");
}

TEST(Loader, DuplicateKeysAreErrors) {
  std::string text = kGood;
  text.replace(text.find("      port: 8080"), 16, "      port: 8080\n      port: 8081");
  const LoadResult r = LoadString(text, "dup.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.errors[0].ToString(),
            "dup.yaml:11: spec.services[0].port: duplicate key \"port\" (also at line 10)");
}

TEST(Loader, SuggestsTheFieldMeant) {
  std::string text = kGood;
  text.replace(text.find("  runtime: process"), 18, "  Runtime: process");
  const LoadResult r = LoadString(text, "typo.yaml");
  std::string all;
  for (const auto& e : r.errors) all += e.ToString() + "\n";
  EXPECT_TRUE(absl::StrContains(all,
                                "typo.yaml:6: spec.Runtime: unknown field \"Runtime\" (did "
                                "you mean \"runtime\"?)"))
      << all;
}

TEST(UpkeepctlValidate, ReturnsPromptlyOnEveryInputTheFuzzerFound) {
  upkeep::testing::TempDir dir;
  for (const char* name : {"yaml-cpp-hang-comma", "yaml-cpp-hang-seq-comma",
                           "yaml-cpp-hang-tag-comma", "yaml-cpp-hang-utf8-comma"}) {
    auto p = upkeep::testing::Subprocess::Start(
        {upkeep::testing::BinPath("upkeepctl"), "validate", "-f",
         upkeep::testing::SourcePath(absl::StrCat("tests/fuzz/corpus/manifest/", name))},
        dir.Join("out.txt"));
    ASSERT_TRUE(p.ok());
    const auto st = (*p)->Wait(absl::Seconds(20));
    ASSERT_TRUE(st.has_value()) << name << ": upkeepctl validate did not return";
    EXPECT_EQ(WEXITSTATUS(*st), 1) << name;
  }
}

TEST(ParseDuration, AcceptsUnitsAndRejectsTheRest) {
  EXPECT_EQ(*ParseDuration("500ms"), absl::Milliseconds(500));
  EXPECT_EQ(*ParseDuration("1m30s"), absl::Seconds(90));
  EXPECT_EQ(*ParseDuration("2h"), absl::Hours(2));
  EXPECT_FALSE(ParseDuration("2").ok());
  EXPECT_FALSE(ParseDuration("-1s").ok());
  EXPECT_FALSE(ParseDuration("abc").ok());
  EXPECT_FALSE(ParseDuration("").ok());
}

// The CLI: exit 0 on the examples, exit 1 with FILE:LINE errors on a broken one.
TEST(UpkeepctlValidate, ExitCodesAndErrors) {
  upkeep::testing::TempDir dir;
  auto run = [&](const std::string& path) {
    auto p = upkeep::testing::Subprocess::Start(
        {upkeep::testing::BinPath("upkeepctl"), "validate", "-f", path}, dir.Join("out.txt"));
    EXPECT_TRUE(p.ok());
    const auto st = (*p)->Wait(absl::Seconds(20));
    EXPECT_TRUE(st.has_value());
    return WEXITSTATUS(*st);
  };
  EXPECT_EQ(run(upkeep::testing::SourcePath("manifests")), 0);
  std::string bad = kGood;
  bad.replace(bad.find("port: 8080"), 10, "port: 99999");
  std::ofstream(dir.Join("bad.yaml")) << bad;
  EXPECT_EQ(run(dir.Join("bad.yaml")), 1);
  std::ifstream out(dir.Join("out.txt"));
  std::string text((std::istreambuf_iterator<char>(out)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(absl::StrContains(text, "bad.yaml:10: spec.services[0].port:")) << text;
}

}  // namespace
}  // namespace upkeep::manifest
