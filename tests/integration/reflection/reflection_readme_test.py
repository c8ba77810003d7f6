#!/usr/bin/python3
"""README.md's "Any other language: reflection and grpcurl" section, run for real.

grpcurl is not packaged for Debian, so this test is a small grpcurl of its own: it knows no
lensgrid .proto. It asks the worker's reflection service (grpc.reflection.v1alpha) for the
files that define a symbol, builds the messages from those descriptors alone, turns the
command's `-d` JSON into a request with protobuf's JSON parser, calls the method, and prints
replies as grpcurl does (proto JSON, lowerCamelCase). Every `grpcurl` line of the section's
sh block runs against a real worker on the embedded model, with the address rewritten, and:
  - `list` names lensgrid.v1.Worker, grpc.health.v1.Health and the reflection service;
  - `describe lensgrid.v1.Worker` lists its methods;
  - the Tokenize reply equals the README's JSON block;
  - the RunWithCache stream's header and base64 chunks give the tensor the Python client gets
    for the same request, bit for bit.

usage: reflection_readme_test.py LENSGRID_WORKER PROTOC PYTHONPATH SOURCE_DIR
"""
import base64
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import unittest

WORKER_BIN, PROTOC, PY_DIR, SOURCE = sys.argv[1:5]
del sys.argv[1:5]
sys.path.insert(0, PY_DIR)
sys.path.insert(1, os.path.join(SOURCE, "tests", "integration", "worker"))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory  # noqa: E402
import lensgrid  # noqa: E402
from worker_harness import WorkerProcess  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(SOURCE, "models", "lensgrid-tiny")
SECTION = "### Any other language: reflection and grpcurl"


def readme_section():
    with open(os.path.join(SOURCE, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index(SECTION)
    end = text.find("\n#", start + len(SECTION))
    return text[start:end if end >= 0 else len(text)]


def fenced_blocks(section, language):
    return re.findall(r"```" + language + r"\n(.*?)```", section, re.S)


def compile_reflection_proto(out_dir):
    subprocess.run([PROTOC, "-I", HERE, "--python_out", out_dir,
                    os.path.join(HERE, "reflection_v1alpha.proto")], check=True)
    sys.path.insert(0, out_dir)
    import reflection_v1alpha_pb2  # noqa: E402
    return reflection_v1alpha_pb2


class MiniGrpcurl:
    """What grpcurl does with a plaintext address, on reflection alone."""

    def __init__(self, address, reflection_pb2):
        self.channel = grpc.insecure_channel(address)
        self.pb = reflection_pb2
        self.pool = descriptor_pool.DescriptorPool()
        self.factory = message_factory.MessageFactory(self.pool)
        self.loaded = set()
        self.info = self.channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=self.pb.ServerReflectionRequest.SerializeToString,
            response_deserializer=self.pb.ServerReflectionResponse.FromString)

    def close(self):
        self.channel.close()

    def ask(self, **request):
        [reply] = list(self.info(iter([self.pb.ServerReflectionRequest(**request)]), timeout=30))
        if reply.HasField("error_response"):
            raise LookupError(reply.error_response.error_message)
        return reply

    def list_services(self):
        return sorted(s.name for s in self.ask(list_services="").list_services_response.service)

    def _add_files(self, reply):
        files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                 for raw in reply.file_descriptor_response.file_descriptor_proto]
        by_name = {f.name: f for f in files}

        def add(f):
            if f.name in self.loaded:
                return
            for dep in f.dependency:
                add(by_name[dep] if dep in by_name else self._file(dep))
            self.pool.Add(f)
            self.loaded.add(f.name)

        for f in files:
            add(f)

    def _file(self, name):
        reply = self.ask(file_by_filename=name)
        raw = reply.file_descriptor_response.file_descriptor_proto[0]
        return descriptor_pb2.FileDescriptorProto.FromString(raw)

    def service(self, name):
        self._add_files(self.ask(file_containing_symbol=name))
        return self.pool.FindServiceByName(name)

    def describe(self, name):
        service = self.service(name)
        lines = [f"{name} is a service:", f"service {service.name} {{"]
        for m in service.methods:
            stream = "stream " if m.server_streaming else ""
            lines.append(f"  rpc {m.name} ( .{m.input_type.full_name} ) returns "
                         f"( {stream}.{m.output_type.full_name} );")
        return "\n".join(lines + ["}"])

    def call(self, full_method, data):
        service_name, method_name = full_method.split("/")
        method = self.service(service_name).methods_by_name[method_name]
        request_class = self.factory.GetPrototype(method.input_type)
        reply_class = self.factory.GetPrototype(method.output_type)
        request = json_format.Parse(data or "{}", request_class())
        path = f"/{service_name}/{method_name}"
        kind = self.channel.unary_stream if method.server_streaming else self.channel.unary_unary
        stub = kind(path, request_serializer=request_class.SerializeToString,
                    response_deserializer=reply_class.FromString)
        replies = stub(request, timeout=60)
        if not method.server_streaming:
            replies = [replies]
        return [json_format.MessageToJson(r) for r in replies]


