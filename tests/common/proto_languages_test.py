#!/usr/bin/python3
"""The protos serve every language as they are.

- Every lensgrid .proto sets go_package ("IMPORT/PATH;name"), java_package, java_multiple_files
  and java_outer_classname, so Go and Java generate code without editing them.
- `protoc --java_out` generates the messages and javac compiles them against Debian's
  protobuf-java of the same version as protoc (no edits, no warnings turned into errors).
  Go's generator (protoc-gen-go) is not packaged for Debian 12, so for Go only the option is
  checked.
- Every enum's zero value is NAME_UNSPECIFIED (AIP-126): a client that leaves a field unset
  never asks for something by accident.

usage: proto_languages_test.py PROTOC SOURCE_DIR
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

PROTOC, SOURCE = sys.argv[1:3]
del sys.argv[1:3]

from google.protobuf import descriptor_pb2  # noqa: E402

PROTO_DIR = os.path.join(SOURCE, "proto")
OUR_PROTOS = sorted(os.path.relpath(p, PROTO_DIR)
                    for p in glob.glob(os.path.join(PROTO_DIR, "lensgrid", "v1", "*.proto")))
PROTOBUF_JAR = "/usr/share/java/protobuf.jar"


def descriptor_set():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "set.pb")
        subprocess.run([PROTOC, "-I", PROTO_DIR, "--descriptor_set_out", out, *OUR_PROTOS],
                       check=True)
        with open(out, "rb") as f:
            return descriptor_pb2.FileDescriptorSet.FromString(f.read())


def all_enums(file):
    def walk(messages, prefix):
        for m in messages:
            for e in m.enum_type:
                yield f"{prefix}{m.name}.{e.name}", e
            yield from walk(m.nested_type, f"{prefix}{m.name}.")
    for e in file.enum_type:
        yield e.name, e
    yield from walk(file.message_type, "")


class ProtoLanguagesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.files = descriptor_set().file

    def test_every_file_names_its_go_and_java_packages(self):
        self.assertEqual(len(self.files), len(OUR_PROTOS))
        outer = set()
        for f in self.files:
            o = f.options
            self.assertRegex(o.go_package, r"^[\w./-]+/lensgrid/v1;lensgridv1$", f.name)
            self.assertEqual(o.java_package, "dev.lensgrid.v1", f.name)
            self.assertTrue(o.java_multiple_files, f.name)
            self.assertTrue(o.java_outer_classname, f.name)
            outer.add(o.java_outer_classname)
        self.assertEqual(len(outer), len(self.files), "java_outer_classname must differ per file")

    def test_enum_zero_values_mean_unspecified(self):
        bad = []
        for f in self.files:
            for name, enum in all_enums(f):
                zero = [v.name for v in enum.value if v.number == 0]
                if not zero or not zero[0].endswith("UNSPECIFIED"):
                    bad.append(f"{f.name}: {name} zero is {zero[0] if zero else 'missing'}")
        self.assertEqual(bad, [])

    def test_java_code_generates_and_compiles_unedited(self):
        # scripts/bootstrap installs both.
        self.assertTrue(shutil.which("javac"), "javac is missing: run scripts/bootstrap")
        self.assertTrue(os.path.exists(PROTOBUF_JAR), f"{PROTOBUF_JAR} is missing: run scripts/bootstrap")
        with tempfile.TemporaryDirectory() as tmp:
            src, classes = os.path.join(tmp, "src"), os.path.join(tmp, "classes")
            os.makedirs(src)
            subprocess.run([PROTOC, "-I", PROTO_DIR, "--java_out", src, *OUR_PROTOS,
                            "google/rpc/status.proto", "google/rpc/error_details.proto"],
                           check=True)
            ours = glob.glob(os.path.join(src, "dev", "lensgrid", "v1", "*.java"))
            names = {os.path.basename(p) for p in ours}
            for cls in ("Tensor.java", "TokenizeRequest.java", "JobSpec.java", "HookProgram.java",
                        "WorkerProto.java"):
                self.assertIn(cls, names)
            sources = glob.glob(os.path.join(src, "**", "*.java"), recursive=True)
            result = subprocess.run(["javac", "-nowarn", "-cp", PROTOBUF_JAR, "-d", classes,
                                     *sources], capture_output=True, text=True)
            self.assertEqual(result.returncode, 0, result.stderr[-4000:])
            self.assertTrue(os.path.exists(
                os.path.join(classes, "dev", "lensgrid", "v1", "TokenizeRequest.class")))


if __name__ == "__main__":
    unittest.main(verbosity=2)
