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
#include "bench/core/bench_stacks.h"
#include "benchmark/benchmark.h"
#include "core/decision/diagnose.h"

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

using upkeep::bench::Input;
using upkeep::bench::kNow;
using upkeep::bench::Make;

// A case's input and the reusable state a caller that diagnoses often keeps: an arena with an
// initial block of its own (reset after each diagnosis), the history indexed once (as a caller
// would per change of the history, not per diagnosis) and a Trace.
struct Caller {
  explicit Caller(const benchmark::State& state)
      : in(Make(state.range(0), state.range(1), state.range(2), state.range(3) != 0)),
        indexed(in.history),
        block(256 << 10),
        arena([this] {
          google::protobuf::ArenaOptions options;
          options.initial_block = block.data();
          options.initial_block_size = block.size();
          return options;
        }()) {}
  const Input in;
  const upkeep::policy::History indexed;
  std::vector<char> block;
  google::protobuf::Arena arena;
  upkeep::decision::Trace trace;
};

// Runs `diagnose(caller)` once per iteration; `allocs`: operator new calls per iteration.
template <typename F>
void Run(benchmark::State& state, F diagnose) {
  Caller c(state);
  const int64_t allocs_before = g_allocs.load();
  for (auto _ : state) diagnose(c);
  state.SetItemsProcessed(state.iterations());
  state.counters["allocs"] = benchmark::Counter(
      static_cast<double>(g_allocs.load() - allocs_before), benchmark::Counter::kAvgIterations);
}

upkeep::decision::DiagnoseOptions NoExplain() {
  upkeep::decision::DiagnoseOptions options;
  options.explain = false;
  return options;
}

// The default call: on the heap, with the explanation, the history indexed per call.
void BM_Diagnose(benchmark::State& state) {
  Run(state, [](Caller& c) {
    benchmark::DoNotOptimize(
        upkeep::decision::Diagnose(c.in.stack, c.in.observed, c.in.history, kNow));
  });
}

// On a reused arena.
void BM_DiagnoseOnArena(benchmark::State& state) {
  Run(state, [](Caller& c) {
    benchmark::DoNotOptimize(
        upkeep::decision::Diagnose(c.in.stack, c.in.observed, c.in.history, kNow, &c.arena));
    c.arena.Reset();
  });
}

// Without the path's evidence (DiagnoseOptions::explain = false), on the heap and on a reused
// arena: what a caller pays that reads the verdict, findings and actions, and asks for the
// explanation only when a person does.
void BM_DiagnoseNoExplain(benchmark::State& state) {
  Run(state, [options = NoExplain()](Caller& c) {
    benchmark::DoNotOptimize(
        upkeep::decision::Diagnose(c.in.stack, c.in.observed, c.in.history, kNow, options));
  });
}

void BM_DiagnoseNoExplainOnArena(benchmark::State& state) {
  Run(state, [options = NoExplain()](Caller& c) {
    benchmark::DoNotOptimize(upkeep::decision::Diagnose(c.in.stack, c.in.observed, c.in.history,
                                                        kNow, &c.arena, options));
    c.arena.Reset();
  });
}

// Also with the history indexed once.
void BM_DiagnoseNoExplainOnArenaIndexed(benchmark::State& state) {
  Run(state, [options = NoExplain()](Caller& c) {
    benchmark::DoNotOptimize(
        upkeep::decision::Diagnose(c.in.stack, c.in.observed, c.indexed, kNow, &c.arena, options));
    c.arena.Reset();
  });
}

// Also the path left in a reused Trace (no message built for it; Trace::AppendTo builds it
// when somebody asks).
void BM_DiagnoseTraced(benchmark::State& state) {
  Run(state, [options = NoExplain()](Caller& c) {
    benchmark::DoNotOptimize(upkeep::decision::Diagnose(c.in.stack, c.in.observed, c.indexed, kNow,
                                                        &c.arena, options, &c.trace));
    c.arena.Reset();
  });
}

// The same into a message that is reused (DiagnoseInto): nothing allocated, no arena to reset.
void BM_DiagnoseInto(benchmark::State& state) {
  v1::Diagnosis reused;
  Run(state, [options = NoExplain(), &reused](Caller& c) {
    upkeep::decision::DiagnoseInto(c.in.stack, c.in.observed, c.indexed, kNow, options, &c.trace,
                                   &reused);
    benchmark::DoNotOptimize(reused);
  });
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
BENCHMARK(BM_DiagnoseTraced)->Apply(Cases);
BENCHMARK(BM_DiagnoseInto)->Apply(Cases);
BENCHMARK(BM_CopyDiagnosis)->Apply(Cases);

}  // namespace

BENCHMARK_MAIN();
