#include "controller/notify/notify_service.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "controller/notify/message.h"
#include "core/log.h"
#include "core/proto_time.h"
#include "google/protobuf/util/message_differencer.h"

namespace upkeep::notify {

namespace v1 = upkeep::v1;

constexpr size_t kMaxQueue = 1000;

absl::StatusOr<std::string> ResolveSecret(const v1::SecretRef& ref, const std::string& what) {
  switch (ref.source_case()) {
    case v1::SecretRef::kEnv: {
      const char* v = std::getenv(ref.env().c_str());
      if (v == nullptr || *v == '\0') {
        return absl::FailedPreconditionError(
            absl::StrCat(what, ": environment variable ", ref.env(),
                         " is not set in the controller's environment"));
      }
      return std::string(v);
    }
    case v1::SecretRef::kFile: {
      std::ifstream in(ref.file());
      std::string line;
      if (!in || !std::getline(in, line)) {
        return absl::FailedPreconditionError(
            absl::StrCat(what, ": cannot read ", ref.file(), " (missing, empty or unreadable)"));
      }
      return std::string(absl::StripAsciiWhitespace(line));
    }
    default:
      return absl::FailedPreconditionError(absl::StrCat(what, ": not set"));
  }
}

bool Wants(const v1::NotifierSpec& spec, const v1::Event& event,
           const google::protobuf::Map<std::string, std::string>* labels) {
  const std::string cls = EventClass(event);
  if (cls.empty()) return false;
  if (std::find(spec.events().begin(), spec.events().end(), cls) == spec.events().end()) {
    return false;
  }
  if (!spec.stacks().empty() &&
      std::find(spec.stacks().begin(), spec.stacks().end(), event.stack()) == spec.stacks().end()) {
    return false;
  }
  if (!spec.match_labels().empty() && labels != nullptr) {
    for (const auto& [k, v] : spec.match_labels()) {
      auto it = labels->find(k);
      if (it == labels->end() || it->second != v) return false;
    }
  }
  return true;
}

// One notifier: its spec, queue, counters and delivery thread.
class NotifyService::Channel {
 public:
  // `n.status()`: the delivery status saved last (counters carry on from it).
  Channel(v1::Notifier n, const StackLookup* lookup, controller::Metrics* metrics,
          controller::Store* store)
      : lookup_(lookup), metrics_(metrics), store_(store) {
    name_ = n.metadata().name();
    status_ = n.status();
    status_.clear_pending();
    n.clear_status();
    notifier_ = std::move(n);
    thread_ = std::thread([this] { Run(); });
  }
  ~Channel() { Stop(); }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
      cv_.Signal();
    }
    if (thread_.joinable()) thread_.join();
  }

  v1::Notifier Get() {
    absl::MutexLock lock(&mu_);
    v1::Notifier n = notifier_;
    *n.mutable_status() = status_;
    n.mutable_status()->set_pending(static_cast<int64_t>(queue_.size()));
    return n;
  }
  v1::Notifier Spec() {
    absl::MutexLock lock(&mu_);
    return notifier_;
  }
  void Set(v1::Notifier n) {
    n.clear_status();
    absl::MutexLock lock(&mu_);
    notifier_ = std::move(n);
  }

  void Offer(const v1::Event& event) {
    absl::MutexLock lock(&mu_);
    if (stop_ || !Wants(notifier_.spec(), event, nullptr)) return;
    if (queue_.size() >= kMaxQueue) {
      status_.set_dropped(status_.dropped() + 1);
      Count("dropped");
      return;
    }
    Pending p;
    p.message.notifier = name_;
    p.message.event = event;
    queue_.push_back(std::move(p));
    Gauge();
    cv_.Signal();
  }

  // A test message, sent now on the caller's thread.
  v1::TestNotifierResponse Test() {
    Message m;
    m.notifier = name_;
    m.test = true;
    m.event.set_type("Normal");
    m.event.set_reason("Test");
    m.event.set_message("test message from upkeep: this notifier is wired up");
    *m.event.mutable_at() = ToProto(absl::Now());
    const v1::Notifier n = Spec();
    v1::TestNotifierResponse resp;
    const HttpAnswer a = Send(n, m, &resp);
    resp.set_delivered(a.ok());
    resp.set_http_status(a.status);
    resp.set_body(a.body);
    if (resp.error().empty()) resp.set_error(a.error);
    Record(a, /*final=*/true);
    return resp;
  }

 private:
  struct Pending {
    Message message;
    int attempts = 0;
    absl::Time not_before = absl::InfinitePast();
    bool enriched = false;
  };

  void Count(const std::string& outcome) {
    if (metrics_ != nullptr) {
      metrics_->Inc("upkeep_notifications_total", {{"notifier", name_}, {"outcome", outcome}});
    }
  }
  void Gauge() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (metrics_ != nullptr) {
      metrics_->Set("upkeep_notifier_pending", {{"notifier", name_}},
                    static_cast<double>(queue_.size()));
    }
  }

  // Resolves the secrets and posts; `resp` (may be null) learns the receiver's host.
  HttpAnswer Send(const v1::Notifier& n, const Message& m, v1::TestNotifierResponse* resp) {
    HttpAnswer a;
    auto url = ResolveSecret(n.spec().url(), "spec.url");
    if (!url.ok()) {
      a.error = std::string(url.status().message());
      return a;
    }
    std::string token;
    if (n.spec().token().source_case() != v1::SecretRef::SOURCE_NOT_SET) {
      auto t = ResolveSecret(n.spec().token(), "spec.token");
      if (!t.ok()) {
        a.error = std::string(t.status().message());
        return a;
      }
      token = *t;
    }
    if (resp != nullptr) resp->set_url_host(UrlHost(*url));
    return HttpPost(*url, token, Render(n.spec().type(), m),
                    DurationOr(n.spec().timeout(), absl::Seconds(5)));
  }

  // Counts the attempt and saves the status to the store.
  void Record(const HttpAnswer& a, bool final) {
    RecordLocal(a, final);
    Persist();
  }

  // One writer at a time, each saving the newest status: saves never go back in time.
  void Persist() {
    if (store_ == nullptr) return;
    absl::MutexLock persist(&persist_mu_);
    v1::NotifierStatus s;
    {
      absl::MutexLock lock(&mu_);
      s = status_;
      s.set_pending(static_cast<int64_t>(queue_.size()));
    }
    if (absl::Status st = store_->SaveNotifierStatus(name_, s); !st.ok()) {
      UPKEEP_LOG(warn, "notifier_status_not_saved",
                 {{"notifier", name_}, {"error", std::string(st.message())}});
    }
  }

  void RecordLocal(const HttpAnswer& a, bool final) {
    absl::MutexLock lock(&mu_);
    *status_.mutable_last_attempt() = ToProto(absl::Now());
    status_.set_last_http_status(a.status);
    if (a.ok()) {
      status_.set_sent(status_.sent() + 1);
      *status_.mutable_last_success() = ToProto(absl::Now());
      status_.clear_last_error();
      Count("sent");
    } else {
      status_.set_last_error(!a.error.empty() ? a.error : absl::StrCat("HTTP ", a.status));
      if (final) {
        status_.set_failed(status_.failed() + 1);
        Count("failed");
      } else {
        Count("retried");
      }
    }
  }

  void Run() {
    while (true) {
      Pending p;
      v1::Notifier n;
      {
        absl::MutexLock lock(&mu_);
        while (!stop_) {
          if (!queue_.empty() && queue_.front().not_before <= absl::Now()) break;
          const absl::Time wake =
              queue_.empty() ? absl::InfiniteFuture() : queue_.front().not_before;
          cv_.WaitWithDeadline(&mu_, wake);
        }
        if (stop_) return;
        p = std::move(queue_.front());
        queue_.pop_front();
        n = notifier_;
      }
      if (!p.enriched) {
        p.enriched = true;
        // Labels and the decision path come from the stack, read here, off the bus thread.
        std::optional<v1::Stack> stack;
        if (!p.message.event.stack().empty()) stack = (*lookup_)(p.message.event.stack());
        if (stack && !Wants(n.spec(), p.message.event, &stack->metadata().labels())) continue;
        if (stack) {
          for (const auto& d : stack->status().diagnoses()) {
            if (d.host() == p.message.event.host()) p.message.diagnosis = d;
          }
        }
        if (!Admit(n)) {
          Persist();  // the drop counts
          continue;
        }
      }
      const HttpAnswer a = Send(n, p.message, nullptr);
      ++p.attempts;
      const bool retry = !a.ok() && a.retryable() && p.attempts < n.spec().max_attempts();
      Record(a, !retry);
      if (!a.ok()) {
        UPKEEP_LOG(warn, "notify_failed",
                   {{"notifier", name_},
                    {"attempt", absl::StrCat(p.attempts)},
                    {"status", absl::StrCat(a.status)},
                    {"error", a.error},
                    {"retry", retry ? "yes" : "no"}});
      }
      absl::MutexLock lock(&mu_);
      if (retry) {
        absl::Duration backoff = DurationOr(n.spec().initial_backoff(), absl::Seconds(1));
        for (int i = 1; i < p.attempts; ++i) backoff *= 2;
        backoff = std::min(backoff, DurationOr(n.spec().max_backoff(), absl::Minutes(1)));
        p.not_before = absl::Now() + backoff;
        queue_.push_front(std::move(p));  // order is kept: the next one waits behind it
      }
      Gauge();
    }
  }

  // The rate limit: at most max_per_minute first attempts in any minute; the rest are dropped.
  bool Admit(const v1::Notifier& n) {
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&mu_);
    while (!sent_at_.empty() && sent_at_.front() <= now - absl::Minutes(1)) sent_at_.pop_front();
    if (static_cast<int>(sent_at_.size()) >= n.spec().max_per_minute()) {
      status_.set_dropped(status_.dropped() + 1);
      status_.set_last_error("rate limited: message dropped");
      Count("dropped");
      return false;
    }
    sent_at_.push_back(now);
    return true;
  }

  const StackLookup* const lookup_;
  controller::Metrics* const metrics_;
  controller::Store* const store_;
  absl::Mutex persist_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::string name_;
  absl::Mutex mu_;
  absl::CondVar cv_;
  v1::Notifier notifier_ ABSL_GUARDED_BY(mu_);
  v1::NotifierStatus status_ ABSL_GUARDED_BY(mu_);
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  std::deque<absl::Time> sent_at_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

