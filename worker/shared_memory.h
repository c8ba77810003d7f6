// Same-host shared memory (Worker API 2.1, as Triton's system shared-memory
// extension): POSIX shared-memory objects that clients on the worker's host
// create and attach, and the writing of a reply's tensors into one of them
// instead of the stream. No gRPC and no LibTorch here; the service adapts it.
//
//   SharedMemoryRegions regions({});
//   auto attached = regions.Attach("/lensgrid-3f2a...", 1 << 30, caller.name);
//   // a run with RunOptions.shared_memory = {attached->region_id, 0, 0}:
//   auto writer = regions.Reserve(target, caller.name);   // before the run
//   LG_RETURN_IF_ERROR(WriteTensorsToRegion(**writer, &result.tensors, &result.header));
//   regions.Detach(attached->region_id);  // the client's AttachSharedMemory call ended
//
// Checks: a name of the lensgrid form; an object that exists, is a regular
// file owned by the worker's user and not writable by group or others, and
// holds the bytes asked for; a bounded number of regions. A region is used only
// by the caller that attached it, within its bounds, and by one call at a time
// per byte range. A detached region is unmapped once the last write into it
// ends.
#ifndef LENSGRID_WORKER_SHARED_MEMORY_H_
#define LENSGRID_WORKER_SHARED_MEMORY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/tensor_chunks.h"
#include "lensgrid/v1/worker.pb.h"

namespace lensgrid {

inline constexpr uint64_t kRegionAlignment = 64;
inline constexpr char kSharedMemoryPrefix[] = "/lensgrid-";

// INVALID_ARGUMENT unless `name` is "/lensgrid-" then 1-200 of [A-Za-z0-9._-].
absl::Status ValidateSharedMemoryName(absl::string_view name);

// Offsets for tensors of `sizes` bytes placed in order from `begin`, each
// aligned to kRegionAlignment; RESOURCE_EXHAUSTED (with the bytes needed and
// available) when they would end past `end`.
absl::StatusOr<std::vector<uint64_t>> LayoutInRegion(absl::Span<const uint64_t> sizes,
                                                     uint64_t begin, uint64_t end);

struct SharedMemoryLimits {
  int max_regions = 64;                           // attached at once
  uint64_t max_region_bytes = uint64_t{1} << 40;  // one mapping
};

// A region's mapping, unmapped (and its descriptor closed) when the last
// holder lets go.
struct MappedRegion {
  std::string name;
  std::string owner;  // Caller::name of the client that attached it
  int fd = -1;        // kept to see whether the client shrank the object
  uint8_t* base = nullptr;
  uint64_t size = 0;
  ~MappedRegion();
};

// Copies `n` bytes into a shared mapping; false when a page faulted (SIGBUS:
// the object was truncated under the mapping) instead of the process dying.
// Installs a SIGBUS handler once; faults outside such a copy still kill.
bool CopyIntoSharedMapping(uint8_t* dst, const uint8_t* src, size_t n);

class SharedMemoryRegions {
 public:
  struct Attached {
    std::string region_id;
    uint64_t byte_size = 0;
  };
  // A byte range of a region reserved for one reply; releases it when destroyed.
  class Writer {
   public:
    ~Writer();
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;
    uint8_t* base() const { return region_->base; }
    const MappedRegion& region() const { return *region_; }
    uint64_t begin() const { return begin_; }
    uint64_t end() const { return end_; }

   private:
    friend class SharedMemoryRegions;
    Writer(SharedMemoryRegions* owner, std::string region_id, std::shared_ptr<MappedRegion> region,
           uint64_t begin, uint64_t end);
    SharedMemoryRegions* owner_;
    std::string region_id_;
    std::shared_ptr<MappedRegion> region_;
    uint64_t begin_;
    uint64_t end_;
  };

  explicit SharedMemoryRegions(SharedMemoryLimits limits) : limits_(limits) {}

  // Opens and maps [0, byte_size) of the object `name` for `owner`.
  // INVALID_ARGUMENT: a bad name, a zero or oversized byte_size, an object
  // smaller than byte_size; NOT_FOUND: no such object; PERMISSION_DENIED: not
  // a regular file, owned by another user, or writable by group or others;
  // RESOURCE_EXHAUSTED: max_regions attached already.
  absl::StatusOr<Attached> Attach(absl::string_view name, uint64_t byte_size, std::string owner);
  // Forgets the region (false when unknown); writes in progress finish first.
  bool Detach(const std::string& region_id);
  // Reserves target's range of a region `owner` attached. NOT_FOUND for an
  // unknown region or another caller's; INVALID_ARGUMENT for a range outside
  // the region; FAILED_PRECONDITION while another reply writes an overlapping range.
  absl::StatusOr<std::unique_ptr<Writer>> Reserve(const v1::SharedMemoryTarget& target,
                                                  const std::string& owner);
  int size() const;

 private:
  struct Entry {
    std::shared_ptr<MappedRegion> region;
    std::vector<std::pair<uint64_t, uint64_t>> busy;  // reserved [begin, end)
  };
  void Release(const std::string& region_id, uint64_t begin, uint64_t end);

  const SharedMemoryLimits limits_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> regions_ ABSL_GUARDED_BY(mu_);
};

// Copies `tensors` into the writer's range (laid out by LayoutInRegion), lists
// them in `header` with their region_offset, sets header->in_shared_memory and
// empties `tensors` (nothing is left to stream). RESOURCE_EXHAUSTED when they
// do not fit; nothing is written then. FAILED_PRECONDITION when the client
// shrank the object under the mapping (checked first, and a fault during the
// copy is caught: a client cannot crash the worker this way).
absl::Status WriteTensorsToRegion(const SharedMemoryRegions::Writer& writer,
                                  std::vector<TensorBytes>* tensors, v1::RunHeader* header);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_SHARED_MEMORY_H_
