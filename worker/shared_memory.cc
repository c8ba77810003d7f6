#include "worker/shared_memory.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <csetjmp>
#include <csignal>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace lensgrid {
namespace {

std::string RandomRegionId() {
  std::random_device random;
  std::string id;
  for (int i = 0; i < 4; ++i) absl::StrAppendFormat(&id, "%08x", random());
  return id;
}

// The copy in progress on this thread (CopyIntoSharedMapping), if any.
// volatile: the store before the memcpy is read only by the signal handler,
// and would otherwise be dropped as dead.
thread_local sigjmp_buf* volatile t_copy_jump = nullptr;
struct sigaction g_previous_bus;

void OnBus(int signal, siginfo_t* info, void* context) {
  if (t_copy_jump != nullptr) siglongjmp(*t_copy_jump, 1);
  // Not a guarded copy: put the previous disposition back; the faulting
  // instruction runs again and faults under it.
  (void)signal;
  (void)info;
  (void)context;
  sigaction(SIGBUS, &g_previous_bus, nullptr);
}

void InstallBusHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_sigaction = &OnBus;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, &g_previous_bus);
  });
}

absl::Status Truncated(const std::string& name, int64_t size, uint64_t needed) {
  return absl::FailedPreconditionError(
      absl::StrCat("shared memory \"", name, "\" was truncated under the mapping (",
                   size >= 0 ? absl::StrCat(size, " bytes left") : std::string("during the copy"),
                   "; the reply needs ", needed, "): attach a new region"));
}

// One copy into a mapping.
struct Piece {
  uint8_t* dst;
  const uint8_t* src;
  size_t n;
};

// Copies every piece, on two threads when there is enough to share (one
// core's memcpy does not saturate memory bandwidth); false when a page
// faulted.
bool CopyPieces(const std::vector<Piece>& pieces) {
  constexpr size_t kShareAbove = size_t{32} << 20;
  size_t total = 0;
  for (const Piece& p : pieces) total += p.n;
  if (total < kShareAbove) {
    for (const Piece& p : pieces) {
      if (p.n > 0 && !CopyIntoSharedMapping(p.dst, p.src, p.n)) return false;
    }
    return true;
  }
  // The second half of the bytes, cut inside a piece where it falls.
  std::vector<Piece> first, second;
  size_t seen = 0;
  for (const Piece& p : pieces) {
    const size_t half = total / 2;
    if (seen >= half) {
      second.push_back(p);
    } else if (seen + p.n <= half) {
      first.push_back(p);
    } else {
      const size_t cut = half - seen;
      first.push_back({p.dst, p.src, cut});
      second.push_back({p.dst + cut, p.src + cut, p.n - cut});
    }
    seen += p.n;
  }
  std::atomic<bool> ok{true};
  auto copy = [&ok](const std::vector<Piece>& list) {
    for (const Piece& p : list) {
      if (p.n > 0 && !CopyIntoSharedMapping(p.dst, p.src, p.n)) {
        ok = false;
        return;
      }
    }
  };
  std::thread helper(copy, std::cref(second));
  copy(first);
  helper.join();
  return ok.load();
}

uint64_t AlignUp(uint64_t n) {
  return (n + kRegionAlignment - 1) / kRegionAlignment * kRegionAlignment;
}

}  // namespace

absl::Status ValidateSharedMemoryName(absl::string_view name) {
  const absl::string_view prefix = kSharedMemoryPrefix;
  if (!absl::StartsWith(name, prefix)) {
    return absl::InvalidArgumentError(absl::StrCat("shared memory name \"", name.substr(0, 64),
                                                   "\" must start with \"", prefix, "\""));
  }
  const absl::string_view rest = name.substr(prefix.size());
  if (rest.empty() || rest.size() > 200) {
    return absl::InvalidArgumentError(absl::StrCat("shared memory name \"", name.substr(0, 64),
                                                   "\" needs 1-200 characters after \"", prefix,
                                                   "\", has ", rest.size()));
  }
  for (char c : rest) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat("shared memory name \"", name.substr(0, 64),
                                                     "\" may only use [A-Za-z0-9._-] after \"",
                                                     prefix, "\""));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> LayoutInRegion(absl::Span<const uint64_t> sizes,
                                                     uint64_t begin, uint64_t end) {
  std::vector<uint64_t> offsets;
  offsets.reserve(sizes.size());
  uint64_t at = AlignUp(begin);
  for (uint64_t n : sizes) {
    if (at > end || n > end - at) {
      uint64_t needed = at - begin;
      for (size_t i = offsets.size(); i < sizes.size(); ++i) needed = AlignUp(needed) + sizes[i];
      return absl::ResourceExhaustedError(absl::StrCat(
          "the reply needs ", needed, " bytes of shared memory (", sizes.size(),
          " tensors, each at a 64-byte boundary); the target range has ", end - begin));
    }
    offsets.push_back(at);
    at = AlignUp(at + n);
  }
  return offsets;
}

