// The journal on disk: what survives a crash, including a crash in the middle of an append.
#include "agent/act/journal.h"

#include <unistd.h>

#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/temp_dir.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;

using ::upkeep::testing::ReadFile;

TEST(Journal, RemembersStartedAndFinishedIdsAcrossARestart) {
  upkeep::testing::TempDir dir;
  {
    Journal j(dir.Join("journal"));
    ASSERT_TRUE(j.Recover().ok());
    ASSERT_TRUE(j.MarkStarted("a").ok());
    ASSERT_TRUE(j.MarkStarted("b").ok());
    v1::ActionResult r;
    r.set_id("b");
    r.set_outcome(v1::ACTION_OUTCOME_SUCCEEDED);
    ASSERT_TRUE(j.MarkFinished(r).ok());
  }
  Journal j(dir.Join("journal"));
  ASSERT_TRUE(j.Recover().ok());
  v1::ActionResult r;
  EXPECT_EQ(j.Lookup("a", nullptr), Journal::State::kStarted);
  EXPECT_EQ(j.Lookup("b", &r), Journal::State::kFinished);
  EXPECT_EQ(r.outcome(), v1::ACTION_OUTCOME_SUCCEEDED);
  EXPECT_EQ(j.Lookup("c", nullptr), Journal::State::kUnknown);
}

// A crash mid-append leaves a torn last line. The record appended after the next recovery must
// not be glued onto it: after a second crash that record must still be there, or the action
// it names would run a second time.
TEST(Journal, ARecordAfterATornLineSurvivesTheNextCrash) {
  upkeep::testing::TempDir dir;
  {
    Journal j(dir.Join("journal"));
    ASSERT_TRUE(j.Recover().ok());
    ASSERT_TRUE(j.MarkStarted("first").ok());
  }
  std::ofstream(dir.Join("journal"), std::ios::app) << "F half";  // crash 1, mid-write
  {
    Journal j(dir.Join("journal"));
    ASSERT_TRUE(j.Recover().ok());
    EXPECT_EQ(j.Lookup("first", nullptr), Journal::State::kStarted);
    ASSERT_TRUE(j.MarkStarted("second").ok());
  }  // crash 2, while "second" runs
  Journal j(dir.Join("journal"));
  ASSERT_TRUE(j.Recover().ok());
  EXPECT_EQ(j.Lookup("second", nullptr), Journal::State::kStarted) << "journal:\n"
                                                                   << ReadFile(dir.Join("journal"));
  EXPECT_EQ(j.Lookup("first", nullptr), Journal::State::kStarted);
  const std::string text = ReadFile(dir.Join("journal"));
  EXPECT_EQ(text.find("half"), std::string::npos) << "the torn tail is cut off:\n" << text;
  EXPECT_EQ(text.back(), '\n');
}

}  // namespace
}  // namespace upkeep::agent
