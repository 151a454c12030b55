// DockerApi: the few Docker Engine API calls heal_bench times (start, inspect) over dockerd's
// unix socket, and a watch of container `die` events that notes when each one reached us. It
// speaks the same transport as the agent's Docker runtime (libcurl on the unix socket), so the
// floor it measures (Docker's `die` event + `docker start` until serving) is the floor that
// runtime faces, without the docker CLI's own start-up in it.
// Thread-safe; the destructor stops and joins the watch thread.
#ifndef UPKEEP_BENCH_E2E_DOCKER_API_H_
#define UPKEEP_BENCH_E2E_DOCKER_API_H_

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace upkeep::bench {

class DockerApi {
 public:
  explicit DockerApi(std::string socket) : socket_(std::move(socket)) {}
  ~DockerApi();
  DockerApi(const DockerApi&) = delete;
  DockerApi& operator=(const DockerApi&) = delete;

  // POST /containers/{name}/start.
  absl::Status Start(const std::string& name);
  // The container's full id and main pid (0 when it does not run).
  absl::StatusOr<std::pair<std::string, int>> IdAndPid(const std::string& name);
  // Starts the watch of `die` events (GET /events) and waits until dockerd has answered it.
  absl::Status WatchDies(absl::Duration timeout);
  // When the first `die` event of container `id` that arrived at or after `after` reached us;
  // InfiniteFuture when none did within `timeout`.
  absl::Time WaitDie(const std::string& id, absl::Time after, absl::Duration timeout);

 private:
  struct Die {
    std::string id;
    absl::Time arrived;
  };
  absl::StatusOr<std::string> Call(const std::string& method, const std::string& path);
  void WatchLoop();
  void OnEventData(const char* data, size_t n);

  const std::string socket_;
  std::atomic<bool> stop_{false};
  std::thread watch_;
  std::string partial_;  // the watch thread's unfinished line
  absl::Mutex mu_;
  bool connected_ ABSL_GUARDED_BY(mu_) = false;
  std::string watch_error_ ABSL_GUARDED_BY(mu_);
  std::vector<Die> dies_ ABSL_GUARDED_BY(mu_);
};

}  // namespace upkeep::bench

#endif  // UPKEEP_BENCH_E2E_DOCKER_API_H_