bool CopyIntoSharedMapping(uint8_t* dst, const uint8_t* src, size_t n) {
  InstallBusHandler();
  sigjmp_buf jump;
  if (sigsetjmp(jump, /*savesigs=*/1) != 0) {
    t_copy_jump = nullptr;
    return false;
  }
  t_copy_jump = &jump;
  std::memcpy(dst, src, n);
  t_copy_jump = nullptr;
  return true;
}

MappedRegion::~MappedRegion() {
  if (base != nullptr) munmap(base, size);
  if (fd >= 0) close(fd);
}

SharedMemoryRegions::Writer::Writer(SharedMemoryRegions* owner, std::string region_id,
                                    std::shared_ptr<MappedRegion> region, uint64_t begin,
                                    uint64_t end)
    : owner_(owner),
      region_id_(std::move(region_id)),
      region_(std::move(region)),
      begin_(begin),
      end_(end) {}

SharedMemoryRegions::Writer::~Writer() { owner_->Release(region_id_, begin_, end_); }

absl::StatusOr<SharedMemoryRegions::Attached> SharedMemoryRegions::Attach(absl::string_view name,
                                                                          uint64_t byte_size,
                                                                          std::string owner) {
  if (limits_.max_regions == 0) {
    return absl::FailedPreconditionError(
        "this worker serves no shared memory (--max-shared-memory-regions 0)");
  }
  if (absl::Status valid = ValidateSharedMemoryName(name); !valid.ok()) return valid;
  if (byte_size == 0) {
    return absl::InvalidArgumentError("AttachSharedMemoryRequest.byte_size must be > 0");
  }
  if (byte_size > limits_.max_region_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("AttachSharedMemoryRequest.byte_size ",
                                                   byte_size, " is over this worker's limit of ",
                                                   limits_.max_region_bytes));
  }
  {
    absl::MutexLock lock(&mu_);
    if (static_cast<int>(regions_.size()) >= limits_.max_regions) {
      return absl::ResourceExhaustedError(
          absl::StrCat("this worker has ", regions_.size(),
                       " shared memory regions attached, its limit; detach one first"));
    }
  }
  const std::string path(name);
  const int fd = shm_open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0);
  if (fd < 0) {
    const int err = errno;
    const std::string why = absl::StrCat("shared memory \"", path, "\": ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(why + " (create it on the worker's host first)");
    if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(why);
    return absl::InvalidArgumentError(why);
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return absl::InternalError(absl::StrCat("fstat of \"", path, "\": ", std::strerror(err)));
  }
  absl::Status refused;
  if (!S_ISREG(st.st_mode)) {
    refused = absl::PermissionDeniedError(absl::StrCat("\"", path, "\" is not a regular file"));
  } else if (st.st_uid != geteuid()) {
    refused = absl::PermissionDeniedError(absl::StrCat("\"", path, "\" is owned by uid ", st.st_uid,
                                                       "; the worker runs as uid ", geteuid()));
  } else if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    refused = absl::PermissionDeniedError(absl::StrFormat(
        "\"%s\" is writable by group or others (mode %04o); create it with mode 0600", path,
        st.st_mode & 07777));
  } else if (static_cast<uint64_t>(st.st_size) < byte_size) {
    refused = absl::InvalidArgumentError(
        absl::StrCat("\"", path, "\" holds ", st.st_size, " bytes; asked to map ", byte_size));
  }
  if (!refused.ok()) {
    close(fd);
    return refused;
  }
  void* base = mmap(nullptr, byte_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int map_errno = errno;
  if (base == MAP_FAILED) {
    close(fd);
    return absl::ResourceExhaustedError(absl::StrCat("cannot map ", byte_size, " bytes of \"", path,
                                                     "\": ", std::strerror(map_errno)));
  }
  auto region = std::make_shared<MappedRegion>();
  region->fd = fd;
  region->name = path;
  region->owner = std::move(owner);
  region->base = static_cast<uint8_t*>(base);
  region->size = byte_size;
  Attached attached{RandomRegionId(), byte_size};
  absl::MutexLock lock(&mu_);
  if (static_cast<int>(regions_.size()) >= limits_.max_regions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("this worker has ", regions_.size(),
                     " shared memory regions attached, its limit; detach one first"));
  }
  regions_[attached.region_id].region = std::move(region);
  return attached;
}

