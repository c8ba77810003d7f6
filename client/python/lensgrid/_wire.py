"""numpy arrays <-> lensgrid.v1.Tensor, and reassembly of streamed TensorChunks.

Streamed replies (RunResponse, GetResultResponse: field 1 the header, field 2 a TensorChunk)
arrive as the raw bytes gRPC received. `split_response` walks their protobuf framing by hand to
find the chunk's `data` (TensorChunk field 6) as a memoryview over those bytes, and parses only
the small rest with the generated classes; `Assembler.add` copies the data once, into the one
buffer allocated per tensor, and numpy views that buffer. So a tensor's bytes are copied once
after gRPC hands them over (protobuf parsing would copy them into a `bytes` field first, then
into the tensor). A small reply's tensors inlined in its header (RunHeader.inline_chunks, Worker
API 2.2) are found the same way, and copied once too.
"""
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


def numpy_dtype(dtype):
    """The numpy dtype of a wire DType's bytes (BF16: its raw uint16 bits)."""
    if dtype not in _TO_NUMPY:
        raise RuntimeError(f"stream: unknown tensor dtype {dtype}")
    return _TO_NUMPY[dtype]


def from_bytes(dtype, shape, data):
    """Raw little-endian bytes -> numpy array (BF16 widened to float32)."""
    arr = np.frombuffer(data, dtype=numpy_dtype(dtype)).reshape(tuple(shape))
    if dtype == tensor_pb2.BF16:
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def from_tensor(t):
    return from_bytes(t.dtype, t.shape, t.data)


# --- the protobuf framing, by hand (https://protobuf.dev/programming-guides/encoding/) ---------

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_DATA_FIELD = 6  # TensorChunk.data


def _varint(buf, pos, end, what):
    """(value, next position) of the varint at buf[pos]; buf is a memoryview of bytes."""
    value = shift = 0
    while True:
        if pos >= end:
            raise RuntimeError(f"stream: malformed message: {what} ends inside a varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift >= 64:
            raise RuntimeError(f"stream: malformed message: {what} has a varint over 10 bytes")


def _fields(buf, pos, end, what):
    """Yields (field number, wire type, field start, value start, value end) for each field of
    the message in buf[pos:end]; for a varint the value's range is the varint's bytes."""
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos, end, what)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise RuntimeError(f"stream: malformed message: {what} has field number 0")
        if wire == _VARINT:
            _, after = _varint(buf, pos, end, what)
        elif wire == _I64:
            after = pos + 8
        elif wire == _I32:
            after = pos + 4
        elif wire == _LEN:
            size, pos = _varint(buf, pos, end, what)
            after = pos + size
        else:
            raise RuntimeError(f"stream: malformed message: {what} has field {number} of "
                               f"unsupported wire type {wire}")
        if after > end:
            raise RuntimeError(f"stream: malformed message: {what}'s field {number} runs "
                               f"{after - end} bytes past its end")
        yield number, wire, start, pos, after
        pos = after


def split_response(raw, header_type, chunk_type=tensor_pb2.TensorChunk, inline_field=None):
    """One streamed reply's serialized bytes (a RunResponse or GetResultResponse: oneof header =
    1, chunk = 2) -> (header, None, None) or (None, chunk, data): the header parsed as
    header_type; the chunk's fields but data parsed as chunk_type, and its data as a memoryview
    over raw (no copy). RuntimeError for framing that is not such a message.

    inline_field: the number of the header's repeated chunk_type field that carries a small
    reply's tensors (RunHeader.inline_chunks, 7; Worker API 2.2). With it a header comes back
    as (header, None, inline): the header parsed without that field, and inline a list of
    (chunk, data), each split as a streamed chunk is (data a memoryview over raw), in order."""
    buf = memoryview(raw).cast("B") if not isinstance(raw, memoryview) else raw
    item = None  # (field number, start, end): the oneof's last field wins, as in protobuf
    for number, wire, _, start, end in _fields(buf, 0, len(buf), "the reply"):
        if number in (1, 2):
            if wire != _LEN:
                raise RuntimeError(f"stream: malformed message: the reply's field {number} "
                                   f"has wire type {wire}, not a message")
            item = (number, start, end)
    if item is None:
        raise RuntimeError("stream: malformed message: a reply with neither header nor chunk")
    number, start, end = item
    if number == 1:
        if inline_field is None:
            return _parse(header_type, buf[start:end], "header"), None, None
        rest, inline = [], []
        for field, wire, fstart, vstart, vend in _fields(buf, start, end, "the header"):
            if field == inline_field:
                if wire != _LEN:
                    raise RuntimeError(f"stream: malformed message: the header's inline chunk "
                                       f"has wire type {wire}, not a message")
                inline.append(_split_chunk(buf, vstart, vend, chunk_type, "an inline chunk"))
            else:
                rest.append(buf[fstart:vend])
        return _parse(header_type, _join(rest), "header"), None, inline
    chunk, data = _split_chunk(buf, start, end, chunk_type, "a chunk")
    return None, chunk, data


