// Diagnose on stacks of realistic size: the demo's (2 services, 2 routes) and a big one
// (20 services, 10 routes, 200 history records), healthy and broken.
// Besides time, `allocs`: calls to operator new per Diagnose, a figure the machine's load does
// not move (before/after figures are taken on a busy, shared machine).
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "core/decision/diagnose.h"
#include "core/manifest/loader.h"
#include "core/proto_time.h"

// Counts allocations: operator new and delete replaced as a pair, over malloc (GCC cannot see
// that they pair, hence the pragma).
std::atomic<int64_t> g_allocs{0};

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace {

namespace v1 = upkeep::v1;

const absl::Time kNow = absl::FromUnixSeconds(1800000000);

struct Input {
  v1::Stack stack;
  v1::StackObservation observed;
  std::vector<v1::ActionRecord> history;
};

Input Make(int services, int routes, int history, bool broken) {
  std::string yaml =
      "apiVersion: upkeep/v1\nkind: Stack\nmetadata: {name: s}\nspec:\n"
      "  hosts: [h]\n  runtime: process\n  services:\n";
  for (int i = 0; i < services; ++i) {
    yaml += absl::StrCat("    - {name: s", i, ", port: ", 9000 + i,
                         ", process: {command: [x]}, probe: {http: {path: /health}}",
                         i > 0 ? absl::StrCat(", dependsOn: [s", i - 1, "]") : "", "}\n");
  }
  yaml += "  proxy:\n    nginx: {config: /etc/nginx/nginx.conf}\n    routes:\n";
  for (int i = 0; i < routes; ++i) {
    yaml += absl::StrCat("      - {path: /r", i, "/, upstream: s", i % services,
                         ", probe: {url: \"http://127.0.0.1/r", i, "/\"}}\n");
  }
  Input in;
  in.stack = upkeep::manifest::LoadString(yaml, "bench.yaml").stacks.at(0);
  v1::StackObservation& o = in.observed;
  o.set_stack("s");
  o.mutable_host()->set_host_id("h");
  o.mutable_host()->set_agent_connected(true);
  *o.mutable_observed_at() = upkeep::ToProto(kNow);
  for (int i = 0; i < services; ++i) {
    auto* s = o.add_services();
    s->set_name(absl::StrCat("s", i));
    s->set_exists(true);
    s->set_running(true);
    s->set_health(v1::HEALTH_STATE_HEALTHY);
    s->mutable_probe()->set_ok(true);
  }
  o.mutable_proxy()->set_master_running(true);
  for (int i = 0; i < routes; ++i) {
    auto* r = o.mutable_proxy()->add_routes();
    r->set_path(absl::StrCat("/r", i, "/"));
    r->mutable_probe()->set_ok(true);
    r->mutable_probe()->set_status_code(200);
  }
  if (broken) {
    o.mutable_services(services / 2)->set_health(v1::HEALTH_STATE_UNHEALTHY);
    o.mutable_services(services / 2)->mutable_probe()->set_ok(false);
  }
  for (int i = 0; i < history; ++i) {
    v1::ActionRecord r;
    r.mutable_action()->set_id(absl::StrCat("a", i));
    r.mutable_action()->set_kind(v1::ACTION_KIND_RESTART_SERVICE);
    r.mutable_action()->set_target(absl::StrCat("s", i % services));
    *r.mutable_requested_at() = upkeep::ToProto(kNow - absl::Hours(2) + absl::Seconds(i));
    r.mutable_result()->set_id(r.action().id());
    r.set_verification(v1::VERIFICATION_FIXED);
    in.history.push_back(r);
  }
  return in;
}

void BM_Diagnose(benchmark::State& state) {
  const Input in = Make(state.range(0), state.range(1), state.range(2), state.range(3) != 0);
  const int64_t allocs_before = g_allocs.load();
  for (auto _ : state) {
    benchmark::DoNotOptimize(upkeep::decision::Diagnose(in.stack, in.observed, in.history, kNow));
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["allocs"] = benchmark::Counter(
      static_cast<double>(g_allocs.load() - allocs_before), benchmark::Counter::kAvgIterations);
}

// The same on an arena that is reused, as a caller that diagnoses often would: an initial
// block of its own, reset after each diagnosis.
void BM_DiagnoseOnArena(benchmark::State& state) {
  const Input in = Make(state.range(0), state.range(1), state.range(2), state.range(3) != 0);
  std::vector<char> block(256 << 10);
  google::protobuf::ArenaOptions options;
  options.initial_block = block.data();
  options.initial_block_size = block.size();
  google::protobuf::Arena arena(options);
  const int64_t allocs_before = g_allocs.load();
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        upkeep::decision::Diagnose(in.stack, in.observed, in.history, kNow, &arena));
    arena.Reset();
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["allocs"] = benchmark::Counter(
      static_cast<double>(g_allocs.load() - allocs_before), benchmark::Counter::kAvgIterations);
}

// Without the path's evidence (DiagnoseOptions::explain = false), on the heap and on a reused
// arena: what a caller pays that reads the verdict, findings and actions, and asks for the
// explanation only when a person does.
void BM_DiagnoseNoExplain(benchmark::State& state) {
  const Input in = Make(state.range(0), state.range(1), state.range(2), state.range(3) != 0);
  upkeep::decision::DiagnoseOptions options;
  options.explain = false;
  const int64_t allocs_before = g_allocs.load();
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        upkeep::decision::Diagnose(in.stack, in.observed, in.history, kNow, options));
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["allocs"] = benchmark::Counter(
      static_cast<double>(g_allocs.load() - allocs_before), benchmark::Counter::kAvgIterations);
}

