"""Same-host shared memory (Worker API 2.1): a worker on this machine writes a reply's tensors
into a POSIX shared-memory object this process created, instead of streaming them.

    with worker.shared_memory(1 << 30) as shm:           # creates and attaches the region
        run = worker.run_with_cache(tokens, shared_memory=shm)
        run["blocks.0.hook_resid_post"]                   # a numpy view into the region
        kept = worker.run_with_cache(tokens, shared_memory=shm, copy=True)  # arrays of its own
    # closed: the worker has detached the region

How: the object is "/dev/shm/lensgrid-<32 random hex digits>", created here (mode 0600, its
pages reserved at once, so a full /dev/shm is an error here rather than a fault in the worker)
and mapped; AttachSharedMemory tells the worker its name, and the worker maps it for as long as that
call stays open. The call is held, unread, until close() cancels it (or this process goes
away, which ends it too): its end is what detaches the region. A run that names the region
(SharedMemoryTarget) gets a header listing each tensor's offset in it, and no chunks.

Arrays from such a run are views into the region, not copies: they stay valid until the next
call that writes the same bytes of the region (any later run with this region or an
overlapping range of it), and after close() they keep whatever the region last held (the
mapping lives as long as an array uses it, so reading one is never a crash). Pass copy=True, or
call .copy() on an array, to keep it past that. BF16 tensors are widened to float32 as in the
streamed path, which copies them anyway.
"""
import mmap
import os
import secrets
import weakref

import grpc
import numpy as np

from lensgrid import _wire
from lensgrid.errors import InvalidInputError, WorkerError
from lensgrid.v1 import tensor_pb2, worker_pb2

# The first Worker API with AttachSharedMemory and SharedMemoryTarget.
SHARED_MEMORY_API = (2, 1)
_SHM_DIR = "/dev/shm"  # where Linux keeps POSIX shared-memory objects (shm_open(3))


class SharedMemory:
    """A shared-memory region attached to one worker: create it with Worker.shared_memory(n).

    .name: the object's shm_open name ("/lensgrid-..."); .byte_size; .region_id: the worker's
    name for it; .closed. The object's name is removed as soon as the worker has mapped it,
    so nothing is left in /dev/shm however this process ends. close() (or leaving the `with`
    block) detaches it from the worker; arrays viewing it keep the last bytes it held.
    """

    def __init__(self, worker, byte_size):
        byte_size = int(byte_size)
        if byte_size <= 0:
            raise InvalidInputError(f"shared memory byte_size must be > 0, got {byte_size}")
        self.name = "/lensgrid-" + secrets.token_hex(16)
        self.byte_size = byte_size
        self.region_id = ""
        self.address = worker.address
        self._call = None
        self._map, path = _create(self.name, byte_size)
        # Unlinks the object and cancels the call if this is dropped without close(),
        # including at interpreter exit.
        self._held = [None]  # the call, once there is one
        self._finalizer = weakref.finalize(self, _release, path, self._held)
        try:
            self._call = worker._stub.AttachSharedMemory(
                worker_pb2.AttachSharedMemoryRequest(name=self.name, byte_size=byte_size))
            self._held[0] = self._call
            region = next(self._call)
        except grpc.RpcError as e:
            self.close()
            raise WorkerError(e.code(), e.details()) from None
        except StopIteration:
            self.close()
            raise WorkerError(grpc.StatusCode.INTERNAL,
                              "AttachSharedMemory ended without naming the region") from None
        except BaseException:
            self.close()
            raise
        self.region_id = region.region_id
        # The worker has it mapped: the name can go now, so nothing is left in /dev/shm
        # however this process ends (even killed).
        _unlink(path)
        if region.byte_size != byte_size:
            self.close()
            raise WorkerError(grpc.StatusCode.INTERNAL,
                              f"the worker attached {region.byte_size} bytes of shared memory, "
                              f"not the {byte_size} asked for")

    @property
    def closed(self):
        return not self._finalizer.alive

    def attached(self):
        """Whether the worker still holds the region (its AttachSharedMemory call is open)."""
        return not self.closed and self._call is not None and self._call.is_active()

    def range(self, offset, byte_size=0):
        """A part of the region, [offset, offset + byte_size) (0: to its end), to pass as
        shared_memory= where calls at the same time must write disjoint bytes."""
        return SharedMemoryRange(self, int(offset), int(byte_size))

    def close(self):
        """Detaches the region from the worker (cancels the call) and unmaps it here once no
        array views it."""
        self._map = None  # unmapped once no array views it any more
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self.closed else f"region {self.region_id}"
        return f"<lensgrid.SharedMemory {self.name} {self.byte_size} bytes, {state}>"

    def _mapping(self, what):
        if self.closed:
            raise InvalidInputError(f"{what}: the shared memory {self.name} is closed")
        return self._map


