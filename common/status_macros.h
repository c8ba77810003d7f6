// Tiny local status macros: Debian's Abseil (20220623) ships no status_macros.h.
//
//   absl::StatusOr<Foo> MakeFoo();
//   absl::Status UseFoo() {
//     LG_ASSIGN_OR_RETURN(Foo foo, MakeFoo());
//     LG_RETURN_IF_ERROR(foo.Check());
//     return absl::OkStatus();
//   }
#ifndef LENSGRID_COMMON_STATUS_MACROS_H_
#define LENSGRID_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LG_STATUS_CONCAT_INNER_(a, b) a##b
#define LG_STATUS_CONCAT_(a, b) LG_STATUS_CONCAT_INNER_(a, b)

#define LG_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::absl::Status lg_status_ = (expr);      \
    if (!lg_status_.ok()) return lg_status_; \
  } while (0)

#define LG_ASSIGN_OR_RETURN(lhs, expr) \
  LG_ASSIGN_OR_RETURN_IMPL_(LG_STATUS_CONCAT_(lg_statusor_, __LINE__), lhs, expr)

#define LG_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr)     \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // LENSGRID_COMMON_STATUS_MACROS_H_