void BM_DiagnoseNoExplainOnArena(benchmark::State& state) {
  const Input in = Make(state.range(0), state.range(1), state.range(2), state.range(3) != 0);
  upkeep::decision::DiagnoseOptions options;
  options.explain = false;
  std::vector<char> block(256 << 10);
  google::protobuf::ArenaOptions arena_options;
  arena_options.initial_block = block.data();
  arena_options.initial_block_size = block.size();
  google::protobuf::Arena arena(arena_options);
  const int64_t allocs_before = g_allocs.load();
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        upkeep::decision::Diagnose(in.stack, in.observed, in.history, kNow, &arena, options));
    arena.Reset();
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["allocs"] = benchmark::Counter(
      static_cast<double>(g_allocs.load() - allocs_before), benchmark::Counter::kAvgIterations);
}

// All a caller can do: no path evidence, a reused arena, and the history indexed once (as a
// caller would per change of the history, not per diagnosis).
void BM_DiagnoseNoExplainOnArenaIndexed(benchmark::State& state) {
  const Input in = Make(state.range(0), state.range(1), state.range(2), state.range(3) != 0);
  const upkeep::policy::History history(in.history);
  upkeep::decision::DiagnoseOptions options;
  options.explain = false;
  std::vector<char> block(256 << 10);
  google::protobuf::ArenaOptions arena_options;
  arena_options.initial_block = block.data();
  arena_options.initial_block_size = block.size();
  google::protobuf::Arena arena(arena_options);
  const int64_t allocs_before = g_allocs.load();
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        upkeep::decision::Diagnose(in.stack, in.observed, history, kNow, &arena, options));
    arena.Reset();
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["allocs"] = benchmark::Counter(
      static_cast<double>(g_allocs.load() - allocs_before), benchmark::Counter::kAvgIterations);
}

// The floor under Diagnose: copying the diagnosis it returns (the same path, evidence,
// findings and actions, built without deciding anything).
void BM_CopyDiagnosis(benchmark::State& state) {
  const Input in = Make(state.range(0), state.range(1), state.range(2), state.range(3) != 0);
  const v1::Diagnosis d = upkeep::decision::Diagnose(in.stack, in.observed, in.history, kNow);
  const int64_t allocs_before = g_allocs.load();
  for (auto _ : state) {
    v1::Diagnosis copy = d;
    benchmark::DoNotOptimize(copy);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["allocs"] = benchmark::Counter(
      static_cast<double>(g_allocs.load() - allocs_before), benchmark::Counter::kAvgIterations);
}

// The demo stack (2 services, 2 routes) healthy without history, and broken with some; a
// 20-service stack with 200 history records, healthy and broken.
void Cases(benchmark::internal::Benchmark* b) {
  b->ArgNames({"services", "routes", "history", "broken"})
      ->Args({2, 2, 0, 0})
      ->Args({2, 2, 20, 1})
      ->Args({20, 10, 200, 0})
      ->Args({20, 10, 200, 1});
}
BENCHMARK(BM_Diagnose)->Apply(Cases);
BENCHMARK(BM_DiagnoseOnArena)->Apply(Cases);
BENCHMARK(BM_DiagnoseNoExplain)->Apply(Cases);
BENCHMARK(BM_DiagnoseNoExplainOnArena)->Apply(Cases);
BENCHMARK(BM_DiagnoseNoExplainOnArenaIndexed)->Apply(Cases);
BENCHMARK(BM_CopyDiagnosis)->Apply(Cases);

}  // namespace

BENCHMARK_MAIN();
