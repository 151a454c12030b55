#include "agent/act/executor.h"

#include <filesystem>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/act/journal.h"
#include "agent/proxy/proxy_drivers.h"
#include "agent/runtime/registry.h"
#include "core/log.h"
#include "core/proto_time.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;

constexpr size_t kMaxOutput = 8 << 10;
constexpr absl::Duration kDefaultDeadline = absl::Seconds(60);

std::string Excerpt(const std::string& s) {
  return s.size() <= kMaxOutput ? s : "…" + s.substr(s.size() - kMaxOutput);
}

class ExecutorImpl : public Executor {
 public:
  ExecutorImpl(std::unique_ptr<Journal> journal, RuntimeRegistry* runtimes, ProxyDrivers* proxies,
               std::function<void()> after_action)
      : journal_(std::move(journal)),
        runtimes_(runtimes),
        proxies_(proxies),
        after_action_(std::move(after_action)) {}

  void SetDesired(const std::vector<v1::Stack>& stacks) override {
    absl::MutexLock lock(&mu_);
    stacks_.clear();
    for (const auto& s : stacks) stacks_[s.metadata().name()] = s;
  }

  std::vector<v1::ActionResult> Finished() override { return journal_->Finished(); }

  v1::ActionResult Execute(const v1::Action& action) override {
    v1::ActionResult result;
    result.set_id(action.id());
    result.set_kind(action.kind());
    result.set_target(action.target());
    result.set_stack(action.stack());
    *result.mutable_started_at() = ToProto(absl::Now());
    if (action.id().empty())
      return Finish(std::move(result), v1::ACTION_OUTCOME_REFUSED, "action has no id", false);
    // At most once per id, also across agent restarts.
    switch (journal_->Lookup(action.id(), &result)) {
      case Journal::State::kFinished:
        result.set_replayed(true);
        return result;
      case Journal::State::kStarted:
        result.set_replayed(true);
        return Finish(std::move(result), v1::ACTION_OUTCOME_FAILED,
                      "interrupted by an agent restart; not run again", true);
      case Journal::State::kUnknown:
        break;
    }
    v1::Stack stack;
    const v1::ServiceSpec* service = nullptr;
    std::string refusal = Authorize(action, &stack, &service);
    if (!refusal.empty()) {
      UPKEEP_LOG(warn, "action_refused", {{"id", action.id()}, {"reason", refusal}});
      return Finish(std::move(result), v1::ACTION_OUTCOME_REFUSED, refusal, true);
    }
    if (absl::Status st = journal_->MarkStarted(action.id()); !st.ok()) {
      return Finish(std::move(result), v1::ACTION_OUTCOME_FAILED,
                    absl::StrCat("journal: ", st.message()), false);
    }
    const absl::Time deadline =
        action.has_deadline() ? FromProto(action.deadline()) : absl::Now() + kDefaultDeadline;
    const absl::Duration budget = std::max(absl::Milliseconds(100), deadline - absl::Now());
    UPKEEP_LOG(info, "action_started",
               {{"id", action.id()},
                {"kind", v1::ActionKind_Name(action.kind())},
                {"target", action.target()}});
    std::string output;
    absl::Status st = Run(action, stack, service, budget, &output);
    result.set_output(Excerpt(output));
    // The agent's own limits (--allow-exec) refuse; anything else that goes wrong fails.
    v1::ActionOutcome outcome = st.ok()                        ? v1::ACTION_OUTCOME_SUCCEEDED
                                : absl::IsPermissionDenied(st) ? v1::ACTION_OUTCOME_REFUSED
                                                               : v1::ACTION_OUTCOME_FAILED;
    if (absl::Now() > deadline || absl::IsDeadlineExceeded(st)) {
      outcome = v1::ACTION_OUTCOME_TIMED_OUT;
    }
    result = Finish(std::move(result), outcome, st.ok() ? "done" : std::string(st.message()), true);
    UPKEEP_LOG(info, "action_finished",
               {{"id", action.id()},
                {"outcome", v1::ActionOutcome_Name(outcome)},
                {"message", result.message()}});
    if (after_action_) after_action_();
    return result;
  }

 private:
  v1::ActionResult Finish(v1::ActionResult result, v1::ActionOutcome outcome,
                          const std::string& message, bool journal) {
    result.set_outcome(outcome);
    result.set_message(message);
    *result.mutable_finished_at() = ToProto(absl::Now());
    if (journal) {
      if (absl::Status st = journal_->MarkFinished(result); !st.ok()) {
        UPKEEP_LOG(error, "journal_write_failed", {{"error", std::string(st.message())}});
      }
    }
    return result;
  }

  // The agent acts only on targets its desired state names. Empty = allowed.
  std::string Authorize(const v1::Action& action, v1::Stack* stack,
                        const v1::ServiceSpec** service) {
    {
      absl::MutexLock lock(&mu_);
      auto it = stacks_.find(action.stack());
      if (it == stacks_.end()) {
        return absl::StrCat("stack \"", action.stack(), "\" is not in this agent's desired state");
      }
      *stack = it->second;
    }
    switch (action.kind()) {
      case v1::ACTION_KIND_START_SERVICE:
      case v1::ACTION_KIND_RESTART_SERVICE:
      case v1::ACTION_KIND_STOP_SERVICE:
      case v1::ACTION_KIND_COLLECT_LOGS:
      case v1::ACTION_KIND_CREATE_SERVICE:
        for (const auto& s : stack->spec().services()) {
          if (s.name() == action.target()) *service = &s;
        }
        if (*service == nullptr) {
          return absl::StrCat("service \"", action.target(), "\" is not named by stack ",
                              action.stack());
        }
        return "";
      case v1::ACTION_KIND_TEST_PROXY_CONFIG:
      case v1::ACTION_KIND_RELOAD_PROXY:
      case v1::ACTION_KIND_START_PROXY:
      case v1::ACTION_KIND_RESTART_PROXY: {
        std::shared_ptr<ProxyDriver> proxy = proxies_->For(*stack);
        if (proxy == nullptr || action.target() != proxy->target()) {
          return absl::StrCat("proxy target \"", action.target(), "\" is not named by stack ",
                              action.stack());
        }
        return "";
      }
      default:
        return absl::StrCat("unsupported action kind ", v1::ActionKind_Name(action.kind()));
    }
  }

