// The agent's copy of its last desired state: atomic, checksummed; a torn or corrupt copy is
// reported (DATA_LOSS naming the file) and never handed back as a desired state.
#include "agent/autonomy/desired_cache.h"

#include <fstream>
#include <iterator>
#include <string>

#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;

v1::DesiredState Sample() {
  v1::DesiredState d;
  d.set_revision(42);
  d.set_host_paused(true);
  v1::Stack* s = d.add_stacks();
  s->mutable_metadata()->set_name("shop");
  s->mutable_spec()->add_hosts("h1");
  s->mutable_status()->set_paused(true);
  return d;
}

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

TEST(DesiredCache, NothingKnownWithoutAFile) {
  upkeep::testing::TempDir dir;
  auto loaded = DesiredCache(dir.path()).Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->has_value());
}

TEST(DesiredCache, KeepsRevisionStacksAndPauseFlags) {
  upkeep::testing::TempDir dir;
  DesiredCache cache(dir.path());
  ASSERT_TRUE(cache.Save(Sample()).ok());
  auto loaded = DesiredCache(dir.path()).Load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->revision(), 42);
  EXPECT_TRUE((*loaded)->host_paused());
  ASSERT_EQ((*loaded)->stacks_size(), 1);
  EXPECT_TRUE((*loaded)->stacks(0).status().paused());
}

TEST(DesiredCache, ATornCopyIsReportedAndIgnored) {
  upkeep::testing::TempDir dir;
  DesiredCache cache(dir.path());
  ASSERT_TRUE(cache.Save(Sample()).ok());
  const std::string whole = Read(cache.path());
  for (size_t cut : {size_t{0}, size_t{5}, whole.find('\n'), whole.size() - 1}) {
    Write(cache.path(), whole.substr(0, cut));
    auto loaded = cache.Load();
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << "cut at " << cut;
    EXPECT_NE(loaded.status().message().find(cache.path()), std::string::npos);
  }
}

TEST(DesiredCache, AFlippedByteIsCaughtByTheChecksum) {
  upkeep::testing::TempDir dir;
  DesiredCache cache(dir.path());
  ASSERT_TRUE(cache.Save(Sample()).ok());
  std::string text = Read(cache.path());
  text[text.size() - 3] ^= 0x20;
  Write(cache.path(), text);
  auto loaded = cache.Load();
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(loaded.status().message().find("checksum"), std::string::npos)
      << loaded.status().message();
}

TEST(DesiredCache, ANewSaveReplacesACorruptCopy) {
  upkeep::testing::TempDir dir;
  DesiredCache cache(dir.path());
  Write(cache.path(), "garbage");
  EXPECT_FALSE(cache.Load().ok());
  ASSERT_TRUE(cache.Save(Sample()).ok());
  auto loaded = cache.Load();
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ((*loaded)->revision(), 42);
}

}  // namespace
}  // namespace upkeep::agent
