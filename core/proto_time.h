// Conversions between absl time types and google.protobuf Timestamp/Duration.
#ifndef UPKEEP_CORE_PROTO_TIME_H_
#define UPKEEP_CORE_PROTO_TIME_H_

#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace upkeep {

google::protobuf::Timestamp ToProto(absl::Time t);
google::protobuf::Duration ToProto(absl::Duration d);
// ToProto(t) written into `out`, without a temporary message.
void SetProto(absl::Time t, google::protobuf::Timestamp* out);

// Inline: the decision engine converts several timestamps per service on every diagnosis.
// A field in range (nanos in [0, 1e9), which protobuf requires) is the time itself; absl's
// sum of seconds and nanoseconds gives the same value by a longer road, kept for the rest.
inline absl::Time FromProto(const google::protobuf::Timestamp& t) {
  if (t.nanos() >= 0 && t.nanos() < 1000000000) {
    return absl::time_internal::FromUnixDuration(
        absl::time_internal::MakeDuration(t.seconds(), int64_t{t.nanos()} * 4));
  }
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}
inline absl::Duration FromProto(const google::protobuf::Duration& d) {
  if (d.seconds() >= 0 && d.nanos() >= 0 && d.nanos() < 1000000000) {
    return absl::time_internal::MakeDuration(d.seconds(), int64_t{d.nanos()} * 4);
  }
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}
// FromProto(d) when the field is set (non-zero), else `fallback`.
absl::Duration DurationOr(const google::protobuf::Duration& d, absl::Duration fallback);

}  // namespace upkeep

#endif  // UPKEEP_CORE_PROTO_TIME_H_
