// NotifyService against a real local HTTP receiver (cpp-httplib) that also fails on purpose:
// what a message carries, retries with backoff, the rate limit, persistence without secrets,
// and that a receiver that hangs never holds up the event bus.
#include "controller/notify/notify_service.h"

#include <httplib.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "controller/notify/message.h"
#include "core/manifest/loader.h"
#include "core/proto_time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::notify {
namespace {

namespace v1 = upkeep::v1;
using nlohmann::json;
using upkeep::testing::WaitFor;

// An HTTP receiver on 127.0.0.1: answers each POST with the next scripted status (then 200).
class Receiver {
 public:
  Receiver() {
    server_.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      if (hang_.load()) release_.WaitForNotification();
      int status = 200;
      {
        std::lock_guard<std::mutex> l(mu_);
        bodies_.push_back(req.body);
        auth_.push_back(req.get_header_value("Authorization"));
        if (!script_.empty()) {
          status = script_.front();
          script_.erase(script_.begin());
        }
      }
      res.status = status;
      res.set_content(status == 200 ? "ok from receiver" : "failing on purpose", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::yield();  // listening once bound
  }
  ~Receiver() {
    if (hang_.load() && !release_.HasBeenNotified()) release_.Notify();
    server_.stop();
    thread_.join();
  }
  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_, "/hook"); }
  void Script(std::vector<int> statuses) {
    std::lock_guard<std::mutex> l(mu_);
    script_ = std::move(statuses);
  }
  size_t Count() {
    std::lock_guard<std::mutex> l(mu_);
    return bodies_.size();
  }
  std::string Body(size_t i) {
    std::lock_guard<std::mutex> l(mu_);
    return bodies_.at(i);
  }
  std::string Auth(size_t i) {
    std::lock_guard<std::mutex> l(mu_);
    return auth_.at(i);
  }
  void Hang() { hang_ = true; }
  void Release() { release_.Notify(); }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::vector<std::string> bodies_;
  std::vector<std::string> auth_;
  std::vector<int> script_;
  std::atomic<bool> hang_{false};
  absl::Notification release_;
};

v1::Notifier Load(const std::string& yaml) {
  auto r = manifest::LoadString(yaml, "notifier.yaml");
  EXPECT_TRUE(r.ok()) << (r.errors.empty() ? "" : r.errors[0].ToString());
  EXPECT_EQ(r.notifiers.size(), 1u);
  return r.notifiers.empty() ? v1::Notifier() : r.notifiers[0];
}

std::string Manifest(const std::string& name, const std::string& extra) {
  return absl::StrCat("apiVersion: upkeep/v1\nkind: Notifier\nmetadata: {name: ", name,
                      "}\nspec:\n  type: webhook\n  url: {env: UPKEEP_TEST_HOOK_URL}\n"
                      "  retry: {maxAttempts: 4, initialBackoff: 10ms, maxBackoff: 50ms}\n",
                      extra);
}

// The stack as the reconciler would hand it over: the wrong-port alert and its path.
v1::Stack DemoStack() {
  v1::Stack s;
  s.mutable_metadata()->set_name("demo");
  (*s.mutable_metadata()->mutable_labels())["team"] = "web";
  v1::Diagnosis* d = s.mutable_status()->add_diagnoses();
  d->set_stack("demo");
  d->set_host("web-1");
  d->set_verdict(v1::VERDICT_DEGRADED);
  d->set_summary("route /api fails with every upstream healthy");
  v1::PathNode* n = d->add_path();
  n->set_step("route.through_proxy");
  n->set_target("/api");
  n->set_decision("failing: 502");
  (*n->mutable_evidence())["error_log"] =
      "connect() failed (111: Connection refused) while connecting to upstream 127.0.0.1:9999";
  v1::Finding* f = d->add_findings();
  f->set_severity(v1::SEVERITY_ALERT);
  f->set_code("PortMismatch");
  f->set_target("api");
  f->set_message("nginx sends /api to port 9999; api listens on 8081");
  (*f->mutable_evidence())["expected_port"] = "9999";
  (*f->mutable_evidence())["listening"] = "127.0.0.1:8081";
  return s;
}

v1::Event AlertEvent(const std::string& reason = "Alert") {
  v1::Event e;
  e.set_seq(7);
  e.set_type("Warning");
  e.set_reason(reason);
  e.set_stack("demo");
  e.set_host("web-1");
  e.set_target("api");
  e.set_message("PortMismatch: nginx sends /api to port 9999; api listens on 8081");
  *e.mutable_at() = ToProto(absl::Now());
  return e;
}

class NotifyServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { ::setenv("UPKEEP_TEST_HOOK_URL", receiver_.url().c_str(), 1); }
  std::unique_ptr<NotifyService> Open() {
    if (store_ == nullptr) {
      auto st = controller::OpenSqliteStore(dir_.path());
      EXPECT_TRUE(st.ok()) << st.status();
      store_ = std::move(*st);
    }
    auto s = NotifyService::Open(
        store_.get(),
        [](const std::string& name) -> std::optional<v1::Stack> {
          if (name == "demo") return DemoStack();
          return std::nullopt;
        },
        &metrics_);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }
  v1::NotifierStatus StatusOf(NotifyService* s, const std::string& name) {
    for (const auto& n : s->List()) {
      if (n.metadata().name() == name) return n.status();
    }
    return v1::NotifierStatus();
  }
  testing::TempDir dir_;
  std::unique_ptr<controller::Store> store_;
  controller::Metrics metrics_;
  Receiver receiver_;
};

TEST_F(NotifyServiceTest, AlertCarriesStackHostCodeAndDecisionPathWithEvidence) {
  auto s = Open();
  ASSERT_TRUE(s->Apply({Load(Manifest("ops", ""))}, false).ok());
  s->OnEvent(AlertEvent());
  ASSERT_TRUE(WaitFor([&] { return receiver_.Count() == 1; }));
  const json j = json::parse(receiver_.Body(0));
  EXPECT_EQ(j["event"], "alerts");
  EXPECT_EQ(j["severity"], "alert");
  EXPECT_EQ(j["stack"], "demo");
  EXPECT_EQ(j["host"], "web-1");
  EXPECT_EQ(j["code"], "PortMismatch");
  EXPECT_EQ(j["verdict"], "VERDICT_DEGRADED");
  ASSERT_EQ(j["findings"].size(), 1u);
  EXPECT_EQ(j["findings"][0]["evidence"]["expected_port"], "9999");
  EXPECT_EQ(j["findings"][0]["evidence"]["listening"], "127.0.0.1:8081");
  ASSERT_EQ(j["path"].size(), 1u);
  EXPECT_EQ(j["path"][0]["step"], "route.through_proxy");
  EXPECT_NE(j["path"][0]["evidence"]["error_log"].get<std::string>().find("Connection refused"),
            std::string::npos);
  EXPECT_TRUE(WaitFor([&] { return StatusOf(s.get(), "ops").sent() == 1; }));
  EXPECT_NE(
      metrics_.Render().find("upkeep_notifications_total{notifier=\"ops\",outcome=\"sent\"} 1"),
      std::string::npos)
      << metrics_.Render();
}

TEST_F(NotifyServiceTest, ResolvedFollowUpAndSlackFormat) {
  auto s = Open();
  std::string slack = Manifest("chat", "");
  slack.replace(slack.find("type: webhook"), 13, "type: slack");
  ASSERT_TRUE(s->Apply({Load(slack)}, false).ok());
  v1::Event resolved = AlertEvent("Resolved");
  resolved.set_type("Normal");
  resolved.set_message("PortMismatch: cleared (VERDICT_HEALTHY)");
  s->OnEvent(AlertEvent());
  s->OnEvent(resolved);
  ASSERT_TRUE(WaitFor([&] { return receiver_.Count() == 2; }));
  const json first = json::parse(receiver_.Body(0));
  ASSERT_TRUE(first.contains("blocks"));
  EXPECT_NE(first["text"].get<std::string>().find("[upkeep alerts] demo@web-1"), std::string::npos);
  EXPECT_NE(first.dump().find("route.through_proxy"), std::string::npos);
  const json second = json::parse(receiver_.Body(1));
  EXPECT_NE(second["text"].get<std::string>().find("[upkeep resolved]"), std::string::npos);
}

TEST_F(NotifyServiceTest, RetriesWithBackoffUntilTheReceiverAnswers) {
  receiver_.Script({503, 500});
  auto s = Open();
  ASSERT_TRUE(s->Apply({Load(Manifest("ops", ""))}, false).ok());
  s->OnEvent(AlertEvent());
  ASSERT_TRUE(WaitFor([&] { return StatusOf(s.get(), "ops").sent() == 1; }));
  EXPECT_EQ(receiver_.Count(), 3u);
  EXPECT_EQ(StatusOf(s.get(), "ops").failed(), 0);
  EXPECT_NE(metrics_.Render().find("outcome=\"retried\"} 2"), std::string::npos);
}

TEST_F(NotifyServiceTest, GivesUpAfterMaxAttemptsAndOnAnAnswerThatWillNotChange) {
  receiver_.Script({503, 503, 503, 503, 400});
  auto s = Open();
  ASSERT_TRUE(s->Apply({Load(Manifest("ops", ""))}, false).ok());
  s->OnEvent(AlertEvent());  // 4 attempts, all 503
  ASSERT_TRUE(WaitFor([&] { return StatusOf(s.get(), "ops").failed() == 1; }));
  EXPECT_EQ(receiver_.Count(), 4u);
  s->OnEvent(AlertEvent("CrashLooping"));  // 400: no retry
  ASSERT_TRUE(WaitFor([&] { return StatusOf(s.get(), "ops").failed() == 2; }));
  EXPECT_EQ(receiver_.Count(), 5u);
  EXPECT_EQ(StatusOf(s.get(), "ops").last_http_status(), 400);
}

