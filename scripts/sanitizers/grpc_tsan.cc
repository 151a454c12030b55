// Makes the hand-off of a gRPC operation through Debian's libgrpc visible to ThreadSanitizer.
//
// Why: grpcpp's headers (compiled into our binaries, so instrumented) start an operation on one
// thread (CallOpSet::FillOps fills the op set, CallbackWithSuccessTag::Set arms the callback
// tag, a Write serialises into a ByteBuffer) and complete it on a gRPC thread (FinalizeResult,
// each op's FinishOp, the tag's Run, then our reactor's callback). Between the two the
// operation passes through libgrpc, built without -fsanitize=thread, whose lock-free queues
// (the combiner, the executor, the callback completion queue) TSan cannot see. Every access
// grpcpp makes to its own op sets and tags then reads as a race, in a different grpcpp or
// std::function frame at each interleaving.
//
// How: linked into every binary of a TSan build (with absl_tsan.cc, ahead of libgrpc), these
// definitions of libgrpc's C entry points are the ones libgrpc++ binds. Each forwards to the
// real function (dlsym RTLD_NEXT) and adds the one edge libgrpc guarantees: an operation's
// completion happens after its start.
//   - grpc_call_start_batch releases on the batch's tag before passing it on.
//   - A callback completion queue runs the tag itself (a grpc_completion_queue_functor: libgrpc
//     calls its functor_run). Before passing such a tag on, its functor_run is swapped for
//     RunAfterAcquire, which acquires on the tag and then calls the original. A tag is taken
//     for a functor when its first word points into executable code: a functor starts with
//     its run function, every other tag grpcpp passes (a CallOpSet) with its vtable, which
//     lives in read-only data.
//   - grpc_completion_queue_next / _pluck (the synchronous and completion-queue APIs) acquire
//     on the tag they return.
// Only edges that libgrpc really provides are added, each from one operation's start to its
// own completion: the shim cannot hide a race between two operations, nor between our code
// and anything else. Compiled without -fsanitize=thread (its table is touched from libgrpc's
// threads); contains no logic of ours and is not linked into normal builds.
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "grpc/grpc.h"

extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);

namespace {

using RunFn = void (*)(grpc_completion_queue_functor*, int);

void* Real(const char* name) {
  void* fn = dlsym(RTLD_NEXT, name);
  if (fn == nullptr) {
    std::fprintf(stderr, "grpc_tsan: %s not found in libgrpc (%s)\n", name, dlerror());
    std::abort();
  }
  return fn;
}

// The process's mappings, read from /proc/self/maps, and whether each is executable; read again
// only when an address falls outside all of them (a library loaded since).
class CodeRanges {
 public:
  bool Contains(uintptr_t addr) {
    std::lock_guard<std::mutex> lock(mu_);
    if (const Range* r = Find(addr)) return r->exec;
    Load();
    const Range* r = Find(addr);
    return r != nullptr && r->exec;
  }

 private:
  struct Range {
    uintptr_t lo, hi;
    bool exec;
  };
  const Range* Find(uintptr_t addr) const {
    for (const auto& r : ranges_) {
      if (addr >= r.lo && addr < r.hi) return &r;
    }
    return nullptr;
  }
  void Load() {
    ranges_.clear();
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
      std::istringstream in(line);
      std::string span, perms;
      in >> span >> perms;
      const auto dash = span.find('-');
      if (perms.size() < 3 || dash == std::string::npos) continue;
      ranges_.push_back({std::stoull(span.substr(0, dash), nullptr, 16),
                         std::stoull(span.substr(dash + 1), nullptr, 16), perms[2] == 'x'});
    }
  }

  std::mutex mu_;
  std::vector<Range> ranges_;
};

CodeRanges& Code() {
  static auto* ranges = new CodeRanges;
  return *ranges;
}

// The run function each armed functor had before it was swapped, and how many of its batches
// are in flight, by tag.
struct Armed {
  struct Entry {
    RunFn run;
    int in_flight;
  };
  std::mutex mu;
  std::unordered_map<void*, Entry> original;
};

Armed& Table() {
  static auto* table = new Armed;
  return *table;
}

void RunAfterAcquire(grpc_completion_queue_functor* functor, int ok) {
  RunFn run = nullptr;
  {
    Armed& t = Table();
    std::lock_guard<std::mutex> lock(t.mu);
    auto it = t.original.find(functor);
    if (it == t.original.end()) {
      std::fprintf(stderr, "grpc_tsan: a functor ran that was never armed\n");
      std::abort();
    }
    run = it->second.run;
    // The last batch in flight puts the original back before it runs: the run may free the
    // tag, or arm it again for its next batch.
    if (--it->second.in_flight == 0) {
      t.original.erase(it);
      functor->functor_run = run;
    }
  }
  __tsan_acquire(functor);
  run(functor, ok);
}

void Arm(void* tag) {
  if (tag == nullptr || reinterpret_cast<uintptr_t>(tag) % alignof(void*) != 0) return;
  auto* functor = static_cast<grpc_completion_queue_functor*>(tag);
  Armed& t = Table();
  std::lock_guard<std::mutex> lock(t.mu);
  RunFn run = functor->functor_run;
  if (run == &RunAfterAcquire) {  // armed already: another batch on this tag is in flight
    ++t.original.at(tag).in_flight;
    return;
  }
  if (!Code().Contains(reinterpret_cast<uintptr_t>(run))) return;  // a CallOpSet: a vtable
  t.original[tag] = {run, 1};
  functor->functor_run = &RunAfterAcquire;
}

}  // namespace

extern "C" {

grpc_call_error grpc_call_start_batch(grpc_call* call, const grpc_op* ops, size_t nops, void* tag,
                                      void* reserved) {
  using Fn = grpc_call_error (*)(grpc_call*, const grpc_op*, size_t, void*, void*);
  static const auto real = reinterpret_cast<Fn>(Real("grpc_call_start_batch"));
  __tsan_release(tag);
  Arm(tag);
  return real(call, ops, nops, tag, reserved);
}

grpc_event grpc_completion_queue_next(grpc_completion_queue* cq, gpr_timespec deadline,
                                      void* reserved) {
  using Fn = grpc_event (*)(grpc_completion_queue*, gpr_timespec, void*);
  static const auto real = reinterpret_cast<Fn>(Real("grpc_completion_queue_next"));
  grpc_event ev = real(cq, deadline, reserved);
  if (ev.type == GRPC_OP_COMPLETE) __tsan_acquire(ev.tag);
  return ev;
}

grpc_event grpc_completion_queue_pluck(grpc_completion_queue* cq, void* tag, gpr_timespec deadline,
                                       void* reserved) {
  using Fn = grpc_event (*)(grpc_completion_queue*, void*, gpr_timespec, void*);
  static const auto real = reinterpret_cast<Fn>(Real("grpc_completion_queue_pluck"));
  grpc_event ev = real(cq, tag, deadline, reserved);
  if (ev.type == GRPC_OP_COMPLETE) __tsan_acquire(ev.tag);
  return ev;
}

}  // extern "C"
