// A same-host shared-memory region for a worker's replies (Worker API 2.1):
// created here (a POSIX object "/lensgrid-<random>", mode 0600), mapped, and
// attached to the worker by an AttachSharedMemory call held open while this
// object lives. Runs that name it get their tensors written into it.
//
//   LG_ASSIGN_OR_RETURN(auto region, AttachedSharedMemory::Create(worker.get(), 1 << 30));
//   *request.mutable_options()->mutable_shared_memory() = region->Target();
//   LG_ASSIGN_OR_RETURN(RunReply reply, worker->RunWithCache(request));
//   LG_ASSIGN_OR_RETURN(std::vector<TensorView> views, region->Views(reply.header));
//
// Views point into the region: valid until the next reply written there, or
// until the region is destroyed (which detaches and unmaps it). The object's
// name is removed as soon as the worker has mapped it, so nothing is left in
// /dev/shm however this process ends.
#ifndef LENSGRID_CLIENT_ATTACHED_SHARED_MEMORY_H_
#define LENSGRID_CLIENT_ATTACHED_SHARED_MEMORY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "client/worker_client.h"
#include "common/dtype.h"
#include "lensgrid/v1/worker.pb.h"

namespace lensgrid {

// A tensor of a reply, in place in a shared-memory region.
struct TensorView {
  std::string name;
  TensorDType dtype = TensorDType::kF32;
  std::vector<int64_t> shape;
  absl::Span<const uint8_t> bytes;
};

class AttachedSharedMemory {
 public:
  // Creates, maps and attaches a region of `byte_size` bytes. The worker's
  // error (e.g. FAILED_PRECONDITION from a worker on another host) when it
  // refuses; the object is removed then.
  static absl::StatusOr<std::unique_ptr<AttachedSharedMemory>> Create(WorkerClient* worker,
                                                                      uint64_t byte_size);
  ~AttachedSharedMemory();
  AttachedSharedMemory(const AttachedSharedMemory&) = delete;
  AttachedSharedMemory& operator=(const AttachedSharedMemory&) = delete;

  // Where a run's tensors go: [offset, offset + byte_size) of this region
  // (byte_size 0: to its end).
  v1::SharedMemoryTarget Target(uint64_t offset = 0, uint64_t byte_size = 0) const;
  // The tensors a reply's header lists (in_shared_memory), checked against
  // the region's bounds and their dtype and shape (INTERNAL otherwise).
  absl::StatusOr<std::vector<TensorView>> Views(const v1::RunHeader& header) const;

  const std::string& name() const { return name_; }
  const std::string& region_id() const { return region_id_; }
  uint64_t size() const { return size_; }
  const uint8_t* data() const { return base_; }

 private:
  AttachedSharedMemory() = default;
  void Release();

  std::string name_;
  std::string region_id_;
  uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  bool linked_ = false;      // the name exists (until the worker has mapped it)
  grpc::ClientContext ctx_;  // the AttachSharedMemory call, open while attached
  std::unique_ptr<grpc::ClientReader<v1::SharedMemoryRegion>> call_;
};

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_ATTACHED_SHARED_MEMORY_H_
