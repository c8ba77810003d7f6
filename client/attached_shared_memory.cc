#include "client/attached_shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

std::string RandomName() {
  std::random_device random;
  std::string name = "/lensgrid-";
  for (int i = 0; i < 4; ++i) absl::StrAppendFormat(&name, "%08x", random());
  return name;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AttachedSharedMemory>> AttachedSharedMemory::Create(
    WorkerClient* worker, uint64_t byte_size) {
  if (byte_size == 0) return absl::InvalidArgumentError("a shared memory region needs > 0 bytes");
  std::unique_ptr<AttachedSharedMemory> region(new AttachedSharedMemory());
  region->name_ = RandomName();
  const int fd = shm_open(region->name_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  region->linked_ = fd >= 0;
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("shm_open(\"", region->name_, "\"): ", std::strerror(errno)));
  }
  void* base = MAP_FAILED;
  int err = 0;
  // posix_fallocate, not ftruncate: the pages are reserved now, so a full
  // /dev/shm fails here rather than when the worker writes.
  if ((err = posix_fallocate(fd, 0, static_cast<off_t>(byte_size))) == 0) {
    base = mmap(nullptr, byte_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  if (err == 0) err = errno;
  close(fd);
  if (base == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot make ", byte_size,
                                                     " bytes of shared memory \"", region->name_,
                                                     "\": ", std::strerror(err)));
  }
  region->base_ = static_cast<uint8_t*>(base);
  region->size_ = byte_size;
  v1::AttachSharedMemoryRequest request;
  request.set_name(region->name_);
  request.set_byte_size(byte_size);
  region->call_ = worker->AttachSharedMemory(&region->ctx_, request);
  v1::SharedMemoryRegion attached;
  if (!region->call_->Read(&attached)) {
    absl::Status status = FromGrpcStatus(region->call_->Finish());
    region->call_.reset();
    if (status.ok()) status = absl::InternalError("AttachSharedMemory ended without a region");
    return status;  // the destructor unmaps and unlinks
  }
  region->region_id_ = attached.region_id();
  // The worker has it mapped: the name can go now, so no object outlives
  // this process, however it ends.
  shm_unlink(region->name_.c_str());
  region->linked_ = false;
  return region;
}

void AttachedSharedMemory::Release() {
  if (call_ != nullptr) {
    ctx_.TryCancel();  // the worker detaches when the call ends
    (void)call_->Finish();
    call_.reset();
  }
  if (base_ != nullptr) munmap(base_, size_);
  base_ = nullptr;
  if (linked_) shm_unlink(name_.c_str());
  linked_ = false;
}

AttachedSharedMemory::~AttachedSharedMemory() { Release(); }

v1::SharedMemoryTarget AttachedSharedMemory::Target(uint64_t offset, uint64_t byte_size) const {
  v1::SharedMemoryTarget target;
  target.set_region_id(region_id_);
  target.set_offset(offset);
  target.set_byte_size(byte_size);
  return target;
}

absl::StatusOr<std::vector<TensorView>> AttachedSharedMemory::Views(
    const v1::RunHeader& header) const {
  if (!header.in_shared_memory() && header.tensors_size() > 0) {
    return absl::InternalError("the reply's tensors were streamed, not written to shared memory");
  }
  std::vector<TensorView> views;
  for (const v1::TensorMeta& meta : header.tensors()) {
    const std::string what = absl::StrCat("shared memory tensor \"", meta.name(), "\"");
    TensorView view;
    view.name = meta.name();
    absl::StatusOr<TensorDType> dtype = FromProtoDType(meta.dtype(), what);
    if (!dtype.ok()) return absl::InternalError(dtype.status().message());
    view.dtype = *dtype;
    view.shape.assign(meta.shape().begin(), meta.shape().end());
    absl::StatusOr<uint64_t> expected = ExpectedByteSize(view.dtype, view.shape, what);
    if (!expected.ok() || *expected != meta.num_bytes()) {
      return absl::InternalError(
          absl::StrCat(what, ": ", meta.num_bytes(), " bytes do not match its dtype and shape"));
    }
    if (meta.region_offset() > size_ || meta.num_bytes() > size_ - meta.region_offset()) {
      return absl::InternalError(absl::StrCat(what, " at [", meta.region_offset(), ", +",
                                              meta.num_bytes(), ") is outside the region's ", size_,
                                              " bytes"));
    }
    view.bytes = absl::Span<const uint8_t>(base_ + meta.region_offset(), meta.num_bytes());
    views.push_back(std::move(view));
  }
  return views;
}

}  // namespace lensgrid
