// A temporary directory removed (recursively) when the object goes away, unless
// UPKEEP_KEEP_TEST_DIRS is set (to read the logs of daemons a failing test started).
//
// Before it goes, whatever was left running from it is killed: the services upkeep's process
// runtime started with their state under it (they outlive an agent by design, so a test that
// ends, or dies on an assertion, would leave them behind; told apart from a reused pid by their
// start time), and every other process that works in it or holds a file under it open (nginx
// masters and workers, a daemon of a test that failed before stopping it).
#ifndef UPKEEP_TESTS_SUPPORT_TEMP_DIR_H_
#define UPKEEP_TESTS_SUPPORT_TEMP_DIR_H_

#include <string>

namespace upkeep::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Kills what was started from `dir` and still runs (see above); returns how many processes.
int StopLeftoversUnder(const std::string& dir);

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_TEMP_DIR_H_
