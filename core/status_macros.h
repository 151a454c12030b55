// The one definition of RETURN_IF_ERROR / ASSIGN_OR_RETURN for the project.
#ifndef UPKEEP_CORE_STATUS_MACROS_H_
#define UPKEEP_CORE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define UPKEEP_CONCAT_INNER_(a, b) a##b
#define UPKEEP_CONCAT_(a, b) UPKEEP_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status upkeep_status_ = (expr);    \
    if (!upkeep_status_.ok()) return upkeep_status_; \
  } while (0)

#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(UPKEEP_CONCAT_(upkeep_statusor_, __LINE__), lhs, expr)

#endif  // UPKEEP_CORE_STATUS_MACROS_H_
