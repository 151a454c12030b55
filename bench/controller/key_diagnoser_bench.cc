// The reconciler's Diagnose per observation, before and after KeyDiagnoser (the fast path),
// on the stacks of bench/core/diagnose_bench. Each iteration is one observation: its probe
// latencies differ from the last one's (evidence changes, as it does with every report) and
// the clock moves 1 ms.
//   BM_ReconcileDiagnoseBefore: what Reconcile did: Diagnose in full on the heap, the history
//     (a snapshot) indexed per call, and the result copied into the key's state.
//   BM_ReconcileDiagnose: KeyDiagnoser::Diagnose while the decision holds (a full diagnosis
//     again every kExplanationMaxAge, i.e. every 5,000 observations here).
//   BM_ReconcileDiagnoseChanging: the decision changes with every observation (healthy and
//     broken in turn): the fast call and the full one, the worst case.
#include <memory>
#include <vector>

#include "bench/core/bench_stacks.h"
#include "benchmark/benchmark.h"
#include "controller/reconcile/key_diagnoser.h"
#include "core/decision/diagnose.h"
#include "core/proto_time.h"

namespace {

namespace v1 = upkeep::v1;
using upkeep::bench::Input;
using upkeep::bench::kNow;
using upkeep::bench::Make;
using upkeep::controller::History;
using upkeep::controller::KeyDiagnoser;
using upkeep::controller::WorkKey;

// Two observations of one case that differ in their latencies, and the history as the
// dispatcher holds it.
struct Observations {
  explicit Observations(const benchmark::State& state, bool alternate_broken = false)
      : in(Make(state.range(0), state.range(1), state.range(2), state.range(3) != 0)),
        history(std::make_shared<const std::vector<v1::ActionRecord>>(in.history)) {
    for (int v = 0; v < 2; ++v) {
      v1::StackObservation o = in.observed;
      for (auto& s : *o.mutable_services()) {
        *s.mutable_probe()->mutable_latency() = upkeep::ToProto(absl::Milliseconds(2 + v));
      }
      for (auto& r : *o.mutable_proxy()->mutable_routes()) {
        *r.mutable_probe()->mutable_latency() = upkeep::ToProto(absl::Milliseconds(4 + v));
      }
      if (alternate_broken && v == 1) {
        auto* s = o.mutable_services(o.services_size() / 2);
        s->set_health(s->health() == v1::HEALTH_STATE_HEALTHY ? v1::HEALTH_STATE_UNHEALTHY
                                                              : v1::HEALTH_STATE_HEALTHY);
        s->mutable_probe()->set_ok(!s->probe().ok());
      }
      observed[v] = o;
    }
  }
  // The i-th observation, observed at `now`.
  v1::StackObservation& At(int64_t i, absl::Time now) {
    v1::StackObservation& o = observed[i % 2];
    *o.mutable_observed_at() = upkeep::ToProto(now);
    return o;
  }
  const Input in;
  const History history;
  v1::StackObservation observed[2];
};

void BM_ReconcileDiagnoseBefore(benchmark::State& state) {
  Observations obs(state);
  v1::Diagnosis stored;
  int64_t i = 0;
  for (auto _ : state) {
    const absl::Time now = kNow + absl::Milliseconds(i);
    const v1::Diagnosis d =
        upkeep::decision::Diagnose(obs.in.stack, obs.At(i++, now), *obs.history, now);
    stored = d;
    benchmark::DoNotOptimize(stored);
  }
  state.SetItemsProcessed(state.iterations());
}

void RunKeyDiagnoser(benchmark::State& state, bool changing) {
  Observations obs(state, changing);
  KeyDiagnoser k;
  const WorkKey key{"s", "h"};
  int64_t i = 0;
  for (auto _ : state) {
    const absl::Time now = kNow + absl::Milliseconds(i);
    benchmark::DoNotOptimize(
        k.Diagnose(key, obs.in.stack, obs.At(i++, now), obs.history, now, false));
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["full"] =
      benchmark::Counter(static_cast<double>(k.counts().full), benchmark::Counter::kAvgIterations);
}

void BM_ReconcileDiagnose(benchmark::State& state) { RunKeyDiagnoser(state, false); }
void BM_ReconcileDiagnoseChanging(benchmark::State& state) { RunKeyDiagnoser(state, true); }

void Cases(benchmark::internal::Benchmark* b) {
  b->ArgNames({"services", "routes", "history", "broken"})
      ->Args({2, 2, 0, 0})
      ->Args({2, 2, 20, 1})
      ->Args({20, 10, 200, 0})
      ->Args({20, 10, 200, 1});
}
BENCHMARK(BM_ReconcileDiagnoseBefore)->Apply(Cases);
BENCHMARK(BM_ReconcileDiagnose)->Apply(Cases);
BENCHMARK(BM_ReconcileDiagnoseChanging)->Apply(Cases);

}  // namespace

BENCHMARK_MAIN();
