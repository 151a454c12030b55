// libFuzzer target for the controller's gRPC surface: hostile serialized AgentMessages on an
// AgentService.Connect stream, and hostile FleetService requests, through the real handlers.
//
// One controller is wired as upkeep-controller wires it (a SQLite store in a temporary
// directory, the Reconciler with its workers, AgentServiceImpl as its hub, FleetServiceImpl)
// and served on an in-process gRPC channel: no network, but gRPC's own framing and protobuf
// parsing of the bytes, then the reactor, the inbox, the reconciler and the store. The bytes are
// sent raw through a generic stub, so what reaches the server is exactly what the fuzzer wrote
// (not something a protobuf client would refuse to build). State (stacks applied, hosts seen,
// actions, events) accumulates across inputs, as it would in a controller under attack.
// The in-process channel has no TLS and so no AuthProcessor: every call runs as the most
// privileged caller (anonymous on a plaintext loopback port is admin), the worst case.
//
// Input: one selector byte, then frames, each a little-endian u16 length and that many bytes
// (a length past the end takes what is left).
//   selector % 15 == 0   every frame is one AgentMessage written on one Connect stream, in
//                        order; then the client half-closes and reads what the controller sent
//   selector % 15 == 14  two Connect streams at once: even frames on the first, odd frames on
//                        the second (two hellos for one host, the replaced stream going on)
//   otherwise            FleetService method (selector % 15 - 1) in the order of
//                        kFleetMethods, with the first frame as its request (no frame: the
//                        call is half-closed with no request; further frames are ignored)
// tests/fuzz/make_controller_seeds.cc writes the seed corpus in this format.
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "controller/api/agent_service.h"
#include "controller/api/fleet_service.h"
#include "controller/metrics/metrics.h"
#include "controller/reconcile/reconciler.h"
#include "controller/store/store.h"
#include "core/clock.h"
#include "core/log.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "tests/fuzz/controller_fuzz_format.h"

