// The Reconciler with no threads of its own (`workers = 0`): the test runs its work by hand,
// one key at a time (Reconciler::RunOnce), so the order in which keys are handed out is seen
// and asserted, not raced. Real SQLite; a recording hub stands in for the agents' streams;
// time is a SimulatedClock.
#include "controller/reconcile/reconciler.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/manifest/loader.h"
#include "core/proto_time.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "tests/support/controller/doubles.h"
#include "tests/support/temp_dir.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;

// One stack per host, named after it: "stack-NAME" on host "NAME" (as bench/controller/load.sh).
std::vector<v1::Stack> Stacks(const std::vector<std::string>& hosts) {
  std::string yaml;
  for (const auto& h : hosts) {
    absl::StrAppend(&yaml, "---\napiVersion: upkeep/v1\nkind: Stack\nmetadata: {name: stack-", h,
                    "}\nspec:\n  hosts: [", h,
                    "]\n  runtime: process\n  services:\n"
                    "    - {name: backend, process: {command: [backend]}, port: 8002}\n");
  }
  manifest::LoadResult r = manifest::LoadString(yaml, "test.yaml");
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.errors[0].ToString());
  return r.stacks;
}

v1::Hello Hello(const std::string& host) {
  v1::Hello h;
  h.set_host_id(host);
  h.set_version("test");
  return h;
}

v1::ObservationReport Report(const std::string& host, bool backend_running, absl::Time at) {
  v1::ObservationReport r;
  v1::StackObservation* o = r.add_stacks();
  o->set_stack("stack-" + host);
  o->mutable_host()->set_host_id(host);
  o->mutable_host()->set_agent_connected(true);
  *o->mutable_observed_at() = ToProto(at);
  v1::ServiceObservation* s = o->add_services();
  s->set_name("backend");
  s->set_exists(true);
  s->set_running(backend_running);
  if (backend_running) {
    s->set_health(v1::HEALTH_STATE_HEALTHY);
    s->mutable_probe()->set_ok(true);
  }
  return r;
}

WorkKey Inbox(const std::string& host) { return WorkKey{"", host}; }
WorkKey StackKey(const std::string& host) { return WorkKey{"stack-" + host, host}; }

std::string Name(const std::optional<WorkKey>& k) {
  if (!k.has_value()) return "(nothing ready)";
  return k->is_host() ? absl::StrCat("inbox of ", k->host)
                      : absl::StrCat(k->stack, " on ", k->host);
}

class ReconcilerByHandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = OpenSqliteStore(dir_.path());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    ReconcilerOptions options;
    options.workers = 0;
    auto r = Reconciler::Create(store_.get(), &clock_, &metrics_, options);
    ASSERT_TRUE(r.ok()) << r.status();
    r_ = std::move(*r);
    r_->SetHub(&hub_);
  }

  // Runs every ready key; returns them in the order they were run.
  std::vector<std::string> RunAll() {
    std::vector<std::string> ran;
    while (auto k = r_->RunOnce()) ran.push_back(Name(k));
    return ran;
  }

  // The counter's value in the metrics text (0 when absent).
  double Counter(const std::string& name) {
    const std::string text = metrics_.Render();
    const std::string line = "\n" + name + " ";
    const size_t at = text.find(line);
    return at == std::string::npos ? 0 : std::stod(text.substr(at + line.size()));
  }

  testing::TempDir dir_;
  SimulatedClock clock_;
  Metrics metrics_;
  testing::RecordingHub hub_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Reconciler> r_;
};

// Reconciler::Connected queues the host's stacks low: a hello brings no evidence, and a fleet
// reconnecting at once must not make the first (broken) observations wait behind a reconcile
// per hello (bench/results/load.md, "the reconnect storm").
TEST_F(ReconcilerByHandTest, AHellosReconcileGoesBehindAnObservationThatArrivedAfterIt) {
  ASSERT_TRUE(r_->Apply(Stacks({"a", "b"}), false).ok());
  r_->OnConnected("b", Hello("b"));
  RunAll();

  r_->OnConnected("a", Hello("a"));
  r_->OnObservation("b", Report("b", /*backend_running=*/false, clock_.Now()));
  // The inboxes in the order their messages came; then the observation's reconcile goes before
  // the hello's, although the hello's was queued first.
  EXPECT_EQ(Name(r_->RunOnce()), Name(Inbox("a")));
  EXPECT_EQ(Name(r_->RunOnce()), Name(Inbox("b")));
  EXPECT_EQ(Name(r_->RunOnce()), Name(StackKey("b")));
  EXPECT_EQ(Name(r_->RunOnce()), Name(StackKey("a")));
  EXPECT_EQ(Name(r_->RunOnce()), Name(std::nullopt));
  // And the observation was acted on: the backend of b is started.
  ASSERT_EQ(hub_.actions().size(), 1u);
  EXPECT_EQ(hub_.actions()[0].kind(), v1::ACTION_KIND_START_SERVICE);
  EXPECT_EQ(hub_.actions()[0].stack(), "stack-b");
}

