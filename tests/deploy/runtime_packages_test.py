#!/usr/bin/python3
"""deploy/docker/Dockerfile.cpu, checked without a Docker engine.

- Its runtime stage's apt list (between `# runtime-packages-begin` and `-end`), with everything
  those packages depend on, owns every shared library the four built binaries load (ldd), on
  this Debian 12 machine -- the same distribution as the image.
- Its build stage runs what CI runs: scripts/bootstrap, then the Makefile's build.
- It and the manifests agree: every command the manifests run is in the image, the embedded
  model is where the ConfigMap says, the pods run as the image's user.

usage: runtime_packages_test.py   (env as manifests_test.py: LENSGRID_BINARY_DIR, LENSGRID_BIN_*)
Exits 77 (skipped) when the binaries are not built or apt-cache/kubectl are missing.
"""
import os
import re
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from manifests_test import BINARIES, KUBECTL, SOURCE_DIR, render  # noqa: E402

DOCKERFILE = os.path.join(SOURCE_DIR, "deploy", "docker", "Dockerfile.cpu")
# What the image ships: the manifests' binaries, and lensgrid-local (LibTorch commands), which
# lensgrid executes from its own directory.
IMAGE_BINARIES = dict(BINARIES, **{"lensgrid-local": os.path.join(
    os.path.dirname(BINARIES["lensgrid"]), "lensgrid-local")})


def runtime_packages(text):
    block = re.search(r"# runtime-packages-begin\n(.*?)# runtime-packages-end", text, re.S).group(1)
    install = block.split("--no-install-recommends", 1)[1].split("&&", 1)[0]
    return install.replace("\\", " ").split()


def owning_packages(paths):
    """{path: Debian package} for the files dpkg knows (also as /lib/... for /usr/lib/...)."""
    owners = {}
    for variant in (lambda p: p, lambda p: re.sub(r"^/usr", "", p)):
        todo = {variant(p): p for p in paths if p not in owners}
        if not todo:
            break
        out = subprocess.run(["dpkg", "-S", *todo], capture_output=True, text=True).stdout
        for line in out.splitlines():
            package, _, path = line.partition(": ")
            if path in todo:
                owners[todo[path]] = package.split(":")[0].split(",")[0]
    return owners


class RuntimePackagesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(DOCKERFILE) as f:
            cls.text = f.read()
        cls.build_stage, cls.runtime_stage = cls.text.split("AS runtime", 1)

    def test_runtime_packages_own_every_loaded_library(self):
        packages = runtime_packages(self.runtime_stage)
        self.assertIn("libtorch1.13", packages)
        closure = subprocess.run(
            ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
             "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages],
            capture_output=True, text=True, check=True).stdout
        closure = {line.strip("<>") for line in closure.splitlines() if not line.startswith(" ")}
        libs = {}  # real path -> the binaries that load it
        for binary in IMAGE_BINARIES.values():
            ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
            self.assertNotIn("not found", ldd, binary)
            for lib in re.findall(r"=> (/\S+)", ldd):
                libs.setdefault(os.path.realpath(lib), set()).add(os.path.basename(binary))
        owners = owning_packages(sorted(libs))
        self.assertEqual(sorted(set(libs) - set(owners)), [], "libraries of no Debian package")
        self.assertGreater(len(owners), 20)
        missing = {}
        for lib, owner in owners.items():
            if owner not in closure:
                missing.setdefault(owner, set()).update(f"{b}: {lib}" for b in libs[lib])
        self.assertEqual(missing, {}, "add these packages to Dockerfile.cpu's runtime stage")

    def test_build_stage_runs_what_ci_runs(self):
        with open(os.path.join(SOURCE_DIR, ".ci", "run")) as f:
            self.assertIn("make test", f.read())
        self.assertRegex(self.build_stage, r"RUN scripts/bootstrap")
        self.assertRegex(self.build_stage, r"make build")
        self.assertRegex(self.build_stage, r'RUN_TESTS" = 1 \]; then make test')

    def test_image_has_what_the_manifests_run(self):
        copied = set(re.findall(r"/build/\w+/([\w-]+)\s", self.runtime_stage))
        self.assertEqual(copied, set(IMAGE_BINARIES))
        for overlay in ("overlays/batch", "overlays/gpu"):
            for obj in render(overlay):
                spec = (obj.get("spec") or {}).get("template", {}).get("spec")
                if not spec:
                    if obj["kind"] == "ConfigMap":
                        embedded = obj["data"]["EMBEDDED_MODEL_DIR"]
                        self.assertTrue(embedded.startswith("/opt/lensgrid/models/"), embedded)
                    continue
                self.assertEqual(spec["securityContext"]["runAsUser"], 10001)
                for c in spec.get("initContainers", []) + spec["containers"]:
                    command = c["command"][0]
                    self.assertTrue(command in copied or command in ("cp",), (obj["kind"], command))
        # The model the image links as `default` is in models/ (its name is a build arg).
        default_model = re.search(r"ARG DEFAULT_MODEL=(\S+)", self.runtime_stage).group(1)
        self.assertTrue(os.path.isdir(os.path.join(SOURCE_DIR, "models", default_model)),
                        f"models/{default_model} (Dockerfile.cpu's DEFAULT_MODEL) does not exist")
        self.assertIn("USER 10001:10001", self.runtime_stage)
        self.assertIn("COPY --from=build /opt/lensgrid/src/models/ /opt/lensgrid/models/",
                      self.runtime_stage)


if __name__ == "__main__":
    for name, path in IMAGE_BINARIES.items():
        if not os.access(path, os.X_OK):
            print(f"skipped: {path} not built", file=sys.stderr)
            sys.exit(77)
    for tool in ("apt-cache", "dpkg", "ldd", KUBECTL):
        if shutil.which(tool) is None:
            print(f"skipped: no {tool}", file=sys.stderr)
            sys.exit(77)
    unittest.main()
