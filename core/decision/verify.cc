#include "core/decision/verify.h"

#include <algorithm>
#include <set>

#include "core/proto_time.h"

namespace upkeep::decision {

namespace v1 = upkeep::v1;

bool ServiceHealthy(const v1::ServiceObservation& o) {
  return o.exists() && o.running() && o.health() == v1::HEALTH_STATE_HEALTHY &&
         o.runtime_health() != v1::RUNTIME_HEALTH_UNHEALTHY;
}

bool RouteOk(const v1::RouteSpec& spec, const v1::RouteObservation& o) {
  if (!o.probe().ok()) return false;
  if (spec.probe().expected_status_size() > 0) {
    const auto& ex = spec.probe().expected_status();
    return std::find(ex.begin(), ex.end(), o.probe().status_code()) != ex.end();
  }
  return true;
}

bool TargetFixed(const v1::Stack& desired, const std::string& target,
                 const v1::StackObservation& observed) {
  if (target == kProxyTarget) {
    if (!observed.proxy().master_running()) return false;
    for (const auto& r : observed.proxy().routes()) {
      const v1::RouteSpec* spec = nullptr;
      for (const auto& s : desired.spec().proxy().routes()) {
        if (s.path() == r.path()) spec = &s;
      }
      if (spec != nullptr ? !RouteOk(*spec, r) : !r.probe().ok()) return false;
    }
    return true;
  }
  for (const auto& s : observed.services()) {
    if (s.name() == target) return ServiceHealthy(s);
  }
  return false;
}

bool IsRepair(v1::ActionKind k) {
  return k == v1::ACTION_KIND_START_SERVICE || k == v1::ACTION_KIND_RESTART_SERVICE ||
         k == v1::ACTION_KIND_CREATE_SERVICE || k == v1::ACTION_KIND_START_PROXY ||
         k == v1::ACTION_KIND_RELOAD_PROXY || k == v1::ACTION_KIND_RESTART_PROXY;
}

std::vector<size_t> Verify(const v1::Stack& desired, const v1::StackObservation& observed,
                           const v1::Diagnosis& diagnosis, absl::Span<v1::ActionRecord> history) {
  std::vector<size_t> changed;
  const absl::Time observed_at = FromProto(observed.observed_at());
  auto answered_repair = [&](const v1::ActionRecord& r) {
    return !r.dry_run() && !r.result().id().empty() && IsRepair(r.action().kind()) &&
           observed_at >= FromProto(r.result().finished_at());
  };
  for (size_t i = 0; i < history.size(); ++i) {
    v1::ActionRecord& r = history[i];
    if (!answered_repair(r) || r.verification() != v1::VERIFICATION_PENDING) continue;
    if (TargetFixed(desired, r.action().target(), observed)) {
      r.set_verification(v1::VERIFICATION_FIXED);
      changed.push_back(i);
      continue;
    }
    for (const auto& a : diagnosis.actions()) {
      if (a.action().target() == r.action().target() && a.policy() != v1::POLICY_VERDICT_PAUSED) {
        r.set_verification(v1::VERIFICATION_NOT_FIXED);
        changed.push_back(i);
        break;
      }
    }
  }
  std::set<std::string> seen;
  for (size_t i = history.size(); i-- > 0;) {
    v1::ActionRecord& r = history[i];
    if (!answered_repair(r)) continue;
    if (!seen.insert(r.action().target()).second) continue;
    if (r.verification() == v1::VERIFICATION_FIXED) continue;
    if (TargetFixed(desired, r.action().target(), observed)) {
      r.set_verification(v1::VERIFICATION_FIXED);
      if (std::find(changed.begin(), changed.end(), i) == changed.end()) changed.push_back(i);
    }
  }
  return changed;
}

}  // namespace upkeep::decision