// Statuses changed by many reconciles are written together: one store transaction for a fleet
// that reconnects at once (not one per stack, which kept both workers busy for ~1.4 s at
// 10,000 stacks). The writer's thread is not started here: FlushStatus writes on the test's.
TEST_F(ReconcilerByHandTest, StatusesChangedByManyReconcilesAreWrittenInOneBatch) {
  const std::vector<std::string> hosts = {"a", "b", "c", "d"};
  ASSERT_TRUE(r_->Apply(Stacks(hosts), false).ok());
  RunAll();  // each stack's first reconcile: Ready Unknown (no agent yet)
  ASSERT_TRUE(r_->FlushStatus().ok());
  const double writes = Counter("upkeep_status_writes_total");
  const double saved = Counter("upkeep_status_saved_total");
  EXPECT_EQ(writes, 1);
  EXPECT_EQ(saved, 4);

  for (const auto& h : hosts) {
    r_->OnConnected(h, Hello(h));
    r_->OnObservation(h, Report(h, true, clock_.Now()));
  }
  RunAll();
  ASSERT_TRUE(r_->FlushStatus().ok());
  EXPECT_EQ(Counter("upkeep_status_writes_total"), writes + 1);
  EXPECT_EQ(Counter("upkeep_status_saved_total"), saved + 4);
  auto stored = store_->ListStacks();
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 4u);
  for (const auto& s : *stored) {
    SCOPED_TRACE(s.metadata().name());
    ASSERT_EQ(s.status().conditions_size(), 3);
    EXPECT_EQ(s.status().conditions(0).type(), "Ready");
    EXPECT_EQ(s.status().conditions(0).status(), "True");
    // The stored status carries the diagnosis it was judged from.
    ASSERT_EQ(s.status().diagnoses_size(), 1);
    EXPECT_EQ(s.status().diagnoses(0).verdict(), v1::VERDICT_HEALTHY);
  }
  // Nothing changed since: nothing more to write.
  RunAll();
  ASSERT_TRUE(r_->FlushStatus().ok());
  EXPECT_EQ(Counter("upkeep_status_writes_total"), writes + 1);
}

// The diagnosis is kept once (with its key); what readers get still carries it in status.
TEST_F(ReconcilerByHandTest, ReadersSeeEachHostsLatestDiagnosisInStatus) {
  ASSERT_TRUE(r_->Apply(Stacks({"a"}), false).ok());
  r_->OnConnected("a", Hello("a"));
  r_->OnObservation("a", Report("a", false, clock_.Now()));
  RunAll();
  auto s = r_->GetStack("stack-a");
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s->status().diagnoses_size(), 1);
  EXPECT_EQ(s->status().diagnoses(0).verdict(), v1::VERDICT_REPAIRING);
  EXPECT_GT(s->status().diagnoses(0).path_size(), 0);  // what `upkeepctl explain` prints
  auto all = r_->Stacks();
  ASSERT_EQ(all.size(), 1u);
  ASSERT_EQ(all[0].status().diagnoses_size(), 1);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(all[0].status().diagnoses(0),
                                                                 s->status().diagnoses(0)));
}

// What the workers left dirty is written when the reconciler stops (a controller stopped
// right after a change keeps it).
TEST_F(ReconcilerByHandTest, StopWritesTheStatusesStillWaiting) {
  ASSERT_TRUE(r_->Apply(Stacks({"a", "b"}), false).ok());
  RunAll();
  r_.reset();
  auto stored = store_->ListStacks();
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 2u);
  for (const auto& s : *stored) {
    SCOPED_TRACE(s.metadata().name());
    ASSERT_GT(s.status().conditions_size(), 0);
    EXPECT_EQ(s.status().conditions(0).status(), "Unknown");
  }
}

}  // namespace
}  // namespace upkeep::controller
