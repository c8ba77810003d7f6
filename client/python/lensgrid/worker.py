"""The Worker client: TransformerLens-style calls against a lensgrid worker."""
import collections
import os
import re
import time
import weakref

import grpc
import numpy as np

from lensgrid import _wire
from lensgrid.shared_memory import SHARED_MEMORY_API, SharedMemory, arrays_in_region, as_range
from lensgrid.errors import ApiVersionError, Error, InvalidInputError, WorkerError
from lensgrid._version import SUPPORTED_MAJORS
from google.protobuf import json_format

from lensgrid.v1 import program_pb2, search_pb2, tensor_pb2, worker_pb2, worker_pb2_grpc

# "logits" is sent as UNSPECIFIED, which means logits to every worker (RETURN_LOGITS arrived in 2.0).
_RETURN_TYPES = {"logits": worker_pb2.RETURN_TYPE_UNSPECIFIED, "loss": worker_pb2.RETURN_LOSS,
                 "both": worker_pb2.RETURN_BOTH, None: worker_pb2.RETURN_NONE,
                 "none": worker_pb2.RETURN_NONE}
_DTYPES = {None: tensor_pb2.DTYPE_UNSPECIFIED, "float32": tensor_pb2.F32,
           "float16": tensor_pb2.F16, "bfloat16": tensor_pb2.BF16}
_OPS = {name.lower(): value for name, value in worker_pb2.Intervention.Op.items()
        if value != worker_pb2.Intervention.OP_UNSPECIFIED}
# The search's metric names (search.proto's SearchMetric), as "logit_diff" or "logit-diff".
_METRICS = {spelled: value for name, value in search_pb2.SearchMetric.items()
            if value != search_pb2.SEARCH_METRIC_UNSPECIFIED
            for spelled in (name[len("METRIC_"):].lower(),
                            name[len("METRIC_"):].lower().replace("_", "-"))}

# TransformerLens's get_act_name, for the names a GPT-2 has.
_BLOCK_ACTS = {
    "resid_pre": "hook_resid_pre", "resid_mid": "hook_resid_mid", "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out", "q": "attn.hook_q", "k": "attn.hook_k",
    "v": "attn.hook_v", "z": "attn.hook_z", "pattern": "attn.hook_pattern",
    "attn": "attn.hook_pattern", "attn_scores": "attn.hook_attn_scores",
    "scores": "attn.hook_attn_scores", "result": "attn.hook_result", "pre": "mlp.hook_pre",
    "post": "mlp.hook_post", "attn_in": "hook_attn_in", "mlp_in": "hook_mlp_in",
}


def act_name(name, layer=None, layer_type=None):
    """("pattern", 0) -> "blocks.0.attn.hook_pattern", as TransformerLens's get_act_name."""
    m = re.fullmatch(r"([a-z_]+?)(\d+)([a-z_0-9]*)", name)
    if layer is None and m and m.group(1) in _BLOCK_ACTS:
        name, layer, layer_type = m.group(1), int(m.group(2)), m.group(3) or None
    if name in ("scale", "normalized") and layer is not None:
        return f"blocks.{layer}.{layer_type or 'ln1'}.hook_{name}"
    if name in _BLOCK_ACTS and layer is not None:
        return f"blocks.{layer}.{_BLOCK_ACTS[name]}"
    return name


class RunResult(dict):
    """Cached activations keyed by hook name (numpy), plus .logits, .loss, .metric,
    .tokens and .attention_mask. result["pattern", 0] works as in TransformerLens.
    .dtypes names each tensor's dtype on the wire ("F32", "F16", "BF16", ...): BF16 tensors
    arrive widened to float32 arrays, F16 ones as float16."""

    def __init__(self):
        super().__init__()
        self.logits = self.loss = self.metric = self.attention_mask = None
        self.tokens = None
        self.weights_sha256 = ""
        self.dtypes = {}

    def __getitem__(self, key):
        if isinstance(key, tuple):
            key = act_name(*key)
        elif isinstance(key, str) and key not in self:
            key = act_name(key)
        return super().__getitem__(key)