def parse_command(line):
    """grpcurl [-plaintext] [-d JSON] ADDRESS (list | describe SYMBOL | SERVICE/METHOD)."""
    args = shlex.split(line)
    assert args[0] == "grpcurl", line
    data, rest, i = None, [], 1
    while i < len(args):
        if args[i] == "-plaintext":
            i += 1
        elif args[i] == "-d":
            data, i = args[i + 1], i + 2
        else:
            rest.append(args[i])
            i += 1
    return data, rest[0], rest[1:]


class ReflectionReadmeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.section = readme_section()
        cls.commands = [line for block in fenced_blocks(cls.section, "sh")
                        for line in block.splitlines() if line.startswith("grpcurl ")]
        cls.worker = WorkerProcess(WORKER_BIN, MODEL, "--threads", "1")
        cls.curl = MiniGrpcurl(cls.worker.address, compile_reflection_proto(cls.tmp.name))

    @classmethod
    def tearDownClass(cls):
        cls.curl.close()
        cls.worker.stop()
        cls.tmp.cleanup()

    def readme_command(self, verb):
        """(-d JSON, arguments) of the README's command whose verb is `verb`."""
        for line in self.commands:
            data, _address, rest = parse_command(line)
            if rest[0] == verb or rest[0].endswith("/" + verb):
                return data, rest
        self.fail(f"README's section has no grpcurl {verb} command")

    def run_readme(self, verb):
        """The replies of the README's command whose verb is `verb` (run on our worker)."""
        data, rest = self.readme_command(verb)
        if rest[0] == "list":
            return self.curl.list_services()
        if rest[0] == "describe":
            return self.curl.describe(rest[1])
        return self.curl.call(rest[0], data)

    def test_every_command_is_understood(self):
        self.assertGreaterEqual(len(self.commands), 4)
        for line in self.commands:
            data, address, rest = parse_command(line)
            self.assertRegex(address, r"^127\.0\.0\.1:\d+$")
            self.assertTrue(rest[0] in ("list", "describe") or "/" in rest[0], line)
            if data is not None:
                json.loads(data)  # the -d payload is JSON

    def test_list(self):
        services = self.run_readme("list")
        for name in ("lensgrid.v1.Worker", "grpc.health.v1.Health",
                     "grpc.reflection.v1alpha.ServerReflection"):
            self.assertIn(name, services)

    def test_describe(self):
        text = self.run_readme("describe")
        for rpc in ("GetModelInfo", "Tokenize", "RunWithCache", "RunWithInterventions",
                    "GetWeights", "Generate"):
            self.assertIn(f"rpc {rpc} (", text)
        self.assertIn("returns ( stream .lensgrid.v1.RunResponse )", text)

    def test_tokenize_reply_is_the_readmes(self):
        [reply] = self.run_readme("Tokenize")
        [shown] = fenced_blocks(self.section, "json")
        self.assertEqual(json.loads(reply), json.loads(shown))

    def test_run_with_cache_chunks_are_the_python_clients_tensor(self):
        replies = [json.loads(r) for r in self.run_readme("RunWithCache")]
        header = replies[0]["header"]
        [meta] = header["tensors"]
        self.assertEqual(meta["name"], "blocks.0.attn.hook_pattern")
        self.assertEqual(meta["dtype"], "F32")
        shape = [int(d) for d in meta["shape"]]
        self.assertIn(f"F32 {shape}", self.section)  # the shape the README states
        chunks = [r["chunk"] for r in replies[1:]]
        self.assertTrue(chunks)
        data = b"".join(base64.b64decode(c.get("data", "")) for c in
                        sorted(chunks, key=lambda c: int(c.get("offset", "0"))))
        self.assertEqual(len(data), int(meta["numBytes"]))
        pattern = np.frombuffer(data, dtype="<f4").reshape(shape)

        client = lensgrid.Worker(self.worker.address)
        try:
            [text] = json.loads(self.readme_command("RunWithCache")[0])["input"]["texts"]
            expected = client.run_with_cache(text, names=["blocks.0.attn.hook_pattern"],
                                             remove_batch_dim=True, return_type=None)
        finally:
            client.close()
        np.testing.assert_array_equal(pattern, expected["blocks.0.attn.hook_pattern"])
        np.testing.assert_allclose(pattern.sum(-1), 1.0, rtol=1e-5)  # rows of a softmax


if __name__ == "__main__":
    unittest.main(verbosity=2)