NotifyService::NotifyService(controller::Store* store, StackLookup lookup,
                             controller::Metrics* metrics)
    : store_(store), lookup_(std::move(lookup)), metrics_(metrics) {}

absl::StatusOr<std::unique_ptr<NotifyService>> NotifyService::Open(controller::Store* store,
                                                                   StackLookup lookup,
                                                                   controller::Metrics* metrics,
                                                                   const std::string& legacy_dir) {
  std::unique_ptr<NotifyService> s(new NotifyService(store, std::move(lookup), metrics));
  if (store == nullptr) return s;
  auto stored = store->ListNotifiers();
  if (!stored.ok()) {
    return absl::Status(
        stored.status().code(),
        absl::StrCat("reading the notifiers from the store: ", stored.status().message()));
  }
  if (stored->empty() && !legacy_dir.empty()) {
    if (absl::Status st = s->ImportLegacy(legacy_dir); !st.ok()) return st;
    stored = store->ListNotifiers();
    if (!stored.ok()) return stored.status();
  }
  absl::MutexLock lock(&s->mu_);
  for (const auto& n : *stored) {
    s->channels_[n.metadata().name()] = std::make_shared<Channel>(n, &s->lookup_, metrics, store);
  }
  return s;
}

absl::Status NotifyService::ImportLegacy(const std::string& dir) {
  const std::string path = dir + "/notifiers.pb";
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::OkStatus();  // nothing to import
  v1::ListNotifiersResponse saved;
  if (!saved.ParseFromIstream(&in)) {
    return absl::DataLossError(absl::StrCat(path,
                                            ": not a notifier list; move it away to start "
                                            "without notifiers, then apply them again"));
  }
  for (const auto& n : saved.notifiers()) {
    if (absl::Status st = store_->PutNotifier(n); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("importing ", path, ": ", st.message()));
    }
  }
  std::error_code ec;
  std::filesystem::rename(path, path + ".imported", ec);
  UPKEEP_LOG(info, "notifiers_imported",
             {{"file", path}, {"count", absl::StrCat(saved.notifiers_size())}});
  return absl::OkStatus();
}