TEST_F(NotifyServiceTest, RateLimitDropsWhatIsOverThePerMinuteBudget) {
  auto s = Open();
  ASSERT_TRUE(s->Apply({Load(Manifest("ops", "  rateLimit: {perMinute: 2}\n"))}, false).ok());
  for (int i = 0; i < 5; ++i) s->OnEvent(AlertEvent());
  ASSERT_TRUE(WaitFor([&] {
    const auto st = StatusOf(s.get(), "ops");
    return st.sent() + st.dropped() == 5;
  }));
  EXPECT_EQ(StatusOf(s.get(), "ops").sent(), 2);
  EXPECT_EQ(StatusOf(s.get(), "ops").dropped(), 3);
  EXPECT_EQ(receiver_.Count(), 2u);
}

TEST_F(NotifyServiceTest, FiltersByEventClassStackNameAndLabels) {
  auto s = Open();
  ASSERT_TRUE(s->Apply({Load(Manifest("healed-only", "  events: [healed]\n")),
                        Load(Manifest("other", "  stacks: [shop]\n")),
                        Load(Manifest("labels", "  matchLabels: {team: db}\n"))},
                       false)
                  .ok());
  s->OnEvent(AlertEvent());
  v1::Event healed = AlertEvent("Healed");
  healed.set_message("healthy again 120 ms after the problem was detected");
  s->OnEvent(healed);
  ASSERT_TRUE(WaitFor([&] { return StatusOf(s.get(), "healed-only").sent() == 1; }));
  EXPECT_EQ(receiver_.Count(), 1u);
  EXPECT_EQ(json::parse(receiver_.Body(0))["event"], "healed");
  EXPECT_EQ(StatusOf(s.get(), "other").sent(), 0);
  EXPECT_EQ(StatusOf(s.get(), "labels").sent(), 0);
}

TEST_F(NotifyServiceTest, AHangingReceiverNeverHoldsUpTheBus) {
  receiver_.Hang();
  auto s = Open();
  ASSERT_TRUE(s->Apply({Load(Manifest("ops", "  timeout: 30s\n"))}, false).ok());
  s->OnEvent(AlertEvent());
  ASSERT_TRUE(
      WaitFor([&] { return receiver_.Count() == 0 && StatusOf(s.get(), "ops").pending() == 0; }));
  // The first delivery is stuck in the receiver; these calls still return at once.
  for (int i = 0; i < 100; ++i) s->OnEvent(AlertEvent());
  EXPECT_EQ(StatusOf(s.get(), "ops").pending(), 100);
  receiver_.Release();
  EXPECT_TRUE(WaitFor([&] { return receiver_.Count() >= 2; }));
  s->Stop();  // joins the channel thread with deliveries still queued
}

TEST_F(NotifyServiceTest, TestMessageReturnsTheReceiversAnswerAndTokenIsSent) {
  const std::string token_file = dir_.Join("token");
  {
    std::FILE* f = std::fopen(token_file.c_str(), "w");
    std::fputs("s3cret-token\n", f);
    std::fclose(f);
  }
  auto s = Open();
  ASSERT_TRUE(
      s->Apply({Load(Manifest("ops", absl::StrCat("  token: {file: ", token_file, "}\n")))}, false)
          .ok());
  auto r = s->Test("ops");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->delivered());
  EXPECT_EQ(r->http_status(), 200);
  EXPECT_EQ(r->body(), "ok from receiver");
  EXPECT_EQ(r->url_host(), receiver_.url().substr(7, receiver_.url().find("/hook") - 7));
  EXPECT_EQ(receiver_.Auth(0), "Bearer s3cret-token");
  EXPECT_EQ(json::parse(receiver_.Body(0))["event"], "test");
  receiver_.Script({500});
  r = s->Test("ops");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->delivered());
  EXPECT_EQ(r->http_status(), 500);
  EXPECT_EQ(r->body(), "failing on purpose");
  EXPECT_EQ(s->Test("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(NotifyServiceTest, MissingSecretIsAClearErrorNotADelivery) {
  auto s = Open();
  std::string m = Manifest("ops", "");
  m.replace(m.find("UPKEEP_TEST_HOOK_URL"), 20, "UPKEEP_TEST_UNSET_VAR");
  ASSERT_TRUE(s->Apply({Load(m)}, false).ok());
  auto r = s->Test("ops");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->delivered());
  EXPECT_NE(r->error().find("UPKEEP_TEST_UNSET_VAR is not set"), std::string::npos) << r->error();
}