def _input(value, prepend_bos=True, padding_side="right", attention_mask=None):
    # prepend_bos for 2.x workers, no_bos (deprecated) for 1.x ones.
    msg = worker_pb2.ModelInput(prepend_bos=bool(prepend_bos), no_bos=not prepend_bos)
    if padding_side not in ("right", "left"):
        raise InvalidInputError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if padding_side == "left":  # right is the zero, UNSPECIFIED: right to every worker version
        msg.padding_side = worker_pb2.ModelInput.PADDING_LEFT
    if isinstance(value, str):
        msg.texts.append(value)
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        msg.texts.extend(value)
    else:
        arr = np.asarray(value)
        if arr.dtype.kind not in "iu":
            raise InvalidInputError(f"input must be text, a list of texts, or integer token ids; got {arr.dtype}")
        msg.tokens.CopyFrom(_wire.to_tensor(arr.astype(np.int64), "tokens"))
    if attention_mask is not None:
        msg.attention_mask.CopyFrom(_wire.to_tensor(np.asarray(attention_mask), "attention_mask"))
    return msg


def _options(return_type, per_token_loss, stop_at_layer, logits_dtype):
    if return_type not in _RETURN_TYPES:
        raise InvalidInputError(f"return_type must be one of 'logits', 'loss', 'both', None; got {return_type!r}")
    opts = worker_pb2.RunOptions(return_type=_RETURN_TYPES[return_type],
                                 per_token_loss=per_token_loss, logits_dtype=_DTYPES[logits_dtype])
    if stop_at_layer is not None:
        opts.stop_at_layer = stop_at_layer
    return opts


def _cache_spec(names, names_regex, positions, remove_batch_dim, dtype):
    if isinstance(names, str):
        names = [names]
    if isinstance(names_regex, str):
        names_regex = [names_regex]
    spec = worker_pb2.CacheSpec(names=list(names or []), regexes=list(names_regex or []),
                                remove_batch_dim=remove_batch_dim, dtype=_DTYPES[dtype])
    if positions is not None:
        if not isinstance(positions, slice) or positions.step not in (None, 1):
            raise InvalidInputError("positions must be a slice with step 1, e.g. slice(-3, None)")
        spec.positions.SetInParent()
        if positions.start is not None:
            spec.positions.start = positions.start
        if positions.stop is not None:
            spec.positions.stop = positions.stop
    return spec


def _intervention(item):
    if isinstance(item, worker_pb2.Intervention):
        return item
    item = dict(item)
    op = item.pop("op")
    msg = worker_pb2.Intervention(hook=act_name(*item.pop("hook")) if isinstance(item.get("hook"), tuple)
                                  else item.pop("hook"), op=_OPS[op.lower()])
    if item.get("head") is not None:
        msg.head = item.pop("head")
    item.pop("head", None)
    if item.get("positions") is not None:
        msg.positions.extend(int(p) for p in np.atleast_1d(item.pop("positions")))
    item.pop("positions", None)
    if item.get("value") is not None:
        msg.value.CopyFrom(_wire.to_tensor(item.pop("value"), "value"))
    item.pop("value", None)
    if "scale" in item:
        msg.scale = float(item.pop("scale"))
    if item:
        raise InvalidInputError(f"unknown intervention fields {sorted(item)}")
    return msg


def _metric(spec):
    if spec is None:
        return None
    spec = dict(spec)
    msg = worker_pb2.Metric(kind=_METRICS[spec.pop("kind").lower()],
                            per_prompt=bool(spec.pop("per_prompt", False)))
    msg.answer_tokens.extend(int(t) for t in np.atleast_1d(spec.pop("answer")))
    if spec.get("wrong") is not None:
        msg.wrong_tokens.extend(int(t) for t in np.atleast_1d(spec.pop("wrong")))
    spec.pop("wrong", None)
    if spec.get("position") is not None:
        msg.position = int(spec.pop("position"))
    spec.pop("position", None)
    if spec:
        raise InvalidInputError(f"unknown metric fields {sorted(spec)}")
    return msg


