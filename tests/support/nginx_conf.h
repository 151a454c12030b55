// The smallest nginx.conf a test's own nginx runs with: one worker, its pid file, error log
// (level error) and temp paths all under `prefix`, short proxy timeouts, and `http_body` (an
// upstream block, server blocks) inside http {}.
#ifndef UPKEEP_TESTS_SUPPORT_NGINX_CONF_H_
#define UPKEEP_TESTS_SUPPORT_NGINX_CONF_H_

#include <string>

#include "absl/strings/str_cat.h"

namespace upkeep::testing {

inline std::string TestNginxConf(const std::string& prefix, const std::string& http_body) {
  return absl::StrCat("worker_processes 1;\npid ", prefix, "/nginx.pid;\nerror_log ", prefix,
                      "/error.log error;\nevents { worker_connections 64; }\nhttp {\n"
                      "  access_log off;\n  client_body_temp_path ",
                      prefix, "/tb;\n  proxy_temp_path ", prefix, "/tp;\n  fastcgi_temp_path ",
                      prefix, "/tf;\n  uwsgi_temp_path ", prefix, "/tu;\n  scgi_temp_path ", prefix,
                      "/ts;\n  proxy_connect_timeout 1s;\n  proxy_read_timeout 5s;\n", http_body,
                      "}\n");
}

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_NGINX_CONF_H_
