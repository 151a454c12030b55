// `upkeep-controller token ...`: manage bearer tokens in DATA/tokens.db (see token_store.h).
//   token create --data DIR --name NAME --role viewer|operator|admin   prints the token once
//   token list   --data DIR                                            NAME ROLE CREATED
//   token revoke --data DIR --name NAME                                effective at the next call
// Safe while the controller runs (it reads the store on every token call).
#ifndef UPKEEP_CONTROLLER_AUTH_TOKEN_COMMAND_H_
#define UPKEEP_CONTROLLER_AUTH_TOKEN_COMMAND_H_

namespace upkeep::controller_auth {

// argv[0] is "token". Output for people on stdout, errors one line on stderr. Returns the exit
// code: 0 done, 1 failed, 2 usage.
int RunTokenCommand(int argc, char** argv);

}  // namespace upkeep::controller_auth

#endif  // UPKEEP_CONTROLLER_AUTH_TOKEN_COMMAND_H_