TEST_F(NotifyServiceTest, NotifiersSurviveARestartAndNeverHoldTheSecret) {
  {
    auto s = Open();
    auto applied = s->Apply({Load(Manifest("ops", ""))}, false);
    ASSERT_TRUE(applied.ok());
    EXPECT_EQ((*applied)[0].change(), "created");
    EXPECT_EQ((*s->Apply({Load(Manifest("ops", ""))}, false))[0].change(), "unchanged");
    EXPECT_EQ((*s->Apply({Load(Manifest("ops", "  events: [alerts]\n"))}, true))[0].change(),
              "configured");
    EXPECT_EQ(s->List()[0].spec().events_size(), 5) << "a dry run changes nothing";
  }
  store_.reset();  // the controller restarts: a fresh store on the same database
  auto s = Open();
  const auto list = s->List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].spec().url().env(), "UPKEEP_TEST_HOOK_URL");
  EXPECT_EQ(list[0].DebugString().find("127.0.0.1"), std::string::npos);
  s->OnEvent(AlertEvent());
  EXPECT_TRUE(WaitFor([&] { return receiver_.Count() == 1; }));
  ASSERT_TRUE(s->Delete("ops").ok());
  EXPECT_TRUE(s->List().empty());
}

TEST_F(NotifyServiceTest, DeliveryCountersCarryOnAfterARestart) {
  {
    auto s = Open();
    ASSERT_TRUE(s->Apply({Load(Manifest("ops", ""))}, false).ok());
    s->OnEvent(AlertEvent());
    ASSERT_TRUE(WaitFor([&] { return StatusOf(s.get(), "ops").sent() == 1; }));
  }
  store_.reset();
  auto s = Open();
  EXPECT_EQ(StatusOf(s.get(), "ops").sent(), 1) << "the counters come back from the store";
  EXPECT_TRUE(StatusOf(s.get(), "ops").has_last_success());
  s->OnEvent(AlertEvent());
  EXPECT_TRUE(WaitFor([&] { return StatusOf(s.get(), "ops").sent() == 2; }));
  auto stored = store_->ListNotifiers();
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 1u);
  EXPECT_TRUE(WaitFor([&] { return (*store_->ListNotifiers())[0].status().sent() == 2; }));
}

TEST_F(NotifyServiceTest, OldNotifiersFileIsImportedOnce) {
  v1::ListNotifiersResponse old;
  *old.add_notifiers() = Load(Manifest("ops", ""));
  {
    std::ofstream out(dir_.Join("notifiers.pb"), std::ios::binary);
    ASSERT_TRUE(old.SerializeToOstream(&out));
  }
  auto st = controller::OpenSqliteStore(dir_.path());
  ASSERT_TRUE(st.ok());
  store_ = std::move(*st);
  auto s = NotifyService::Open(
      store_.get(), [](const std::string&) { return std::nullopt; }, nullptr, dir_.path());
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ((*s)->List().size(), 1u);
  EXPECT_EQ((*s)->List()[0].metadata().name(), "ops");
  EXPECT_EQ(store_->ListNotifiers()->size(), 1u);
  EXPECT_FALSE(std::ifstream(dir_.Join("notifiers.pb")).good());
  EXPECT_TRUE(std::ifstream(dir_.Join("notifiers.pb.imported")).good());
}

TEST(NotifierManifest, ErrorsNameFileLineAndField) {
  struct Case {
    std::string spec;
    std::string field;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"  type: webhook\n  url: http://example/hook\n", "spec.url", "{env: VAR} or {file: PATH}"},
      {"  type: pager\n  url: {env: X}\n", "spec.type", "must be webhook or slack"},
      {"  type: slack\n", "spec.url", "required"},
      {"  type: slack\n  url: {env: X, file: /y}\n", "spec.url", "not both"},
      {"  type: slack\n  url: {env: X}\n  events: [alert]\n", "spec.events[0]",
       "unknown event \"alert\""},
      {"  type: slack\n  url: {env: X}\n  rateLimit: {perMinute: 0}\n", "spec.rateLimit.perMinute",
       "between 1 and"},
  };
  for (const auto& c : cases) {
    const auto r = manifest::LoadString(
        absl::StrCat("apiVersion: upkeep/v1\nkind: Notifier\nmetadata: {name: n}\nspec:\n", c.spec),
        "n.yaml");
    ASSERT_FALSE(r.ok()) << c.spec;
    EXPECT_EQ(r.errors[0].field, c.field) << c.spec;
    EXPECT_GT(r.errors[0].line, 0) << c.spec;
    EXPECT_NE(r.errors[0].message.find(c.message), std::string::npos) << r.errors[0].ToString();
  }
}

}  // namespace
}  // namespace upkeep::notify
