#!/usr/bin/python3
"""lensgrid._wire's hand-written protobuf framing (split_response) and Assembler, without
sockets: replies split by hand equal protobuf's own parse (field order, unknown fields, a
repeated data field, packed and unpacked shapes), tensors reassemble bit for bit from any
chunking, and malformed bytes are a RuntimeError that says what is wrong.

usage: wire_test.py INSTALL_DIR
"""
import sys
import unittest

INSTALL = sys.argv[1]
del sys.argv[1]
sys.path.insert(0, INSTALL)

import numpy as np  # noqa: E402
from lensgrid import _wire  # noqa: E402
from lensgrid.v1 import coordinator_pb2, tensor_pb2, worker_pb2  # noqa: E402


def varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(number, wire, payload):
    """One encoded field: payload is bytes (LEN), an int (VARINT) or 4/8 raw bytes."""
    key = varint(number << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    if wire == 0:
        return key + varint(payload)
    return key + payload


def chunk_reply(chunk_bytes):
    return field(2, 2, chunk_bytes)


class SplitTest(unittest.TestCase):
    def split(self, raw, header_type=worker_pb2.RunHeader):
        return _wire.split_response(raw, header_type)

    def test_header_parses_as_protobuf_does(self):
        header = worker_pb2.RunHeader(weights_sha256="ab" * 32, total_bytes=7, in_shared_memory=True)
        header.tensors.add(name="logits", dtype=tensor_pb2.F32, shape=[1, 2, 3], num_bytes=24,
                           region_offset=64)
        got, chunk, data = self.split(worker_pb2.RunResponse(header=header).SerializeToString())
        self.assertEqual(got, header)
        self.assertIsNone(chunk)
        self.assertIsNone(data)

    def test_chunk_fields_and_data_equal_protobufs_parse(self):
        rng = np.random.default_rng(0)
        for size in (0, 1, 127, 128, 300, 70000):
            payload = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            msg = tensor_pb2.TensorChunk(name="blocks.0.hook_resid_post", dtype=tensor_pb2.F16,
                                         shape=[2, 5, 1 << 40], total_bytes=1 << 33,
                                         offset=123456789, data=payload)
            raw = worker_pb2.RunResponse(chunk=msg).SerializeToString()
            header, chunk, data = self.split(raw)
            self.assertIsNone(header)
            self.assertIsInstance(data, memoryview)  # over raw, not a copy
            self.assertEqual(bytes(data), payload)
            expect = tensor_pb2.TensorChunk()
            expect.CopyFrom(msg)
            expect.ClearField("data")
            self.assertEqual(chunk, expect)

    def test_field_order_unknown_fields_and_repeats(self):
        # data first, an unknown field 99 (varint), unknown 100 (fixed64), shape unpacked, data
        # again (the last wins, as in protobuf), and the oneof given twice (the last wins).
        body = (field(6, 2, b"first") + field(99, 0, 5) + field(1, 2, b"x") + field(3, 0, 2)
                + field(3, 0, 3) + field(100, 1, b"\0" * 8) + field(2, 0, tensor_pb2.BF16)
                + field(6, 2, b"second") + field(4, 0, 6))
        raw = field(1, 2, b"") + chunk_reply(body)
        header, chunk, data = self.split(raw)
        expect = worker_pb2.RunResponse.FromString(raw)
        self.assertIsNone(header)
        self.assertEqual(bytes(data), expect.chunk.data)
        self.assertEqual((chunk.name, chunk.dtype, list(chunk.shape), chunk.total_bytes),
                         ("x", tensor_pb2.BF16, [2, 3], 6))
        # A header after a chunk: the header wins.
        header, chunk, _ = self.split(chunk_reply(body) + field(1, 2, b""))
        self.assertEqual(header, worker_pb2.RunHeader())
        self.assertIsNone(chunk)

    def test_result_header_of_the_coordinator(self):
        header = coordinator_pb2.ResultHeader()
        raw = coordinator_pb2.GetResultResponse(header=header).SerializeToString()
        got, _, _ = self.split(raw, coordinator_pb2.ResultHeader)
        self.assertEqual(got, header)

    def test_malformed_bytes_are_clear_errors(self):
        cases = {
            b"": "neither header nor chunk",
            field(7, 0, 1): "neither header nor chunk",
            b"\x12": "ends inside a varint",
            b"\x12\x80": "ends inside a varint",
            b"\x12" + b"\xff" * 10 + b"\x01": "varint over 10 bytes",
            b"\x12\x05\x0a": "runs 4 bytes past its end",
            field(2, 0, 1): "wire type 0, not a message",
            field(1, 5, b"\0\0\0\0"): "wire type 5, not a message",
            b"\x0b": "unsupported wire type 3",
            b"\x00": "field number 0",
            chunk_reply(b"\x32\x05ab"): "field 6 runs 3 bytes past its end",
            chunk_reply(field(6, 0, 3)): "data has wire type 0, not bytes",
            chunk_reply(b"\x0a"): "a chunk ends inside a varint",
            chunk_reply(field(1, 2, b"\xff\xfe")): "malformed chunk",  # name not UTF-8
            chunk_reply(field(3, 2, b"\x80")): "malformed chunk",  # a packed shape cut short
            field(1, 2, b"\x22\x05\x0a"): "malformed header",
            field(1, 2, b"\x08"): "malformed header",
        }
        for raw, message in cases.items():
            with self.subTest(raw=raw):
                with self.assertRaises(RuntimeError) as cm:
                    self.split(raw)
                self.assertIn(message, str(cm.exception))
                self.assertTrue(str(cm.exception).startswith("stream: "), str(cm.exception))


class AssemblerTest(unittest.TestCase):
    def stream(self, name, array, dtype, sizes):
        """The replies carrying array's bytes in chunks of the given sizes (cycled)."""
        data = array.tobytes()
        out, offset, i = [], 0, 0
        while True:
            n = min(sizes[i % len(sizes)], len(data) - offset)
            msg = tensor_pb2.TensorChunk(name=name, offset=offset, data=data[offset:offset + n])
            if offset == 0:
                msg.dtype, msg.total_bytes = dtype, len(data)
                msg.shape.extend(array.shape)
            out.append(worker_pb2.RunResponse(chunk=msg).SerializeToString())
            offset, i = offset + n, i + 1
            if offset == len(data):
                return out

    def assemble(self, replies, names):
        asm = _wire.Assembler()
        for raw in replies:
            _, chunk, data = _wire.split_response(raw, worker_pb2.RunHeader)
            asm.add(chunk, data)
        return asm.finish(names)

    def test_any_chunking_reassembles_bit_for_bit(self):
        rng = np.random.default_rng(1)
        a = rng.normal(size=(3, 7, 11)).astype("<f4")
        h = rng.normal(size=(5, 4)).astype("<f2")
        b = rng.integers(0, 1 << 16, size=(2, 9), dtype=np.uint16)  # BF16 bits
        empty = np.zeros((0, 4), "<f4")
        for sizes in ([1 << 20], [1], [3, 5, 7], [64]):
            replies = (self.stream("a", a, tensor_pb2.F32, sizes)
                       + self.stream("h", h, tensor_pb2.F16, sizes)
                       + self.stream("b", b, tensor_pb2.BF16, sizes)
                       + self.stream("empty", empty, tensor_pb2.F32, sizes))
            got = self.assemble(replies, ["a", "h", "b", "empty"])
            self.assertEqual(got["a"].tobytes(), a.tobytes())
            self.assertEqual(got["a"].shape, a.shape)
            self.assertEqual(got["h"].dtype, np.float16)
            self.assertEqual(got["h"].tobytes(), h.tobytes())
            self.assertEqual(got["b"].tobytes(), (b.astype(np.uint32) << 16).tobytes())
            self.assertEqual(got["b"].dtype, np.float32)
            self.assertEqual(got["empty"].shape, (0, 4))
            self.assertTrue(got["a"].flags.writeable)

    def test_inconsistent_streams_are_clear_errors(self):
        a = np.arange(12, dtype="<f4").reshape(3, 4)
        good = self.stream("a", a, tensor_pb2.F32, [16])
        with self.assertRaisesRegex(RuntimeError, "starts at offset 16"):
            self.assemble(good[1:], ["a"])
        with self.assertRaisesRegex(RuntimeError, "expected offset 16"):
            self.assemble([good[0], good[2]], ["a"])
        with self.assertRaisesRegex(RuntimeError, "stream ended inside tensor 'a'"):
            self.assemble(good[:2], ["a"])
        with self.assertRaisesRegex(RuntimeError, "header announced"):
            self.assemble(good, ["a", "b"])
        too_long = tensor_pb2.TensorChunk(name="a", offset=32, data=bytes(32))
        with self.assertRaisesRegex(RuntimeError, "more than its 48 bytes"):
            self.assemble(good[:2] + [worker_pb2.RunResponse(chunk=too_long).SerializeToString()],
                          ["a"])
        wrong_shape = self.stream("a", a, tensor_pb2.F32, [48])
        chunk = worker_pb2.RunResponse.FromString(wrong_shape[0])
        chunk.chunk.shape[:] = [5, 4]
        with self.assertRaisesRegex(RuntimeError, r"shape \[5, 4\] has 48 bytes, not 80"):
            self.assemble([chunk.SerializeToString()], ["a"])
        chunk.chunk.dtype = 42
        with self.assertRaisesRegex(RuntimeError, "unknown tensor dtype 42"):
            self.assemble([chunk.SerializeToString()], ["a"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
