"""lensgrid's Python client: TransformerLens's surface against remote lensgrid workers, and
circuit searches through a coordinator.

    import lensgrid
    model = lensgrid.connect("127.0.0.1:7070")        # a remote HookedTransformer
    logits, cache = model.run_with_cache("The cat sat on the mat")
    cache["pattern", 0, "attn"]                        # numpy [batch, head, query_pos, key_pos]

    def ablate_head(z, hook):                          # traced into a hook program
        z[:, :, 3] = 0
        return z
    loss = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_z", ablate_head)],
                                return_type="loss")

    store = lensgrid.Store()                           # observe-only: saved, not changed
    def norms(resid, hook):
        store[hook.name] = resid.norm(dim=-1)
    model.run_with_hooks(tokens, fwd_hooks=[(lambda n: n.endswith("resid_post"), norms)])
    store["blocks.0.hook_resid_post"]                  # numpy [batch, pos]

Lower level: lensgrid.Worker (every Worker API call). Runs on Debian's python3-grpcio,
python3-protobuf and python3-numpy; torch (return_torch=True) and tqdm are optional.
"""
from lensgrid._version import WORKER_API_VERSION, __version__
from lensgrid.errors import ApiVersionError, Error, InvalidInputError, TraceError, WorkerError
from lensgrid.worker import RunResult, Worker, act_name, open_channel
from lensgrid.shared_memory import SharedMemory
from lensgrid.cache import ActivationCache
from lensgrid.factored import FactoredMatrix, composition_scores
from lensgrid.model import Config, RemoteModel, connect
from lensgrid.coordinator import Coordinator, Job, SearchResult, default_metric
from lensgrid import display, trace
from lensgrid.trace import Store, save

__all__ = ["__version__", "WORKER_API_VERSION", "Error", "WorkerError", "ApiVersionError",
           "InvalidInputError", "TraceError", "Worker", "RunResult", "act_name", "open_channel",
           "ActivationCache", "FactoredMatrix", "composition_scores", "Config", "RemoteModel",
           "connect", "trace", "display", "Coordinator", "Job", "SearchResult", "save",
           "Store", "default_metric", "SharedMemory"]
