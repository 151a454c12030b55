// ManifestWatcher on real files and real inotify: what an editor, a person or a deploy tool
// does to the manifests is reported once it is finished, and Stop wakes a sleeping waiter.
#include "agent/standalone/manifest_watcher.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::agent {
namespace {

using upkeep::testing::WaitFor;

void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// One WaitForChange on its own thread; the test waits for it with a deadline. The watcher must
// be stopped (or changed) before this goes away, or the join blocks.
class Waiter {
 public:
  explicit Waiter(ManifestWatcher* w)
      : thread_([this, w] {
          const bool changed = w->WaitForChange();
          absl::MutexLock lock(&mu_);
          changed_ = changed;
          done_ = true;
        }) {}
  ~Waiter() { thread_.join(); }
  bool done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }
  bool changed() {
    absl::MutexLock lock(&mu_);
    return changed_;
  }

 private:
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool changed_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// Waits for the next WaitForChange to return and says what it returned (false on timeout,
// after stopping the watcher so nothing is left blocked).
bool NextChange(ManifestWatcher* w) {
  Waiter waiter(w);
  if (!WaitFor([&] { return waiter.done(); }, absl::Seconds(10))) {
    w->Stop();
    return false;
  }
  return waiter.changed();
}

TEST(ManifestWatcher, AFileWrittenInPlaceOrReplacedByRenameIsAChange) {
  upkeep::testing::TempDir dir;
  const std::string file = dir.Join("stack.yaml");
  Write(file, "a: 1\n");
  ManifestWatcher w(file);
  Write(file, "a: 22\n");  // in place, as `>` or most programs do
  EXPECT_TRUE(NextChange(&w));
  Write(dir.Join(".stack.yaml.swp"), "a: 333\n");  // an editor's save: a new file renamed over
  ASSERT_EQ(std::rename(dir.Join(".stack.yaml.swp").c_str(), file.c_str()), 0);
  EXPECT_TRUE(NextChange(&w));
  w.Stop();
}

TEST(ManifestWatcher, AManifestAddedToOrRemovedFromADirectoryIsAChange) {
  upkeep::testing::TempDir dir;
  Write(dir.Join("a.yaml"), "a: 1\n");
  ManifestWatcher w(dir.path());
  Write(dir.Join("b.yml"), "b: 1\n");
  EXPECT_TRUE(NextChange(&w));
  std::filesystem::remove(dir.Join("a.yaml"));
  EXPECT_TRUE(NextChange(&w));
  w.Stop();
}

TEST(ManifestWatcher, ADirectoryRemovedAndMadeAgainIsWatchedAgain) {
  upkeep::testing::TempDir dir;
  const std::string manifests = dir.Join("manifests");
  std::filesystem::create_directory(manifests);
  Write(manifests + "/a.yaml", "a: 1\n");
  ManifestWatcher w(manifests);
  std::filesystem::remove_all(manifests);
  EXPECT_TRUE(NextChange(&w));  // a.yaml is gone
  std::filesystem::create_directory(manifests);
  Write(manifests + "/a.yaml", "a: 2\n");
  EXPECT_TRUE(NextChange(&w));
  Write(manifests + "/a.yaml", "a: 33\n");  // and the new directory is watched
  EXPECT_TRUE(NextChange(&w));
  w.Stop();
}

TEST(ManifestWatcher, StopWakesAWaiterThatSawNoChange) {
  upkeep::testing::TempDir dir;
  Write(dir.Join("a.yaml"), "a: 1\n");
  ManifestWatcher w(dir.path());
  Waiter waiter(&w);
  w.Stop();
  ASSERT_TRUE(WaitFor([&] { return waiter.done(); }, absl::Seconds(10)));
  EXPECT_FALSE(waiter.changed());
  EXPECT_FALSE(w.WaitForChange()) << "stopped for good";
}

}  // namespace
}  // namespace upkeep::agent
