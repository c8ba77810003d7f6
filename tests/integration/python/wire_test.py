#!/usr/bin/python3
"""lensgrid._wire's hand-written protobuf framing (split_response) and Assembler, without
sockets: replies split by hand equal protobuf's own parse (field order, unknown fields, a
repeated data field, packed and unpacked shapes), tensors reassemble bit for bit from any
chunking, and malformed bytes are a RuntimeError that says what is wrong. A small reply's
tensors inline in its header (RunHeader.inline_chunks, Worker API 2.2) read as the same
tensors streamed, and the replies that mix the two forms are clear errors.

usage: wire_test.py INSTALL_DIR
"""
import sys
import unittest

INSTALL = sys.argv[1]
del sys.argv[1]
sys.path.insert(0, INSTALL)

import numpy as np  # noqa: E402
from lensgrid import _wire  # noqa: E402
from lensgrid.errors import Error  # noqa: E402
from lensgrid.worker import read_run_reply  # noqa: E402
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


def run_tensors(rng):
    """name -> (array, wire dtype) of a small reply: F32 logits, an F16 activation, BF16 bits,
    an empty tensor and a scalar."""
    return {
        "logits": (rng.normal(size=(2, 3, 5)).astype("<f4"), tensor_pb2.F32),
        "blocks.0.hook_resid_post": (rng.normal(size=(2, 3, 4)).astype("<f2"), tensor_pb2.F16),
        "blocks.0.attn.hook_z": (rng.integers(0, 1 << 16, size=(2, 3, 2, 2), dtype=np.uint16),
                                 tensor_pb2.BF16),
        "empty": (np.zeros((0, 4), "<f4"), tensor_pb2.F32),
        "loss": (np.array(2.5, "<f4"), tensor_pb2.F32),
    }


def whole_chunk(name, array, dtype):
    return tensor_pb2.TensorChunk(name=name, dtype=dtype, shape=list(array.shape),
                                  total_bytes=array.nbytes, offset=0, data=array.tobytes())


def run_header(tensors):
    header = worker_pb2.RunHeader(weights_sha256="cd" * 32,
                                  total_bytes=sum(a.nbytes for a, _ in tensors.values()))
    header.tokens.CopyFrom(tensor_pb2.Tensor(name="tokens", dtype=tensor_pb2.I64, shape=[2, 3],
                                             data=np.arange(6, dtype="<i8").tobytes()))
    for name, (a, dtype) in tensors.items():
        header.tensors.add(name=name, dtype=dtype, shape=list(a.shape), num_bytes=a.nbytes)
    return header


def inline_reply(tensors, header=None):
    """One RunResponse: the header with every tensor in inline_chunks."""
    header = header if header is not None else run_header(tensors)
    for name, (a, dtype) in tensors.items():
        header.inline_chunks.add().CopyFrom(whole_chunk(name, a, dtype))
    return worker_pb2.RunResponse(header=header).SerializeToString()


def streamed_reply(tensors, chunk_bytes=7):
    """The header, then each tensor in chunks of chunk_bytes (the metadata on the first)."""
    out = [worker_pb2.RunResponse(header=run_header(tensors)).SerializeToString()]
    for name, (a, dtype) in tensors.items():
        data = a.tobytes()
        for offset in range(0, max(len(data), 1), chunk_bytes):
            msg = tensor_pb2.TensorChunk(name=name, offset=offset,
                                         data=data[offset:offset + chunk_bytes])
            if offset == 0:
                msg.dtype, msg.total_bytes = dtype, len(data)
                msg.shape.extend(a.shape)
            out.append(worker_pb2.RunResponse(chunk=msg).SerializeToString())
    return out


