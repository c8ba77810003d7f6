// Debian's Abseil is built without NDEBUG, so every absl::Mutex runs deadlock
// detection by default: each Lock updates a global lock-order graph
// (GraphCycles), about 7% of the coordinator's CPU under load. The servers
// and the CLI turn it off; unit tests keep it, so a lock-order inversion
// still fails there.
#ifndef LENSGRID_COMMON_MUTEX_MODE_H_
#define LENSGRID_COMMON_MUTEX_MODE_H_

#include "absl/synchronization/mutex.h"

namespace lensgrid {

inline void UseReleaseMutexes() {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_MUTEX_MODE_H_
