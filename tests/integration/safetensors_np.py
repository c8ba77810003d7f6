"""A safetensors reader written against the format spec with numpy only (as a Python user
would read lensgrid's output files)."""
import json
import struct

import numpy as np

NUMPY = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "BOOL": "?"}


def read_safetensors(path, with_metadata=False):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    tensors = {name: np.frombuffer(raw[8 + n + i["data_offsets"][0]:8 + n + i["data_offsets"][1]],
                                   dtype=NUMPY[i["dtype"]]).reshape(i["shape"])
               for name, i in header.items()}
    return (tensors, meta) if with_metadata else tensors