class InlineTest(unittest.TestCase):
    def test_split_header_with_inline_chunks(self):
        tensors = run_tensors(np.random.default_rng(2))
        raw = inline_reply(tensors)
        full = worker_pb2.RunResponse.FromString(raw).header
        header, chunk, inline = _wire.split_response(raw, worker_pb2.RunHeader, inline_field=7)
        self.assertIsNone(chunk)
        expect = worker_pb2.RunHeader()
        expect.CopyFrom(full)
        expect.ClearField("inline_chunks")
        self.assertEqual(header, expect)  # the header is parsed without its inline chunks
        self.assertEqual(len(inline), len(tensors))
        for (c, data), want in zip(inline, full.inline_chunks):
            self.assertIsInstance(data, memoryview)  # over raw, not a copy
            self.assertEqual(bytes(data), want.data)
            meta = tensor_pb2.TensorChunk()
            meta.CopyFrom(want)
            meta.ClearField("data")
            self.assertEqual(c, meta)
        # Without inline_field the header is protobuf's whole parse, as before.
        header, chunk, data = _wire.split_response(raw, worker_pb2.RunHeader)
        self.assertEqual(header, full)
        self.assertIsNone(data)
        # A header without inline chunks: an empty list.
        plain = worker_pb2.RunResponse(header=run_header(tensors)).SerializeToString()
        _, _, inline = _wire.split_response(plain, worker_pb2.RunHeader, inline_field=7)
        self.assertEqual(inline, [])

    def test_inline_and_streamed_replies_read_alike_bit_for_bit(self):
        tensors = run_tensors(np.random.default_rng(3))
        names = list(tensors)
        h1, a1 = read_run_reply([inline_reply(tensors)])
        got_inline = a1.finish(names)
        for chunk_bytes in (1, 7, 1 << 20):
            h2, a2 = read_run_reply(streamed_reply(tensors, chunk_bytes))
            got_streamed = a2.finish(names)
            self.assertEqual(list(got_inline), list(got_streamed))
            for name in names:
                x, y = got_inline[name], got_streamed[name]
                self.assertEqual((x.dtype, x.shape), (y.dtype, y.shape), name)
                self.assertEqual(x.tobytes(), y.tobytes(), name)
            self.assertEqual(h1.tokens, h2.tokens)
            self.assertEqual(list(h1.tensors), list(h2.tensors))
        for name, (a, dtype) in tensors.items():
            want = (a.astype(np.uint32) << 16).view(np.float32) if dtype == tensor_pb2.BF16 else a
            self.assertEqual(got_inline[name].tobytes(), want.tobytes(), name)
            self.assertTrue(got_inline[name].flags.writeable, name)  # its own buffer

    def test_mixed_or_inconsistent_replies_are_clear_errors(self):
        tensors = run_tensors(np.random.default_rng(4))
        inline = inline_reply(tensors)
        streamed = streamed_reply(tensors)
        a, dtype = tensors["logits"]
        extra = worker_pb2.RunResponse(chunk=whole_chunk("logits", a, dtype)).SerializeToString()
        cases = [
            ([inline, extra], "came after a header that carried the tensors inline"),
            ([inline, streamed[1]], "came after a header that carried the tensors inline"),
            ([streamed[1], inline], "a tensor chunk came before the header"),
            ([inline, inline], "two headers"),
            ([streamed[0], streamed[0]], "two headers"),
        ]
        shm_header = run_header(tensors)
        shm_header.in_shared_memory = True
        cases.append(([inline_reply(tensors, shm_header)], "in shared memory and also carries"))
        cut = run_header(tensors)
        cut.inline_chunks.add().CopyFrom(tensor_pb2.TensorChunk(
            name="logits", dtype=dtype, shape=list(a.shape), total_bytes=a.nbytes,
            data=a.tobytes()[:-4]))
        cases.append(([worker_pb2.RunResponse(header=cut).SerializeToString()],
                      "inline chunks end inside tensor 'logits'"))
        bad = run_header(tensors)
        bad.inline_chunks.add().CopyFrom(whole_chunk("logits", a, dtype))
        bad.inline_chunks[0].offset = 8
        cases.append(([worker_pb2.RunResponse(header=bad).SerializeToString()],
                      "starts at offset 8"))
        # An inline chunk's data with the wrong wire type, found by the hand-written framing.
        body = field(5, 2, b"x" * 64) + field(7, 2, field(1, 2, b"logits") + field(6, 0, 3))
        cases.append(([field(1, 2, body)], "an inline chunk's data has wire type 0"))
        cases.append(([field(1, 2, field(7, 0, 1))], "the header's inline chunk has wire type 0"))
        for replies, message in cases:
            with self.subTest(message=message):
                with self.assertRaises(RuntimeError) as cm:
                    read_run_reply(replies)
                self.assertIn(message, str(cm.exception))
                self.assertTrue(str(cm.exception).startswith("stream: "), str(cm.exception))
        with self.assertRaisesRegex(Error, "no header"):
            read_run_reply([])
        # The header's tensors must all be there: the assembler's finish says which are missing.
        h, asm = read_run_reply([inline_reply(dict(list(tensors.items())[:2]),
                                              run_header(tensors))])
        with self.assertRaisesRegex(RuntimeError, "header announced"):
            asm.finish([t.name for t in h.tensors])


if __name__ == "__main__":
    unittest.main(verbosity=2)
