// status_write_bench: what a reconnect storm's status writes cost the store (issue #15, "cold
// start"): N stacks' statuses (conditions and a diagnosis, as the reconciler writes them) saved
// one SaveStatus each (one SQLite transaction each: what the workers did) against
// SaveStatuses in batches (what the StatusWriter does), on a real SQLite store in a temp dir.
//   status_write_bench [--benchmark_min_time=...]
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "controller/store/store.h"

namespace {

namespace v1 = upkeep::v1;
using upkeep::controller::Store;

constexpr int kStacks = 10000;

v1::StackStatus Status(int i) {
  v1::StackStatus s;
  s.set_observed_generation(1);
  for (const char* type : {"Ready", "Degraded", "Progressing"}) {
    v1::Condition* c = s.add_conditions();
    c->set_type(type);
    c->set_status("Unknown");
    c->set_reason("NoObservation");
    c->set_message(absl::StrCat("no observation yet for host load-", i));
  }
  v1::Diagnosis* d = s.add_diagnoses();
  d->set_stack(absl::StrCat("load-", i));
  d->set_host(absl::StrCat("load-", i));
  d->set_verdict(v1::VERDICT_UNKNOWN);
  d->set_summary("agent not connected");
  return s;
}

struct Fixture {
  Fixture() {
    dir = std::filesystem::temp_directory_path() /
          absl::StrCat("status-write-bench-", ::getpid(), "-", counter++);
    std::filesystem::create_directories(dir);
    store = std::move(*upkeep::controller::OpenSqliteStore(dir.string()));
    std::vector<v1::Stack> stacks;
    for (int i = 0; i < kStacks; ++i) {
      v1::Stack s;
      s.mutable_metadata()->set_name(absl::StrCat("load-", i));
      s.mutable_spec()->add_hosts(absl::StrCat("load-", i));
      stacks.push_back(std::move(s));
      statuses.emplace_back(absl::StrCat("load-", i), Status(i));
    }
    (void)store->ApplyStacks(stacks);
  }
  ~Fixture() {
    store.reset();
    std::filesystem::remove_all(dir);
  }
  static inline int counter = 0;
  std::filesystem::path dir;
  std::unique_ptr<Store> store;
  std::vector<std::pair<std::string, v1::StackStatus>> statuses;
};

// 10,000 statuses, one transaction each.
void BM_SaveStatusEach(benchmark::State& state) {
  Fixture f;
  for (auto _ : state) {
    for (const auto& [name, status] : f.statuses) {
      if (!f.store->SaveStatus(name, status).ok()) state.SkipWithError("save failed");
    }
  }
  state.SetItemsProcessed(state.iterations() * kStacks);
}
BENCHMARK(BM_SaveStatusEach)->Unit(benchmark::kMillisecond);

// 10,000 statuses in batches of range(0) (the StatusWriter's kMaxBatch is 200).
void BM_SaveStatusesBatched(benchmark::State& state) {
  Fixture f;
  const size_t batch = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    for (size_t i = 0; i < f.statuses.size(); i += batch) {
      std::vector<std::pair<std::string, v1::StackStatus>> part(
          f.statuses.begin() + i, f.statuses.begin() + std::min(f.statuses.size(), i + batch));
      if (!f.store->SaveStatuses(part).ok()) state.SkipWithError("save failed");
    }
  }
  state.SetItemsProcessed(state.iterations() * kStacks);
}
BENCHMARK(BM_SaveStatusesBatched)
    ->Arg(50)
    ->Arg(100)
    ->Arg(200)
    ->Arg(500)
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
