// upkeepctl tls: the fleet's certificates, offline (see core/tls/tls.h for what they carry).
#ifndef UPKEEP_CLI_TLS_H_
#define UPKEEP_CLI_TLS_H_

namespace upkeep::cli {

// tls init --dir D
// tls issue --dir D (--controller NAME --san LIST | --agent HOST | --user NAME --role ROLE)
//           [--days N]
// argv[0] is "tls". Returns the exit code: 0 done, 1 failed, 2 usage.
int RunTls(int argc, char** argv);

}  // namespace upkeep::cli

#endif  // UPKEEP_CLI_TLS_H_