def _split_chunk(buf, start, end, chunk_type, what):
    """The chunk_type message in buf[start:end] -> (its fields but data, parsed; its data as a
    memoryview over buf). what: "a chunk", "an inline chunk" (for errors)."""
    data, rest = buf[0:0], []
    for field, wire, fstart, vstart, vend in _fields(buf, start, end, what):
        if field == _DATA_FIELD:
            if wire != _LEN:
                raise RuntimeError(f"stream: malformed message: {what}'s data has wire type "
                                   f"{wire}, not bytes")
            data = buf[vstart:vend]  # a repeated singular field: the last one wins
        else:
            rest.append(buf[fstart:vend])
    return _parse(chunk_type, _join(rest), what.split(" ", 1)[1]), data


def _join(parts):
    """Pieces of a message's bytes (memoryviews) as one bytes object."""
    return b"".join(parts) if len(parts) != 1 else parts[0].tobytes()


def _parse(message_type, data, what):
    try:
        return message_type.FromString(data if isinstance(data, bytes) else data.tobytes())
    except Exception as e:  # google.protobuf.message.DecodeError
        raise RuntimeError(f"stream: malformed {what}: {e}") from None


def identity(raw):
    """A response_deserializer that keeps the serialized bytes as gRPC received them."""
    return raw


def raw_stream(channel, pb2_module, service, method):
    """The server-streaming call SERVICE/METHOD (from pb2_module's descriptor, so a wrong name
    is a KeyError here) on channel, with its replies left as the serialized bytes gRPC
    received, for split_response."""
    m = pb2_module.DESCRIPTOR.services_by_name[service].methods_by_name[method]
    if not m.server_streaming:
        raise ValueError(f"{m.full_name} is not server-streaming")
    return channel.unary_stream(f"/{m.containing_service.full_name}/{m.name}",
                                request_serializer=_serialize, response_deserializer=identity)


def _serialize(message):
    return message.SerializeToString()


class Assembler:
    """Collects ordered TensorChunks into whole numpy arrays: one buffer allocated per tensor,
    each chunk's data copied into it once."""

    def __init__(self):
        self.tensors = {}  # name -> array, in arrival order
        self._current = None  # [name, dtype, shape, buffer (uint8 array), filled]

    def add(self, chunk, data=None):
        """chunk: a TensorChunk; data: its data (a bytes-like object) when split off by
        split_response, else chunk.data."""
        if data is None:
            data = chunk.data
        if self._current is None:
            if chunk.offset != 0:
                raise RuntimeError(f"stream: tensor {chunk.name!r} starts at offset {chunk.offset}")
            numpy_dtype(chunk.dtype)
            buf = np.empty(chunk.total_bytes, np.uint8)  # filled below, so not zeroed
            self._current = [chunk.name, chunk.dtype, list(chunk.shape), buf, 0]
        cur = self._current
        if chunk.name != cur[0] or chunk.offset != cur[4]:
            raise RuntimeError(f"stream: chunk of {chunk.name!r} at offset {chunk.offset} while "
                               f"{cur[0]!r} expected offset {cur[4]}")
        n = len(data)
        if cur[4] + n > len(cur[3]):
            raise RuntimeError(f"stream: tensor {cur[0]!r} got more than its {len(cur[3])} bytes")
        cur[3].data[cur[4]:cur[4] + n] = data
        cur[4] += n
        if cur[4] == len(cur[3]):
            self.tensors[cur[0]] = _view(cur[1], cur[2], cur[3])
            self._current = None

    @property
    def receiving(self):
        """The name of the tensor whose chunks are still coming, or None between tensors."""
        return None if self._current is None else self._current[0]

    def finish(self, expected_names):
        if self._current is not None:
            raise RuntimeError(f"stream ended inside tensor {self._current[0]!r}")
        if list(self.tensors) != list(expected_names):
            raise RuntimeError(f"stream: got tensors {list(self.tensors)}, header announced "
                               f"{list(expected_names)}")
        return self.tensors


def _view(dtype, shape, buf):
    """A tensor's whole bytes (a uint8 array) as its numpy array, BF16 widened."""
    size = numpy_dtype(dtype).itemsize
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count * size != len(buf):
        raise RuntimeError(f"stream: a tensor of shape {list(shape)} has {len(buf)} bytes, "
                           f"not {count * size}")
    return from_bytes(dtype, shape, buf)