def _program(program):
    """A HookProgram message, or the same as a dict in protobuf's JSON form."""
    if isinstance(program, program_pb2.HookProgram):
        return program
    return json_format.ParseDict(program, program_pb2.HookProgram())


def _gradients(spec):
    """{"hooks": [names], "saved": name, "positions": slice, "dtype": "float16"} (all but hooks
    optional; without saved the objective is the metric), or a list of hooks -> Gradients."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        spec = {"hooks": spec}
    hooks = [act_name(*h) if isinstance(h, tuple) else h for h in spec["hooks"]]
    layout = _cache_spec(None, None, spec.get("positions"), False, spec.get("dtype"))
    g = worker_pb2.Gradients(hooks=hooks, saved=spec.get("saved", ""), dtype=layout.dtype)
    if layout.HasField("positions"):
        g.positions.CopyFrom(layout.positions)
    return g


class _CallDetails(collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                         "compression")), grpc.ClientCallDetails):
    pass


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Sends `authorization: Bearer TOKEN` with every call."""

    def __init__(self, token):
        self._entry = ("authorization", f"Bearer {token}")

    def _details(self, d):
        return _CallDetails(d.method, d.timeout, list(d.metadata or []) + [self._entry],
                            d.credentials, getattr(d, "wait_for_ready", None),
                            getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


def _read_file(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise InvalidInputError(f"{what} {path}: cannot read: {e.strerror}") from None


KEEPALIVE_OPTIONS = (("grpc.keepalive_time_ms", 30000), ("grpc.keepalive_timeout_ms", 10000),
                     ("grpc.keepalive_permit_without_calls", 1),
                     ("grpc.http2.max_pings_without_data", 0))


def open_channel(address, tls_ca=None, tls_cert=None, tls_key=None, token=None, options=()):
    """A channel as the lensgrid CLI makes one: TLS when a CA or a client certificate is given
    (PEM file paths), `authorization: Bearer TOKEN` on every call when a token is given. Each
    argument left None comes from LENSGRID_TLS_CA, LENSGRID_TLS_CERT, LENSGRID_TLS_KEY,
    LENSGRID_TOKEN."""
    env = os.environ.get
    tls_ca = tls_ca if tls_ca is not None else env("LENSGRID_TLS_CA")
    tls_cert = tls_cert if tls_cert is not None else env("LENSGRID_TLS_CERT")
    tls_key = tls_key if tls_key is not None else env("LENSGRID_TLS_KEY")
    token = token if token is not None else env("LENSGRID_TOKEN")
    if bool(tls_cert) != bool(tls_key):
        raise InvalidInputError("tls_cert and tls_key go together (mTLS)")
    # Keepalive as the C++ clients (common/serving.h): a ping every 30 s, also between calls,
    # so long calls and idle notebooks survive NATs and proxies; servers allow it.
    options = [*KEEPALIVE_OPTIONS, *options]
    if tls_ca or tls_cert:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read_file(tls_ca, "tls_ca") if tls_ca else None,
            private_key=_read_file(tls_key, "tls_key") if tls_key else None,
            certificate_chain=_read_file(tls_cert, "tls_cert") if tls_cert else None)
        channel = grpc.secure_channel(address, creds, options=list(options))
    else:
        channel = grpc.insecure_channel(address, options=list(options))
    if token:
        channel = grpc.intercept_channel(channel, _BearerToken(token))
    return channel


class Worker:
    """A connection to one lensgrid worker.

    Every call raises WorkerError with the worker's status code and message on failure.
    tls_ca / tls_cert / tls_key (PEM paths) and token work as the CLI's --tls-ca, --tls-cert,
    --tls-key and --token, and default to the same environment variables (LENSGRID_TLS_CA, ...,
    LENSGRID_TOKEN).
    """

    # Ask for small replies as one message (inline_tensors); tests turn it off to compare.
    _inline_tensors = True

    def __init__(self, address, timeout=None, tls_ca=None, tls_cert=None, tls_key=None,
                 token=None):
        self.address = address
        self.timeout = timeout  # seconds per call; None: no deadline
        self._channel = open_channel(
            address, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, token=token,
            options=[("grpc.max_receive_message_length", 16 << 20)])
        self._stub = worker_pb2_grpc.WorkerStub(self._channel)
        # The streamed calls with their replies left serialized, for _wire.split_response.
        self._raw = {name: _wire.raw_stream(self._channel, worker_pb2, "Worker", name)
                     for name in ("RunWithCache", "RunWithInterventions", "GetWeights")}
        self._info = None
        self._regions = weakref.WeakSet()  # SharedMemory attached through this connection

    def close(self):
        """Closes the connection and the shared-memory regions attached through it."""
        for region in list(self._regions):
            region.close()
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, fn, request, timeout):
        try:
            return fn(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as e:
            raise WorkerError(e.code(), e.details()) from None

    def wait_ready(self, timeout=30.0):
        """Blocks until the worker has loaded its weights; returns its model info."""
        end = time.monotonic() + timeout
        while True:
            try:
                return self.model_info(refresh=True, timeout=max(0.1, min(5.0, end - time.monotonic())))
            except WorkerError as e:
                if e.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) \
                        or time.monotonic() > end:
                    raise
                time.sleep(0.05)

    def model_info(self, refresh=False, timeout=None):
        """The worker's ModelInfo message (config, weights_sha256, hooks with shapes, limits)."""
        if self._info is None or refresh:
            self._info = self._call(self._stub.GetModelInfo, worker_pb2.GetModelInfoRequest(), timeout)
        return self._info

    @property
    def hook_names(self):
        return [h.name for h in self.model_info().hooks]

    def tokenize(self, text, prepend_bos=True):
        """Token ids of a text (a list), or of each text in a list (a list of lists)."""
        texts = [text] if isinstance(text, str) else list(text)
        resp = self._call(self._stub.Tokenize,
                          worker_pb2.TokenizeRequest(texts=texts, prepend_bos=prepend_bos), None)
        ids = [list(t.ids) for t in resp.tokens]
        return ids[0] if isinstance(text, str) else ids

    def to_str_tokens(self, text, prepend_bos=True):
        texts = [text] if isinstance(text, str) else list(text)
        resp = self._call(self._stub.Tokenize,
                          worker_pb2.TokenizeRequest(texts=texts, prepend_bos=prepend_bos), None)
        strs = [list(t.str_tokens) for t in resp.tokens]
        return strs[0] if isinstance(text, str) else strs

    def detokenize(self, ids):
        resp = self._call(self._stub.Detokenize, worker_pb2.DetokenizeRequest(ids=list(map(int, ids))), None)
        return resp.text

    def shared_memory(self, byte_size):
        """A same-host shared-memory region of byte_size bytes attached to this worker (Worker
        API 2.1), for shared_memory= of run_with_cache, run_with_interventions and get_weights:
        the worker writes the reply's tensors there and the arrays are views into it, valid
        until the next call writing the same bytes of the region (copy=True or .copy() keeps
        them). Use it as a context manager, or close() it: that detaches it.
        WorkerError FAILED_PRECONDITION when the worker is not on this host. See
        lensgrid.shared_memory."""
        self.require_api_version(SHARED_MEMORY_API, "shared memory (AttachSharedMemory)")
        region = SharedMemory(self, byte_size)
        self._regions.add(region)
        return region

    def _shared_memory_target(self, shared_memory):
        if shared_memory is None:
            return None
        part = as_range(shared_memory)
        if part.region.closed:
            raise InvalidInputError(f"the shared memory {part.region.name} is closed")
        self.require_api_version(SHARED_MEMORY_API, "shared_memory=")
        return part

    def _stream(self, method, request, timeout, header_tokens=True, region=None, copy=False):
        result = RunResult()
        # A small reply may come as one message, its tensors in the header (Worker API 2.2);
        # older workers ignore the flag and stream them, and read_run_reply reads both.
        (request if method == "GetWeights" else request.options).inline_tensors = \
            self._inline_tensors
        call = self._raw[method](request, timeout=timeout if timeout is not None else self.timeout)
        self.last_call = call  # call.cancel() from another thread cancels the run
        try:
            header, assembler = read_run_reply(call)
        except grpc.RpcError as e:
            raise WorkerError(e.code(), e.details()) from None
        except BaseException:
            call.cancel()  # a malformed reply (RuntimeError) or an interrupt: stop the run
            raise
        if header.in_shared_memory:
            if region is None:
                raise RuntimeError("stream: the header says the tensors are in shared memory, "
                                   "but the request named no region")
            assembler.finish([])  # no chunks may follow such a header
            tensors = arrays_in_region(region.region, header, copy)
        else:
            tensors = assembler.finish([t.name for t in header.tensors])
        if header_tokens or header.HasField("tokens"):
            result.tokens = _wire.from_tensor(header.tokens)
        if header.HasField("attention_mask"):
            result.attention_mask = _wire.from_tensor(header.attention_mask)
        result.weights_sha256 = header.weights_sha256
        result.dtypes = {t.name: tensor_pb2.DType.Name(t.dtype) for t in header.tensors}
        for name, arr in tensors.items():
            if name in ("logits", "loss", "metric"):
                setattr(result, name, arr)
            else:
                dict.__setitem__(result, name, arr)
        return result

    def run_with_cache(self, input, names=None, names_regex=None, positions=None,
                       stop_at_layer=None, return_type="logits", per_token_loss=False,
                       remove_batch_dim=False, dtype=None, logits_dtype=None, prepend_bos=True,
                       padding_side="right", attention_mask=None, expected_weights_sha256="",
                       timeout=None, shared_memory=None, copy=False):
        """Runs text(s) or token ids and returns a RunResult: activations by hook name
        (all of them when neither names nor names_regex is given), .logits, .loss.

        shared_memory: a region from Worker.shared_memory (or shm.range(offset, size)): the
        worker writes the tensors there and they come back as views into it (valid until the
        next call writing those bytes; copy=True returns copies)."""
        part = self._shared_memory_target(shared_memory)
        request = worker_pb2.RunWithCacheRequest(
            input=_input(input, prepend_bos, padding_side, attention_mask),
            options=_options(return_type, per_token_loss, stop_at_layer, logits_dtype),
            cache=_cache_spec(names, names_regex, positions, remove_batch_dim, dtype),
            expected_weights_sha256=expected_weights_sha256)
        if part is not None:
            request.options.shared_memory.CopyFrom(part.target())
        return self._stream("RunWithCache", request, timeout, region=part, copy=copy)

    def run_with_interventions(self, input, interventions=(), patch_input=None, metric=None,
                               names=None, names_regex=None, cache=False, return_type="logits",
                               per_token_loss=False, stop_at_layer=None, logits_dtype=None,
                               prepend_bos=True, padding_side="right", attention_mask=None,
                               expected_weights_sha256="", timeout=None, programs=(),
                               gradients=None, shared_memory=None, copy=False):
        """Runs with declarative interventions, e.g.
        [{"hook": "blocks.0.attn.hook_z", "head": 3, "op": "zero"},
         {"hook": ("resid_pre", 1), "positions": [-1], "op": "patch"}]
        (ops: zero, mean, set, add, scale, patch; value= for set/add/mean, scale= for scale),
        patching from patch_input; metric={"kind": "logit_diff", "answer": id(s),
        "wrong": id(s), "per_prompt": True} gives result.metric (kinds: logit_diff, logit,
        prob, prob_diff, log_prob; the search's metrics, same code). Caches names/names_regex
        (or everything with cache=True).

        programs: hook programs (program_pb2.HookProgram or the same as JSON dicts, see
        proto/lensgrid/v1/program.proto); their saved values come back as result["saved:NAME"].
        gradients={"hooks": [...], "saved": NAME, "positions": slice(-1, None),
        "dtype": "float16"} (or a list of hooks): d objective / d activation as
        result["grad:HOOK"]; the objective is the saved scalar, else the metric (its mean;
        with per_prompt its sum).

        shared_memory, copy: as run_with_cache's."""
        part = self._shared_memory_target(shared_memory)
        request = worker_pb2.RunWithInterventionsRequest(
            input=_input(input, prepend_bos, padding_side, attention_mask),
            options=_options(return_type, per_token_loss, stop_at_layer, logits_dtype),
            interventions=[_intervention(i) for i in interventions],
            expected_weights_sha256=expected_weights_sha256)
        if patch_input is not None:
            request.patch_input.CopyFrom(_input(patch_input, prepend_bos, padding_side))
        m = _metric(metric)
        if m is not None:
            request.metric.CopyFrom(m)
        if cache or names or names_regex:
            request.cache.CopyFrom(_cache_spec(names, names_regex, None, False, None))
        request.programs.extend(_program(p) for p in programs)
        g = _gradients(gradients)
        if g is not None:
            request.gradients.CopyFrom(g)
        if part is not None:
            request.options.shared_memory.CopyFrom(part.target())
        return self._stream("RunWithInterventions", request, timeout, region=part, copy=copy)

    def api_version(self):
        """The worker's Worker API version as (MAJOR, MINOR); a worker that predates
        ModelInfo.api_version reports none and is taken as 1.0."""
        return parse_api_version(self.model_info().api_version)

    def require_api_version(self, version, what):
        """Raises ApiVersionError unless the worker speaks a major this client supports and at
        least `version` ((MAJOR, MINOR); an int n means 1.n)."""
        needed = (1, version) if isinstance(version, int) else tuple(version)
        check_api_version(self.model_info().api_version, needed, what, self.address)

    def get_weights(self, names=None, dtype=None, timeout=None, shared_memory=None, copy=False):
        """Weights by TransformerLens name ("W_E", "blocks.0.attn.W_Q", or "W_Q" for every layer
        stacked), as numpy arrays in a dict; every weight when names is None. shared_memory,
        copy: as run_with_cache's."""
        self.require_api_version(1, "GetWeights")
        part = self._shared_memory_target(shared_memory)
        request = worker_pb2.GetWeightsRequest(names=list(names or []), dtype=_DTYPES[dtype])
        if part is not None:
            request.shared_memory.CopyFrom(part.target())
        result = self._stream("GetWeights", request, timeout, header_tokens=False, region=part,
                              copy=copy)
        return dict(result)

    def generate(self, input, max_new_tokens, temperature=0.0, top_k=0, top_p=0.0, seed=None,
                 stop_at_eos=False, prepend_bos=True, padding_side="left",
                 expected_weights_sha256="", timeout=None):
        """Samples on the worker; yields the prompt tokens (numpy [batch, pos]) first, then one
        GenerateResponse per step (.step, .tokens, .texts, .finished)."""
        self.require_api_version(1, "Generate")
        if max_new_tokens is None or int(max_new_tokens) <= 0:
            raise InvalidInputError(f"max_new_tokens must be > 0, got {max_new_tokens!r}")
        request = worker_pb2.GenerateRequest(
            input=_input(input, prepend_bos, padding_side), max_new_tokens=int(max_new_tokens),
            temperature=float(temperature), top_k=int(top_k or 0), top_p=float(top_p or 0.0),
            stop_at_eos=bool(stop_at_eos), expected_weights_sha256=expected_weights_sha256)
        if seed is not None:
            request.seed = int(seed)
        call = self._stub.Generate(request, timeout=timeout if timeout is not None else self.timeout)
        self.last_call = call
        try:
            for response in call:
                if response.HasField("prompt_tokens"):
                    yield _wire.from_tensor(response.prompt_tokens)
                    if not len(response.tokens):
                        continue
                yield response
        except grpc.RpcError as e:
            raise WorkerError(e.code(), e.details()) from None