NotifyService::~NotifyService() { Stop(); }

void NotifyService::Attach(controller::EventBus* bus) {
  subscription_ = bus->Subscribe("", [this](const v1::Event& e) { OnEvent(e); });
}

void NotifyService::Stop() {
  subscription_.reset();
  std::map<std::string, std::shared_ptr<Channel>> channels;
  {
    absl::MutexLock lock(&mu_);
    channels.swap(channels_);
  }
  for (auto& [name, c] : channels) c->Stop();
}

void NotifyService::OnEvent(const v1::Event& event) {
  if (EventClass(event).empty()) return;
  absl::MutexLock lock(&mu_);
  for (auto& [name, c] : channels_) c->Offer(event);
}

absl::StatusOr<std::vector<v1::AppliedStack>> NotifyService::Apply(
    const std::vector<v1::Notifier>& notifiers, bool dry_run) {
  std::vector<v1::AppliedStack> out;
  absl::MutexLock lock(&mu_);
  for (v1::Notifier n : notifiers) {
    n.clear_status();
    v1::AppliedStack a;
    a.set_name(n.metadata().name());
    auto it = channels_.find(n.metadata().name());
    // Stored first: a write the store refuses (a deposed leader's) changes nothing here.
    auto put = [&]() -> absl::Status {
      if (dry_run || store_ == nullptr) return absl::OkStatus();
      absl::Status st = store_->PutNotifier(n);
      if (!st.ok()) {
        return absl::Status(st.code(), absl::StrCat("notifier ", n.metadata().name(),
                                                    " not stored: ", st.message()));
      }
      return st;
    };
    if (it == channels_.end()) {
      a.set_change("created");
      if (absl::Status st = put(); !st.ok()) return st;
      if (!dry_run) {
        channels_[n.metadata().name()] = std::make_shared<Channel>(n, &lookup_, metrics_, store_);
      }
    } else {
      v1::Notifier old = it->second->Spec();
      old.mutable_metadata()->clear_source();
      v1::Notifier cmp = n;
      cmp.mutable_metadata()->clear_source();
      if (google::protobuf::util::MessageDifferencer::Equals(old, cmp)) {
        a.set_change("unchanged");
      } else {
        a.set_change("configured");
        if (absl::Status st = put(); !st.ok()) return st;
        if (!dry_run) it->second->Set(n);
      }
    }
    out.push_back(std::move(a));
  }
  return out;
}