bool SharedMemoryRegions::Detach(const std::string& region_id) {
  std::shared_ptr<MappedRegion> last;  // unmapped outside the lock
  absl::MutexLock lock(&mu_);
  auto it = regions_.find(region_id);
  if (it == regions_.end()) return false;
  last = std::move(it->second.region);
  regions_.erase(it);
  return true;
}

absl::StatusOr<std::unique_ptr<SharedMemoryRegions::Writer>> SharedMemoryRegions::Reserve(
    const v1::SharedMemoryTarget& target, const std::string& owner) {
  absl::MutexLock lock(&mu_);
  auto it = regions_.find(target.region_id());
  if (it == regions_.end() || it->second.region->owner != owner) {
    return absl::NotFoundError(
        absl::StrCat("shared memory region \"", target.region_id().substr(0, 64),
                     "\" is not attached by this caller (AttachSharedMemory, and keep that "
                     "call open while using it)"));
  }
  Entry& entry = it->second;
  const uint64_t size = entry.region->size;
  const uint64_t begin = target.offset();
  if (begin > size || target.byte_size() > size - begin) {
    return absl::InvalidArgumentError(absl::StrCat("SharedMemoryTarget [", begin, ", ", begin,
                                                   " + ", target.byte_size(),
                                                   ") is outside the region's ", size, " bytes"));
  }
  const uint64_t end = target.byte_size() == 0 ? size : begin + target.byte_size();
  for (const auto& [b, e] : entry.busy) {
    if (begin < e && b < end) {
      return absl::FailedPreconditionError(absl::StrCat("SharedMemoryTarget [", begin, ", ", end,
                                                        ") overlaps [", b, ", ", e,
                                                        "), which another call is writing"));
    }
  }
  entry.busy.emplace_back(begin, end);
  return std::unique_ptr<Writer>(new Writer(this, target.region_id(), entry.region, begin, end));
}

void SharedMemoryRegions::Release(const std::string& region_id, uint64_t begin, uint64_t end) {
  absl::MutexLock lock(&mu_);
  auto it = regions_.find(region_id);
  if (it == regions_.end()) return;  // detached meanwhile
  auto& busy = it->second.busy;
  for (auto b = busy.begin(); b != busy.end(); ++b) {
    if (b->first == begin && b->second == end) {
      busy.erase(b);
      return;
    }
  }
}

int SharedMemoryRegions::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(regions_.size());
}

absl::Status WriteTensorsToRegion(const SharedMemoryRegions::Writer& writer,
                                  std::vector<TensorBytes>* tensors, v1::RunHeader* header) {
  if (header->tensors_size() != static_cast<int>(tensors->size())) {
    return absl::InternalError(absl::StrCat("the reply's header lists ", header->tensors_size(),
                                            " tensors, the run made ", tensors->size()));
  }
  std::vector<uint64_t> sizes;
  for (const TensorBytes& t : *tensors) sizes.push_back(t.bytes.size());
  absl::StatusOr<std::vector<uint64_t>> offsets =
      LayoutInRegion(sizes, writer.begin(), writer.end());
  if (!offsets.ok()) return offsets.status();
  const MappedRegion& region = writer.region();
  const uint64_t end = offsets->empty() ? 0 : offsets->back() + sizes.back();
  struct stat st {};
  if (fstat(region.fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < end) {
    return Truncated(region.name, st.st_size, end);
  }
  std::vector<Piece> pieces;
  for (size_t i = 0; i < tensors->size(); ++i) {
    const TensorBytes& t = (*tensors)[i];
    pieces.push_back({writer.base() + (*offsets)[i], t.bytes.data(), t.bytes.size()});
    header->mutable_tensors(static_cast<int>(i))->set_region_offset((*offsets)[i]);
  }
  if (!CopyPieces(pieces)) return Truncated(region.name, -1, end);
  tensors->clear();
  header->set_in_shared_memory(true);
  return absl::OkStatus();
}

}  // namespace lensgrid