# RunHeader.inline_chunks: a small reply's tensors in its header (Worker API 2.2).
_INLINE_CHUNKS = worker_pb2.RunHeader.DESCRIPTOR.fields_by_name["inline_chunks"].number


def read_run_reply(replies):
    """A streamed reply (RunResponse messages as the serialized bytes gRPC received) -> (its
    RunHeader, an _wire.Assembler holding its tensors; call .finish(names)). Both forms are
    read: the header then TensorChunk messages, and (Worker API 2.2, when the request set
    inline_tensors) a header carrying every tensor in inline_chunks, one chunk each, with no
    chunk messages after it. Each chunk's bytes are copied once, into their tensor. A reply
    that breaks these rules is a RuntimeError ("stream: ..."); one without a header an Error."""
    assembler = _wire.Assembler()
    header = None
    inlined = False
    for raw in replies:
        got, chunk, data = _wire.split_response(raw, worker_pb2.RunHeader,
                                                inline_field=_INLINE_CHUNKS)
        if got is not None:
            if header is not None:
                raise RuntimeError("stream: the reply had two headers")
            if assembler.tensors or assembler.receiving is not None:
                raise RuntimeError("stream: a tensor chunk came before the header")
            header, inline = got, data
            if inline:
                if header.in_shared_memory:
                    raise RuntimeError("stream: the header says the tensors are in shared "
                                       "memory and also carries them inline")
                inlined = True
                for chunk, data in inline:
                    assembler.add(chunk, data)
                if assembler.receiving is not None:
                    raise RuntimeError(f"stream: the header's inline chunks end inside tensor "
                                       f"{assembler.receiving!r}")
        else:
            if inlined:
                raise RuntimeError(f"stream: a chunk of {chunk.name!r} came after a header "
                                   "that carried the tensors inline")
            assembler.add(chunk, data)
    if header is None:
        raise Error("stream: the reply had no header")
    return header, assembler