absl::Status NotifyService::Delete(const std::string& name) {
  std::shared_ptr<Channel> gone;
  {
    absl::MutexLock lock(&mu_);
    auto it = channels_.find(name);
    if (it == channels_.end()) return absl::NotFoundError(absl::StrCat("no notifier ", name));
    if (store_ != nullptr) {
      absl::Status st = store_->DeleteNotifier(name);
      if (!st.ok() && !absl::IsNotFound(st)) return st;
    }
    gone = std::move(it->second);
    channels_.erase(it);
  }
  gone->Stop();
  return absl::OkStatus();
}

std::vector<v1::Notifier> NotifyService::List() {
  std::vector<std::shared_ptr<Channel>> channels;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [name, c] : channels_) channels.push_back(c);
  }
  std::vector<v1::Notifier> out;
  for (auto& c : channels) out.push_back(c->Get());
  return out;
}

absl::StatusOr<v1::TestNotifierResponse> NotifyService::Test(const std::string& name) {
  std::shared_ptr<Channel> c;
  {
    absl::MutexLock lock(&mu_);
    auto it = channels_.find(name);
    if (it == channels_.end()) return absl::NotFoundError(absl::StrCat("no notifier ", name));
    c = it->second;
  }
  return c->Test();
}

}  // namespace upkeep::notify
