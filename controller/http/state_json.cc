#include "controller/http/state_json.h"

#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

namespace upkeep::controller {
namespace {

nlohmann::json ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return nlohmann::json::parse(out, nullptr, false);
}

}  // namespace

std::string StateJson(Reconciler* reconciler, Store* store, int max_actions, int max_events) {
  nlohmann::json j;
  j["now"] = absl::FormatTime(absl::RFC3339_full, absl::Now(), absl::UTCTimeZone());
  j["hosts"] = nlohmann::json::array();
  for (const auto& h : reconciler->Hosts()) j["hosts"].push_back(ToJson(h));
  j["stacks"] = nlohmann::json::array();
  for (const auto& s : reconciler->Stacks()) j["stacks"].push_back(ToJson(s));
  j["actions"] = nlohmann::json::array();
  if (auto actions = store->ListActions("", "", max_actions); actions.ok()) {
    for (const auto& a : *actions) j["actions"].push_back(ToJson(a));
  }
  j["events"] = nlohmann::json::array();
  if (auto events = store->TailEvents("", max_events); events.ok()) {
    for (const auto& e : *events) j["events"].push_back(ToJson(e));
  }
  return j.dump();
}

}  // namespace upkeep::controller