def parse_api_version(text):
    """"MAJOR.MINOR" -> (MAJOR, MINOR); empty (a worker before api_version) -> (1, 0)."""
    if not text:
        return (1, 0)
    parts = text.strip().split(".")
    try:
        return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)
    except ValueError:
        raise ApiVersionError(f"the worker reports an unreadable API version {text!r}") from None


def check_api_version(text, needed, what, address=""):
    """Raises ApiVersionError when a server's "MAJOR.MINOR" cannot serve `what`, which needs
    `needed` or newer, or has a major this client does not speak (SUPPORTED_MAJORS)."""
    have = parse_api_version(text)
    shown = text or "none (taken as 1.0)"
    where = f" at {address}" if address else ""
    if have[0] not in SUPPORTED_MAJORS:
        spoken = " and ".join(f"{m}.x" for m in SUPPORTED_MAJORS)
        raise ApiVersionError(
            f"the worker{where} speaks Worker API {shown}; this client (lensgrid "
            f"{_client_version()}) speaks {spoken}: use a client that speaks major version "
            f"{have[0]} or a worker of major version {SUPPORTED_MAJORS[-1]}")
    if have < tuple(needed):
        raise ApiVersionError(
            f"{what} needs Worker API {needed[0]}.{needed[1]} or newer; the worker{where} speaks "
            f"{shown}: upgrade the worker")
    return have


def _client_version():
    from lensgrid._version import __version__
    return __version__
