// Conversions between absl time types and google.protobuf Timestamp/Duration.
#ifndef UPKEEP_CORE_PROTO_TIME_H_
#define UPKEEP_CORE_PROTO_TIME_H_

#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace upkeep {

google::protobuf::Timestamp ToProto(absl::Time t);
google::protobuf::Duration ToProto(absl::Duration d);
absl::Time FromProto(const google::protobuf::Timestamp& t);
absl::Duration FromProto(const google::protobuf::Duration& d);
// FromProto(d) when the field is set (non-zero), else `fallback`.
absl::Duration DurationOr(const google::protobuf::Duration& d, absl::Duration fallback);

}  // namespace upkeep

#endif  // UPKEEP_CORE_PROTO_TIME_H_
