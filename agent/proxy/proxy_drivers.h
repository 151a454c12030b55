// ProxyDrivers: the proxy driver of each stack on this host, by stack name. Owned by the daemon
// (or a one-shot command) next to the RuntimeRegistry, and shared by the observer and the
// executor. Drivers are handed out as shared_ptr, so a driver whose stack leaves the desired
// state stays alive until the action or observation using it is done. Thread-safe.
#ifndef UPKEEP_AGENT_PROXY_PROXY_DRIVERS_H_
#define UPKEEP_AGENT_PROXY_PROXY_DRIVERS_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "agent/proxy/proxy_driver.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::agent {

class ProxyDrivers {
 public:
  // Makes the driver for a proxy spec (which product: the spec says).
  using Factory = std::function<std::shared_ptr<ProxyDriver>(const upkeep::v1::ProxySpec&)>;

  explicit ProxyDrivers(Factory factory) : factory_(std::move(factory)) {}
  ProxyDrivers(const ProxyDrivers&) = delete;
  ProxyDrivers& operator=(const ProxyDrivers&) = delete;

  // The driver of `stack`, created on first use and given the stack's current proxy spec;
  // null when the stack has no proxy.
  std::shared_ptr<ProxyDriver> For(const upkeep::v1::Stack& stack);

  // Forgets the drivers of stacks not named (those still in use live on with their users).
  void Retain(const std::vector<std::string>& stacks);

 private:
  const Factory factory_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<ProxyDriver>> drivers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> specs_ ABSL_GUARDED_BY(mu_);  // serialized, to skip no-ops
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_PROXY_PROXY_DRIVERS_H_
