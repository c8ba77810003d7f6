#!/usr/bin/env python3
"""What links LibTorch: `readelf -d` of the built executables.

usage: links_test.py LENSGRID LENSGRID_COORDINATOR LENSGRID_LOCAL LENSGRID_WORKER

lensgrid and lensgrid-coordinator must NEED no libtorch*/libc10*; lensgrid-local and
lensgrid-worker must NEED them (so the check cannot pass by reading nothing).
"""
import re
import subprocess
import sys
import unittest

TORCH = re.compile(r"^lib(torch|c10)")


def needed(binary):
    out = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


class LinksTest(unittest.TestCase):
    def check(self, binary, wants_torch):
        libs = needed(binary)
        self.assertTrue(libs, f"{binary}: readelf -d shows no NEEDED entries")
        torch = sorted(lib for lib in libs if TORCH.match(lib))
        print(f"{binary}: {len(libs)} NEEDED, LibTorch: {', '.join(torch) or 'none'}")
        if wants_torch:
            self.assertTrue(torch, f"{binary} should link LibTorch; NEEDED: {libs}")
        else:
            self.assertEqual(torch, [], f"{binary} must not link LibTorch")

    def test_lensgrid_has_no_libtorch(self):
        self.check(BINARIES[0], wants_torch=False)

    def test_coordinator_has_no_libtorch(self):
        self.check(BINARIES[1], wants_torch=False)

    def test_lensgrid_local_links_libtorch(self):
        self.check(BINARIES[2], wants_torch=True)

    def test_worker_links_libtorch(self):
        self.check(BINARIES[3], wants_torch=True)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    BINARIES = sys.argv[1:5]
    unittest.main(argv=sys.argv[:1], verbosity=2)