  absl::Status Run(const v1::Action& action, const v1::Stack& stack, const v1::ServiceSpec* service,
                   absl::Duration budget, std::string* output) {
    auto param_ms = [&](const char* key, absl::Duration fallback) {
      auto it = action.params().find(key);
      int64_t v = 0;
      if (it != action.params().end() && absl::SimpleAtoi(it->second, &v) && v >= 0) {
        return absl::Milliseconds(v);
      }
      return fallback;
    };
    if (service != nullptr) {
      absl::StatusOr<Runtime*> found = runtimes_->Get(stack);
      if (!found.ok()) {
        return absl::UnavailableError(
            absl::StrCat("no runtime for this stack: ", found.status().message()));
      }
      Runtime* runtime = *found;
      const absl::Duration stop_timeout =
          std::min(budget, param_ms("stop_timeout_ms", FromProto(service->stop_timeout())));
      switch (action.kind()) {
        case v1::ACTION_KIND_START_SERVICE: {
          absl::Status st = runtime->Start(*service);
          *output = st.ok() ? absl::StrCat(service->name(), " started") : "";
          return st;
        }
        case v1::ACTION_KIND_RESTART_SERVICE: {
          absl::Status st = runtime->Restart(*service, stop_timeout);
          *output = st.ok() ? absl::StrCat(service->name(), " restarted") : "";
          return st;
        }
        case v1::ACTION_KIND_CREATE_SERVICE: {
          // The exact command and its output go with the result, failed or not.
          absl::StatusOr<std::string> r =
              runtime->Create(*service, std::min(budget, absl::Minutes(2)));
          *output = r.ok() ? *r : std::string(r.status().message());
          return r.status();
        }
        case v1::ACTION_KIND_STOP_SERVICE: {
          absl::Status st = runtime->Stop(*service, stop_timeout);
          *output = st.ok() ? absl::StrCat(service->name(), " stopped") : "";
          return st;
        }
        case v1::ACTION_KIND_COLLECT_LOGS: {
          int tail = service->logs().tail() > 0 ? service->logs().tail() : 100;
          if (auto it = action.params().find("tail"); it != action.params().end()) {
            absl::SimpleAtoi(it->second, &tail);
          }
          auto logs = runtime->Logs(*service, std::max(1, std::min(tail, 10000)));
          if (!logs.ok()) return logs.status();
          *output = *logs;
          return absl::OkStatus();
        }
        default:
          break;
      }
    }
    // Held until the action is done, whatever the desired state does meanwhile.
    const std::shared_ptr<ProxyDriver> proxy = proxies_->For(stack);
    if (proxy == nullptr) return absl::FailedPreconditionError("stack has no proxy");
    absl::StatusOr<std::string> r;
    switch (action.kind()) {
      case v1::ACTION_KIND_TEST_PROXY_CONFIG: {
        const v1::ConfigTest t = proxy->TestConfig();
        *output = t.output();
        return t.ok() ? absl::OkStatus()
                      : absl::FailedPreconditionError(absl::StrCat(
                            proxy->target(), " config test failed: the config is invalid"));
      }
      case v1::ACTION_KIND_START_PROXY:
        r = proxy->Start(std::min(budget, absl::Seconds(10)));
        break;
      case v1::ACTION_KIND_RELOAD_PROXY:
        r = proxy->Reload(std::min(budget, absl::Seconds(10)));
        break;
      case v1::ACTION_KIND_RESTART_PROXY:
        r = proxy->Restart(std::min(budget, absl::Seconds(20)));
        break;
      default:
        return absl::InvalidArgumentError("unsupported action");
    }
    if (!r.ok()) {
      *output = std::string(r.status().message());
      return r.status();
    }
    *output = *r;
    return absl::OkStatus();
  }

  std::unique_ptr<Journal> journal_;
  RuntimeRegistry* const runtimes_;
  ProxyDrivers* const proxies_;
  const std::function<void()> after_action_;
  absl::Mutex mu_;
  std::map<std::string, v1::Stack> stacks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<Executor>> Executor::Create(const std::string& data_dir,
                                                           RuntimeRegistry* runtimes,
                                                           ProxyDrivers* proxies,
                                                           std::function<void()> after_action) {
  if (runtimes == nullptr || proxies == nullptr) {
    return absl::InvalidArgumentError(
        "executor: a runtime registry and proxy drivers are required");
  }
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  auto journal = std::make_unique<Journal>(data_dir + "/journal");
  if (absl::Status st = journal->Recover(); !st.ok()) return st;
  return std::unique_ptr<Executor>(
      new ExecutorImpl(std::move(journal), runtimes, proxies, std::move(after_action)));
}

}  // namespace upkeep::agent
