// upkeepctl completion bash: a bash completion script (source it, or install it as
// /usr/share/bash-completion/completions/upkeepctl).
#include <cstdio>
#include <cstring>

#include "cli/commands.h"

namespace upkeep::cli {
namespace {

constexpr char kBash[] = R"(# bash completion for upkeepctl
_upkeepctl() {
  local cur prev words cword
  cur="${COMP_WORDS[COMP_CWORD]}"
  prev="${COMP_WORDS[COMP_CWORD-1]}"
  local commands="validate plan tls apply diff get describe explain events actions pause resume run delete notify completion help"
  case "$prev" in
    -f|--filename|--observed|--tls-ca|--tls-cert|--tls-key|--dir)
      COMPREPLY=( $(compgen -f -- "$cur") ); return ;;
    -o|--output) COMPREPLY=( $(compgen -W "table json yaml" -- "$cur") ); return ;;
    --controller|--stack|--host|--target|--token|--limit|--param) return ;;
  esac
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=( $(compgen -W "$commands" -- "$cur") ); return
  fi
  local flags="--controller -o --tls-ca --tls-cert --tls-key --token --insecure"
  case "${COMP_WORDS[1]}" in
    get) [ "$COMP_CWORD" -eq 2 ] && { COMPREPLY=( $(compgen -W "stacks hosts notifiers" -- "$cur") ); return; } ;;
    describe|explain|plan) [ "$COMP_CWORD" -eq 2 ] && { COMPREPLY=( $(compgen -W "stack" -- "$cur") ); return; } ;;
    pause|resume) [ "$COMP_CWORD" -eq 2 ] && { COMPREPLY=( $(compgen -W "stack host" -- "$cur") ); return; } ;;
    delete) [ "$COMP_CWORD" -eq 2 ] && { COMPREPLY=( $(compgen -W "stack notifier" -- "$cur") ); return; } ;;
    notify) [ "$COMP_CWORD" -eq 2 ] && { COMPREPLY=( $(compgen -W "test" -- "$cur") ); return; } ;;
    tls) [ "$COMP_CWORD" -eq 2 ] && { COMPREPLY=( $(compgen -W "init issue" -- "$cur") ); return; } ;;
    completion) COMPREPLY=( $(compgen -W "bash" -- "$cur") ); return ;;
    run) [ "$COMP_CWORD" -eq 2 ] && { COMPREPLY=( $(compgen -W "start-service restart-service stop-service collect-logs test-proxy-config reload-proxy start-proxy restart-proxy" -- "$cur") ); return; }
         flags="$flags --stack --target --host --param" ;;
    apply|diff|validate) flags="$flags -f" ;;
    events) flags="$flags --watch --stack --limit" ;;
    actions) flags="$flags --stack --limit" ;;
  esac
  COMPREPLY=( $(compgen -W "$flags" -- "$cur") )
}
complete -F _upkeepctl upkeepctl
)";

}  // namespace

int RunCompletion(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "bash") != 0) {
    std::fprintf(stderr, "upkeepctl: completion bash (the only shell so far)\n");
    return 2;
  }
  std::fputs(kBash, stdout);
  return 0;
}

}  // namespace upkeep::cli