namespace {

namespace uc = upkeep::controller;
using upkeep::fuzz::kFleetMethods;
using upkeep::fuzz::kSelectors;

// The controller under fuzz; built once, at the first input, and torn down at exit (Stop),
// before the statics its threads use (spdlog's default logger) are destroyed.
struct Controller {
  std::string dir;
  std::unique_ptr<uc::Store> store;
  uc::Metrics metrics;
  std::unique_ptr<uc::Reconciler> reconciler;
  std::unique_ptr<uc::AgentServiceImpl> agents;
  std::unique_ptr<uc::FleetServiceImpl> fleet;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<grpc::GenericStub> stub;
};

Controller* controller_for_exit = nullptr;

// Found by the corpus run under ASan: left running, the controller's threads logged through
// spdlog's default logger after exit had destroyed it (heap-use-after-free, and at times a
// process that hung while reporting it). Registered with atexit after that logger was made, so
// it runs first, as upkeep-controller's own shutdown does.
void Stop() {
  Controller* c = controller_for_exit;
  c->agents->Shutdown();
  c->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  c->reconciler->Stop();
  c->stub.reset();
  c->server.reset();
  c->fleet.reset();
  c->agents.reset();
  c->reconciler.reset();
  c->store.reset();
  std::error_code ec;
  std::filesystem::remove_all(c->dir, ec);
  delete c;
}

Controller* Start() {
  // UPKEEP_FUZZ_LOG=1 shows the controller's log (to see what an input reached).
  upkeep::InitLogging("fuzz", false,
                      std::getenv("UPKEEP_FUZZ_LOG") ? spdlog::level::info : spdlog::level::off);
  // protobuf's own complaints (invalid UTF-8 in a string field, on most inputs) likewise.
  if (std::getenv("UPKEEP_FUZZ_LOG") == nullptr) google::protobuf::SetLogHandler(nullptr);
  auto* c = new Controller;
  // In memory when it can be: SQLite's fsyncs would otherwise set the pace.
  char tmpl[] = "/dev/shm/upkeep-controller-fuzz-XXXXXX";
  char fallback[] = "/tmp/upkeep-controller-fuzz-XXXXXX";
  char* made = ::mkdtemp(tmpl);
  if (made == nullptr) made = ::mkdtemp(fallback);
  if (made == nullptr) std::abort();
  c->dir = made;
  auto store = uc::OpenSqliteStore(c->dir);
  if (!store.ok()) std::abort();
  c->store = std::move(*store);
  auto reconciler = uc::Reconciler::Create(c->store.get(), upkeep::Clock::Real(), &c->metrics);
  if (!reconciler.ok()) std::abort();
  c->reconciler = std::move(*reconciler);
  uc::AgentServiceOptions options;
  options.hello_timeout_ms = 2000;
  c->agents = std::make_unique<uc::AgentServiceImpl>(c->reconciler.get(), options);
  c->reconciler->SetHub(c->agents.get());
  c->fleet = std::make_unique<uc::FleetServiceImpl>(c->reconciler.get(), c->store.get());
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(4 << 20);  // upkeep-controller's default
  builder.RegisterService(c->agents.get());
  builder.RegisterService(c->fleet.get());
  c->server = builder.BuildAndStart();
  if (c->server == nullptr) std::abort();
  c->reconciler->Start();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  c->stub = std::make_unique<grpc::GenericStub>(c->server->InProcessChannel(args));
  controller_for_exit = c;
  std::atexit(Stop);
  return c;
}

// One generic call driven step by step on its own completion queue: at most one write and one
// read in flight. On the in-process transport a write completes only when the server reads it,
// so a write the server no longer reads (it finished the stream, e.g. after a bad message) is
// given up after a moment and the call goes on to reading, which lets the server's own pending
// write, and then its status, through.
class Call {
 public:
  Call(grpc::GenericStub* stub, const std::string& method, bool server_streaming)
      : server_streaming_(server_streaming) {
    // RunAction waits for its result up to the caller's deadline: keep it short.
    ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    call_ = stub->PrepareCall(&ctx_, method, &cq_);
    call_->StartCall(Tag(kStart));
    ok_ = Await(kStart, kForever).value_or(false);
  }
  ~Call() {
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
    }
  }
  void Write(const std::string& bytes) {
    if (!ok_) return;
    grpc::Slice slice(bytes);
    grpc::ByteBuffer buffer(&slice, 1);
    call_->Write(buffer, Tag(kWrite));
    write_pending_ = true;
    ok_ = Await(kWrite, kStuck).value_or(false);
  }
  void WritesDone() {
    if (!ok_) return;
    call_->WritesDone(Tag(kWrite));
    write_pending_ = true;
    ok_ = Await(kWrite, kStuck).value_or(false);
  }
  // Reads what the server sends (bounded), then its status.
  grpc::Status Finish() {
    for (int i = 0; i < 64; ++i) {
      grpc::ByteBuffer in;
      call_->Read(&in, Tag(kRead));
      // A watch never ends by itself: what it sends within a moment is what it answers.
      std::optional<bool> got = Await(kRead, server_streaming_ ? kStuck : kForever);
      if (!got.has_value()) {
        ctx_.TryCancel();
        Await(kRead, kForever);
        break;
      }
      if (!*got) break;
    }
    grpc::Status status;
    call_->Finish(&status, Tag(kFinish));
    Await(kFinish, kForever);
    if (std::getenv("UPKEEP_FUZZ_LOG") != nullptr) {
      std::fprintf(
          stderr, "call finished: %d %s after %.0f ms\n", status.error_code(),
          status.error_message().c_str(),
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_)
              .count());
    }
    return status;
  }

 private:
  enum Op { kStart, kWrite, kRead, kFinish };
  static constexpr int kForever = -1;
  static constexpr int kStuck = 100;  // ms

  void* Tag(Op op) { return reinterpret_cast<void*>(static_cast<intptr_t>(op) + 1); }

  // Waits for `op` (up to `ms`, or for ever); a late write completion on the way is noted.
  // nullopt on timeout, else the op's ok.
  std::optional<bool> Await(Op op, int ms) {
    const auto until = ms == kForever
                           ? std::chrono::system_clock::time_point::max()
                           : std::chrono::system_clock::now() + std::chrono::milliseconds(ms);
    while (true) {
      void* tag;
      bool ok = false;
      const auto r = cq_.AsyncNext(&tag, &ok, until);
      if (r != grpc::CompletionQueue::GOT_EVENT) return std::nullopt;
      if (tag == Tag(kWrite)) write_pending_ = false;
      if (tag == Tag(op)) return ok;
    }
  }

  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  const bool server_streaming_;
  grpc::ClientContext ctx_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  bool ok_ = false;
  bool write_pending_ = false;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Controller* controller = Start();
  if (size == 0) return 0;
  const int selector = data[0] % kSelectors;
  const std::vector<std::string> frames = upkeep::fuzz::SplitFrames(data + 1, size - 1);
  if (selector == 0) {
    Call call(controller->stub.get(), "/upkeep.v1.AgentService/Connect", false);
    for (const auto& f : frames) call.Write(f);
    call.WritesDone();
    call.Finish();
  } else if (selector == kSelectors - 1) {
    Call a(controller->stub.get(), "/upkeep.v1.AgentService/Connect", false);
    Call b(controller->stub.get(), "/upkeep.v1.AgentService/Connect", false);
    for (size_t i = 0; i < frames.size(); ++i) (i % 2 == 0 ? a : b).Write(frames[i]);
    a.WritesDone();
    b.WritesDone();
    a.Finish();
    b.Finish();
  } else {
    const std::string method = kFleetMethods[selector - 1];
    Call call(controller->stub.get(), "/upkeep.v1.FleetService/" + method, method == "WatchEvents");
    // One request: a unary method sent two is held by gRPC until the deadline, which would
    // only slow the fuzzer down.
    if (!frames.empty()) call.Write(frames[0]);
    call.WritesDone();
    call.Finish();
    // Found by this fuzzer: an action kind the controller does not know (proto3 enums are
    // open) was recorded and sent to the agent. None may ever be recorded.
    if (method == "RunAction") {
      auto actions = controller->store->ListActions("", "", 20);
      if (actions.ok()) {
        for (const auto& a : *actions) {
          if (!upkeep::v1::ActionKind_IsValid(a.action().kind())) __builtin_trap();
        }
      }
    }
  }
  return 0;
}
