// Helpers for propagating absl::Status through functions that return
// absl::Status or absl::StatusOr<T>.
#ifndef MOE_CORE_STATUS_MACROS_H_
#define MOE_CORE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MOE_CONCAT_INNER_(a, b) a##b
#define MOE_CONCAT_(a, b) MOE_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` yields a non-OK status.
#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status _moe_status = (expr);       \
    if (!_moe_status.ok()) return _moe_status; \
  } while (0)

// Evaluates `rexpr` (a StatusOr); on error returns its status, otherwise
// moves the value into `lhs` (which may be a declaration).
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  ASSIGN_OR_RETURN_IMPL_(MOE_CONCAT_(_moe_statusor_, __LINE__), lhs, rexpr)

#define ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                           \
  if (!statusor.ok()) return statusor.status();      \
  lhs = std::move(statusor).value()

#endif  // MOE_CORE_STATUS_MACROS_H_
