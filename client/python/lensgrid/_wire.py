"""numpy arrays <-> lensgrid.v1.Tensor, and reassembly of streamed TensorChunks."""
import numpy as np

from lensgrid.v1 import tensor_pb2

_TO_NUMPY = {
    tensor_pb2.F32: np.dtype("<f4"),
    tensor_pb2.F16: np.dtype("<f2"),
    tensor_pb2.I64: np.dtype("<i8"),
    tensor_pb2.I32: np.dtype("<i4"),
    tensor_pb2.BOOL: np.dtype("bool"),
    tensor_pb2.BF16: np.dtype("<u2"),  # widened to float32 after reassembly
}
_FROM_NUMPY = {
    np.dtype("float32"): tensor_pb2.F32,
    np.dtype("float16"): tensor_pb2.F16,
    np.dtype("int64"): tensor_pb2.I64,
    np.dtype("int32"): tensor_pb2.I32,
    np.dtype("bool"): tensor_pb2.BOOL,
}


def to_tensor(array, name=""):
    """A numpy array (float64 becomes float32) as an inline Tensor message."""
    a = np.asarray(array)
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    if a.dtype not in _FROM_NUMPY:
        raise TypeError(f"{name or 'tensor'}: numpy dtype {a.dtype} is not sent on the wire "
                        "(use float32, float16, int64, int32 or bool)")
    a = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False))
    return tensor_pb2.Tensor(name=name, dtype=_FROM_NUMPY[a.dtype], shape=list(a.shape),
                             data=a.tobytes())


def from_bytes(dtype, shape, data):
    """Raw little-endian bytes -> numpy array (BF16 widened to float32)."""
    arr = np.frombuffer(data, dtype=_TO_NUMPY[dtype]).reshape(tuple(shape))
    if dtype == tensor_pb2.BF16:
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def from_tensor(t):
    return from_bytes(t.dtype, t.shape, t.data)


class Assembler:
    """Collects ordered TensorChunk messages into whole numpy arrays."""

    def __init__(self):
        self.tensors = {}  # name -> array, in arrival order
        self._current = None  # (name, dtype, shape, buffer, filled)

    def add(self, chunk):
        if self._current is None:
            if chunk.offset != 0:
                raise RuntimeError(f"stream: tensor {chunk.name!r} starts at offset {chunk.offset}")
            buf = bytearray(chunk.total_bytes)
            self._current = [chunk.name, chunk.dtype, list(chunk.shape), buf, 0]
        cur = self._current
        if chunk.name != cur[0] or chunk.offset != cur[4]:
            raise RuntimeError(f"stream: chunk of {chunk.name!r} at offset {chunk.offset} while "
                               f"{cur[0]!r} expected offset {cur[4]}")
        n = len(chunk.data)
        if cur[4] + n > len(cur[3]):
            raise RuntimeError(f"stream: tensor {cur[0]!r} got more than its {len(cur[3])} bytes")
        cur[3][cur[4]:cur[4] + n] = chunk.data
        cur[4] += n
        if cur[4] == len(cur[3]):
            self.tensors[cur[0]] = from_bytes(cur[1], cur[2], cur[3])
            self._current = None

    def finish(self, expected_names):
        if self._current is not None:
            raise RuntimeError(f"stream ended inside tensor {self._current[0]!r}")
        if list(self.tensors) != list(expected_names):
            raise RuntimeError(f"stream: got tensors {list(self.tensors)}, header announced "
                               f"{list(expected_names)}")
        return self.tensors
