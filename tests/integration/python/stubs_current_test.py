#!/usr/bin/python3
"""The committed gRPC stubs (client/python/lensgrid/v1, client/python/google/rpc) equal what
protoc and grpc_python_plugin generate from proto/ today, exactly as client/python/CMakeLists.txt
runs them. On a difference: regenerate with
  protoc -I proto --python_out=client/python --grpc_python_out=client/python \\
    --plugin=protoc-gen-grpc_python=$(which grpc_python_plugin) proto/lensgrid/v1/*.proto \\
    proto/google/rpc/status.proto proto/google/rpc/error_details.proto

usage: stubs_current_test.py PROTOC GRPC_PYTHON_PLUGIN SOURCE_DIR
"""
import filecmp
import glob
import os
import subprocess
import sys
import tempfile

protoc, plugin, source = sys.argv[1:4]
package = os.path.join(source, "client", "python")
protos = sorted(glob.glob(os.path.join(source, "proto", "lensgrid", "v1", "*.proto"))) + [
    os.path.join(source, "proto", "google", "rpc", "status.proto"),
    os.path.join(source, "proto", "google", "rpc", "error_details.proto")]
failures = []
with tempfile.TemporaryDirectory() as out:
    subprocess.run([protoc, "-I", os.path.join(source, "proto"), f"--python_out={out}",
                    f"--grpc_python_out={out}", f"--plugin=protoc-gen-grpc_python={plugin}",
                    *protos], check=True)
    for sub in ("lensgrid/v1", "google/rpc"):
        fresh = {f for f in os.listdir(os.path.join(out, sub)) if f.endswith(".py")}
        committed = {f for f in os.listdir(os.path.join(package, sub))
                     if f.endswith(".py") and f != "__init__.py"}
        for f in sorted(fresh - committed):
            failures.append(f"{sub}/{f}: generated but not committed")
        for f in sorted(committed - fresh):
            failures.append(f"{sub}/{f}: committed but no proto generates it")
        for f in sorted(fresh & committed):
            if not filecmp.cmp(os.path.join(out, sub, f), os.path.join(package, sub, f), shallow=False):
                failures.append(f"{sub}/{f}: differs from what protoc generates now")
    if not os.path.exists(os.path.join(package, "lensgrid", "v1", "__init__.py")):
        failures.append("lensgrid/v1/__init__.py missing")
if failures:
    print("client/python's committed stubs are stale:\n  " + "\n  ".join(failures))
    print(__doc__)
    sys.exit(1)
print(f"stubs current: {len(protos)} protos")
