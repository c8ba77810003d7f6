"""Python client of a lensgrid worker (a hooked GPT-2 served over gRPC).

    from lensgrid import Worker
    w = Worker("127.0.0.1:7070")
    run = w.run_with_cache("The cat sat on the mat", names=["pattern0", "blocks.1.hook_resid_post"])
    run["blocks.0.attn.hook_pattern"]   # numpy [batch, head, query_pos, key_pos]
    run["pattern", 0]                   # the same, TransformerLens shorthand
    run.logits                          # numpy [batch, pos, d_vocab]

Runs on Debian's python3-grpcio, python3-protobuf and python3-numpy.
"""
from lensgrid.worker import Worker, WorkerError, RunResult, act_name, open_channel

__all__ = ["Worker", "WorkerError", "RunResult", "act_name", "open_channel"]