class SharedMemoryRange:
    """[offset, offset + byte_size) of a SharedMemory (byte_size 0: to its end)."""

    def __init__(self, region, offset, byte_size):
        if offset < 0 or byte_size < 0:
            raise InvalidInputError(f"shared memory range: offset {offset} and byte_size "
                                    f"{byte_size} must be >= 0")
        self.region, self.offset, self.byte_size = region, offset, byte_size

    def target(self):
        return worker_pb2.SharedMemoryTarget(region_id=self.region.region_id, offset=self.offset,
                                             byte_size=self.byte_size)


def as_range(shared_memory):
    """A SharedMemory or SharedMemoryRange -> a SharedMemoryRange."""
    if isinstance(shared_memory, SharedMemory):
        return shared_memory.range(0, 0)
    if isinstance(shared_memory, SharedMemoryRange):
        return shared_memory
    raise InvalidInputError("shared_memory must be a lensgrid.SharedMemory (from "
                            f"Worker.shared_memory) or a range of one, got {shared_memory!r}")


def arrays_in_region(region, header, copy):
    """The tensors a header lists at their region_offset, as numpy views into the region
    (copies with copy=True; BF16 widened to float32). RuntimeError for a header whose tensors
    lie outside the region or disagree with their shapes."""
    buf = region._mapping("reading a reply")
    out = {}
    for meta in header.tensors:
        dtype = _wire.numpy_dtype(meta.dtype)
        count = int(np.prod(meta.shape, dtype=np.int64)) if len(meta.shape) else 1
        if count * dtype.itemsize != meta.num_bytes:
            raise RuntimeError(f"shared memory: tensor {meta.name!r} of shape {list(meta.shape)} "
                               f"has {meta.num_bytes} bytes, not {count * dtype.itemsize}")
        if meta.region_offset + meta.num_bytes > region.byte_size:
            raise RuntimeError(f"shared memory: tensor {meta.name!r} at [{meta.region_offset}, "
                               f"{meta.region_offset + meta.num_bytes}) is outside the "
                               f"{region.byte_size}-byte region")
        arr = np.frombuffer(buf, dtype=dtype, count=count, offset=meta.region_offset)
        arr = arr.reshape(tuple(meta.shape))
        if meta.dtype == tensor_pb2.BF16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif copy:
            arr = arr.copy()
        out[meta.name] = arr
    return out


def _create(name, byte_size):
    """Creates the object (mode 0600, never an existing one) and maps it."""
    path = os.path.join(_SHM_DIR, name.lstrip("/"))
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise InvalidInputError(f"shared memory {name}: cannot create {path}: {e.strerror} "
                                "(POSIX shared memory needs Linux's /dev/shm)") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask: the worker refuses group/other-writable
        # Reserves the pages now: a sparse object on a full /dev/shm would fault the worker
        # (SIGBUS) when it writes, instead of failing here.
        os.posix_fallocate(fd, 0, byte_size)
        return mmap.mmap(fd, byte_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE), path
    except OSError as e:
        os.unlink(path)
        raise InvalidInputError(f"shared memory {name}: cannot size or map {byte_size} bytes: "
                                f"{e.strerror}") from None
    finally:
        os.close(fd)


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _release(path, held):
    call = held[0]
    if call is not None:
        call.cancel()
    _unlink(path)
