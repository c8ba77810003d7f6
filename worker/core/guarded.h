// Guarded(what, fn): runs fn, turning any exception into INTERNAL ("what:
// ..."), so that no exception leaves the worker's core (one escaping a gRPC
// handler or the coordinator link would end the process). Every public entry
// point of WorkerCore runs its body through it.
//
//   return Guarded("RunWithCache", [&] { return RunWithCacheImpl(request, cancelled); });
#ifndef LENSGRID_WORKER_CORE_GUARDED_H_
#define LENSGRID_WORKER_CORE_GUARDED_H_

#include <c10/util/Exception.h>

#include <exception>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace lensgrid {

template <typename Fn>
auto Guarded(absl::string_view what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": LibTorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(what, ": unknown exception"));
  }
}

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_CORE_GUARDED_H_
