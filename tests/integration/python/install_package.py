#!/usr/bin/python3
"""pip-installs client/python into DEST (offline, no build isolation, no dependencies), from a
copy so that the source tree gets no build/ or *.egg-info. Tests then import lensgrid from DEST
only.

usage: install_package.py SOURCE_DIR/client/python DEST
"""
import os
import shutil
import subprocess
import sys
import tempfile

src, dest = sys.argv[1:3]
with tempfile.TemporaryDirectory() as tmp:
    copy = os.path.join(tmp, "lensgrid-python")
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", "*.pyc", "CMakeLists.txt"))
    if os.path.exists(dest):
        shutil.rmtree(dest)
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation",
                    "--no-deps", "--no-index", "--target", dest, copy], check=True, env=env)
for must in ("lensgrid/__init__.py", "lensgrid/py.typed", "lensgrid/v1/worker_pb2.py",
             "google/rpc/status_pb2.py"):
    if not os.path.exists(os.path.join(dest, must)):
        sys.exit(f"install_package: {must} missing from {dest}")
print(f"installed lensgrid into {dest}")
