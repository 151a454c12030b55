// A temporary directory removed (recursively) when the object goes away, unless
// UPKEEP_KEEP_TEST_DIRS is set (to read the logs of daemons a failing test started).
#ifndef UPKEEP_TESTS_SUPPORT_TEMP_DIR_H_
#define UPKEEP_TESTS_SUPPORT_TEMP_DIR_H_

#include <cstdlib>
#include <filesystem>
#include <string>

namespace upkeep::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "upkeep-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    if (const char* keep = std::getenv("UPKEEP_KEEP_TEST_DIRS"); keep != nullptr && *keep) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_TEMP_DIR_H_
