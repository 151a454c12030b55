// What a notification says: built from an event and the stack's last diagnosis on that host,
// then rendered as generic webhook JSON or a Slack incoming-webhook payload. Every message
// explains itself: stack, host, finding code, the decision path with its evidence.
// Pure functions; thread-compatible.
#ifndef UPKEEP_CONTROLLER_NOTIFY_MESSAGE_H_
#define UPKEEP_CONTROLLER_NOTIFY_MESSAGE_H_

#include <optional>
#include <string>

#include "upkeep/v1/diagnosis.pb.h"
#include "upkeep/v1/event.pb.h"
#include "upkeep/v1/notifier.pb.h"

namespace upkeep::notify {

// The `events:` class of an event ("alerts", "crashLoops", "actionsFailed", "healed",
// "resolved"), or empty when notifiers never carry it.
std::string EventClass(const upkeep::v1::Event& event);

// The finding code an event is about: "PortMismatch" for an Alert whose message is
// "PortMismatch: ...", "CrashLooping" for a crash loop; empty otherwise.
std::string FindingCode(const upkeep::v1::Event& event);

struct Message {
  std::string notifier;
  upkeep::v1::Event event;
  std::optional<upkeep::v1::Diagnosis> diagnosis;  // the host's last one, when known
  bool test = false;                               // `upkeepctl notify test`
};

// {"notifier","event","severity","stack","host","target","code","message","at","seq",
//  "verdict","summary","findings":[...],"path":[...],"text"}; docs/operations.md.
std::string WebhookJson(const Message& m);
// {"text", "blocks": [...]}: a header line, the finding, the decision path as a code block.
std::string SlackJson(const Message& m);
// One line for people: "[alert] demo@web-1 PortMismatch: ...".
std::string Headline(const Message& m);
// The decision path as indented text, one node a line with its evidence.
std::string PathText(const upkeep::v1::Diagnosis& d);

std::string Render(upkeep::v1::NotifierType type, const Message& m);

}  // namespace upkeep::notify

#endif  // UPKEEP_CONTROLLER_NOTIFY_MESSAGE_H_
