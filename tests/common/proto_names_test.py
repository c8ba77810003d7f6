#!/usr/bin/python3
"""No C++ type of ours is named like a proto message or enum.

The library's own types (HookedTransformerConfig, ForwardInput, TensorDType,
AblationKind, ...) live in namespace lensgrid next to the generated
lensgrid::v1 types; one name for two types made every adapter qualify by
hand and read wrong. This walks every proto under proto/ and every C++
header of ours, and fails naming each clash.
"""
import pathlib
import re
import sys
import unittest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CPP_DIRS = ["common", "worker", "service", "client"]
PROTO_TYPE = re.compile(r"^(?:message|enum)\s+(\w+)", re.M)  # top-level types
CPP_TYPE = re.compile(r"^\s*(?:struct|class|enum class|enum|using)\s+(\w+)\b(?!\s*;)", re.M)


def proto_types():
    names = set()
    for path in (ROOT / "proto").rglob("*.proto"):
        names.update(PROTO_TYPE.findall(path.read_text()))
    return names


def cpp_types():
    found = {}
    for d in CPP_DIRS:
        for path in (ROOT / d).rglob("*.h"):
            for name in CPP_TYPE.findall(path.read_text()):
                found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


class ProtoNamesTest(unittest.TestCase):
    def test_the_walk_finds_both_sides(self):
        # A broken pattern must not pass by finding nothing.
        self.assertIn("JobSpec", proto_types())
        self.assertIn("HookedTransformerConfig", cpp_types())

    def test_no_cpp_type_is_named_like_a_proto_type(self):
        clashes = {name: files for name, files in cpp_types().items() if name in proto_types()}
        self.assertEqual(clashes, {}, "C++ types named like proto types (rename the C++ one)")


if __name__ == "__main__":
    sys.exit(unittest.main())
