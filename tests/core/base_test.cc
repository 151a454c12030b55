#include "core/clock.h"
#include "core/log.h"
#include "core/proto_time.h"
#include "gtest/gtest.h"

namespace upkeep {
namespace {

TEST(SimulatedClock, MovesOnlyWhenAdvanced) {
  SimulatedClock clock;
  const absl::Time start = clock.Now();
  EXPECT_EQ(clock.Now(), start);
  clock.Advance(absl::Seconds(3));
  EXPECT_EQ(clock.Now() - start, absl::Seconds(3));
}

TEST(ProtoTime, RoundTripsTimestampsAndDurations) {
  const absl::Time t = absl::FromUnixMillis(1700000000123);
  EXPECT_EQ(FromProto(ToProto(t)), t);
  EXPECT_EQ(FromProto(ToProto(absl::Milliseconds(1500))), absl::Milliseconds(1500));
  EXPECT_EQ(DurationOr(google::protobuf::Duration(), absl::Seconds(7)), absl::Seconds(7));
}

TEST(FormatEvent, QuotesValuesWithSpaces) {
  EXPECT_EQ(FormatEvent("action_sent", {{"id", "a1"}, {"why", "backend down"}}),
            "event=action_sent id=a1 why=\"backend down\"");
}

}  // namespace
}  // namespace upkeep
