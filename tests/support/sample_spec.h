// A ServiceSpec for the static sample service run as a process (the process runtime's tests,
// the executor's): `upkeep-sample-service --name NAME --port PORT`, probed on /health.
#ifndef UPKEEP_TESTS_SUPPORT_SAMPLE_SPEC_H_
#define UPKEEP_TESTS_SUPPORT_SAMPLE_SPEC_H_

#include <string>

#include "absl/strings/str_cat.h"
#include "tests/support/subprocess.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::testing {

inline upkeep::v1::ServiceSpec SampleProcessSpec(const std::string& name, int port) {
  upkeep::v1::ServiceSpec s;
  s.set_name(name);
  s.set_port(port);
  for (const std::string& a : {BinPath("upkeep-sample-service"), std::string("--name"), name,
                               std::string("--port"), absl::StrCat(port)}) {
    s.mutable_process()->add_command(a);
  }
  s.mutable_probe()->mutable_http()->set_path("/health");
  return s;
}

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_SAMPLE_SPEC_H_
