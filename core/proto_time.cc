#include "core/proto_time.h"

namespace upkeep {

google::protobuf::Timestamp ToProto(absl::Time t) {
  google::protobuf::Timestamp out;
  SetProto(t, &out);
  return out;
}

void SetProto(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t ns = absl::ToUnixNanos(t);
  int64_t seconds = ns / 1000000000;
  int32_t nanos = static_cast<int32_t>(ns % 1000000000);
  if (nanos < 0) {
    seconds -= 1;
    nanos += 1000000000;
  }
  out->set_seconds(seconds);
  out->set_nanos(nanos);
}

google::protobuf::Duration ToProto(absl::Duration d) {
  google::protobuf::Duration out;
  const int64_t ns = absl::ToInt64Nanoseconds(d);
  out.set_seconds(ns / 1000000000);
  out.set_nanos(static_cast<int32_t>(ns % 1000000000));
  return out;
}

absl::Duration DurationOr(const google::protobuf::Duration& d, absl::Duration fallback) {
  if (d.seconds() == 0 && d.nanos() == 0) return fallback;
  return FromProto(d);
}

}  // namespace upkeep
