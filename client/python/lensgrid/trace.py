"""Tracing TransformerLens hook functions into hook programs (proto/lensgrid/v1/program.proto).

    def ablate(z, hook):              # z is an ActivationProxy: it records, never computes
        z[:, :, 3] = 0
        return z
    program = trace_hook("blocks.0.attn.hook_z", ablate, shape=(1, 7, 4, 16))

Supported: + - * / ** with numbers, numpy arrays and other proxies (and their reflections),
unary -, abs, @, comparisons (give bool), indexing and item assignment with ints, slices (step >
0), one list of indices and ..., in-place ops (+= etc., as torch: they change `z`),
.sum/.mean/.max/.min/.norm(dim=, keepdim=), .softmax/.log_softmax(dim), .exp/.log/.sqrt/.tanh/
.relu/.sigmoid/.abs, .clamp, .reshape/.view/.permute/.transpose/.unsqueeze/.squeeze/.flatten,
.clone/.detach/.contiguous/.float/.to (identity), numpy ufuncs (np.exp(z), np.maximum(z, 0),
...), np.where / np.einsum / np.matmul, torch functions (torch.where, torch.einsum, ...) and
lensgrid.trace.where / einsum / project.

Observe-only hooks (TransformerLens's `store[hook.name] = act.norm(dim=-1)`): a traced value
given to lensgrid.save(name, value), or assigned into a lensgrid.Store, becomes one of the
program's `saves`; the activation is left as it is unless the function also changes it.
model.run_with_hooks(..., return_saved=True) returns (output, {name: array}) and fills every
Store written to. Everything else (float(z), z.numpy(), `if z > 0:`,
z.max(dim=...).indices, ...) raises TraceError naming the operation.
"""
import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from lensgrid import _wire
from lensgrid.errors import TraceError
from lensgrid.v1 import program_pb2

_EW = program_pb2.Elementwise
_RED = program_pb2.Reduce


class HookInfo:
    """The `hook` argument of a traced hook function: .name (and .layer(), as TransformerLens's
    HookPoint)."""

    def __init__(self, name: str):
        self.name = name

    def layer(self) -> int:
        parts = self.name.split(".")
        if len(parts) < 2 or parts[0] != "blocks":
            raise TraceError(f"hook {self.name} has no layer")
        return int(parts[1])

    def __getattr__(self, attr: str) -> Any:
        raise TraceError(f"hook.{attr}: a traced hook function may read hook.name and "
                         "hook.layer() only")


class _Tracer:
    def __init__(self, hook: str):
        self.hook = hook
        self.nodes: List[program_pb2.ProgramNode] = []
        self.saves: List[Tuple[str, str]] = []
        # (store, key, saved name): filled with the saved array after the run.
        self.sinks: List[Tuple[Any, Any, str]] = []

    def save(self, name: str, node: str, what: str) -> None:
        if not isinstance(name, str) or not name:
            raise TraceError(f"{what}: a saved value needs a non-empty string name, got {name!r}")
        if any(n == name for n, _ in self.saves):
            raise TraceError(f"{what}: {name!r} is saved twice by the hook function on {self.hook}")
        self.saves.append((name, node))

    def add(self, kind: str, **fields: Any) -> str:
        node_id = f"n{len(self.nodes)}"
        node = program_pb2.ProgramNode(id=node_id)
        field = getattr(node, kind) if kind not in ("saved", "weight", "constant") else None
        if kind in ("saved", "weight", "constant"):
            setattr(node, kind, fields["value"])
        elif kind == "activation":
            node.activation.SetInParent()
        elif kind == "literal":
            node.literal.CopyFrom(fields["value"])
        elif kind == "hook":
            node.hook.name = fields["name"]
            node.hook.from_patch_run = fields.get("from_patch_run", False)
        else:
            for k, v in fields.items():
                target = getattr(field, k)
                if isinstance(v, (list, tuple)):
                    if v and isinstance(v[0], program_pb2.AxisSelector):
                        target.extend(v)
                    else:
                        target.extend(v)
                else:
                    setattr(field, k, v)
            field.SetInParent()
        self.nodes.append(node)
        return node_id


def _region(key: Any, shape: Optional[Tuple[int, ...]], what: str):
    """A Python index -> (AxisSelectors, resulting shape or None)."""
    if not isinstance(key, tuple):
        key = (key,)
    region = []
    lists = 0
    for k in key:
        sel = program_pb2.AxisSelector()
        if k is Ellipsis:
            sel.ellipsis = True
        elif k is None:
            raise TraceError(f"{what}: None (a new axis) in an index is not traceable; use "
                             ".unsqueeze(dim) or .reshape(...)")
        elif isinstance(k, ActivationProxy):
            raise TraceError(f"{what}: indexing with a traced value (masking) is not traceable; "
                             "use lensgrid.trace.where(mask, value, act)")
        elif isinstance(k, (bool, np.bool_)):
            raise TraceError(f"{what}: a bool index is not traceable")
        elif isinstance(k, (numbers.Integral, np.integer)):
            sel.at = int(k)
        elif isinstance(k, slice):
            step = 1 if k.step is None else int(k.step)
            if step <= 0:
                raise TraceError(f"{what}: slice step {k.step} is not traceable (steps must be > 0)")
            if k.start is None and k.stop is None and step == 1:
                sel.all = True
            else:
                sel.slice.SetInParent()
                if k.start is not None:
                    sel.slice.start = int(k.start)
                if k.stop is not None:
                    sel.slice.stop = int(k.stop)
                sel.slice.step = step
        else:
            arr = np.asarray(k)
            if arr.dtype == bool:
                raise TraceError(f"{what}: a boolean mask index is not traceable; use "
                                 "lensgrid.trace.where(mask, value, act)")
            if arr.ndim != 1 or arr.dtype.kind not in "iu":
                raise TraceError(f"{what}: index {k!r} is not traceable (ints, slices, one 1-D "
                                 "list of ints, ...)")
            lists += 1
            sel.list.indices.extend(int(i) for i in arr)
        region.append(sel)
    if lists > 1:
        raise TraceError(f"{what}: more than one list index: torch pairs them (fancy indexing), "
                         "hook programs index every axis independently; index one axis at a time")
    if sum(1 for s in region if s.HasField("ellipsis")) > 1:
        raise TraceError(f"{what}: more than one ... in an index")
    out_shape = None
    if shape is not None:
        n_explicit = sum(1 for s in region if not s.HasField("ellipsis"))
        if n_explicit > len(shape):
            raise TraceError(f"{what}: {n_explicit} indices for a value of shape {tuple(shape)}")
        full: List[program_pb2.AxisSelector] = []
        for s in region:
            if s.HasField("ellipsis"):
                full.extend(program_pb2.AxisSelector(all=True)
                            for _ in range(len(shape) - n_explicit))
            else:
                full.append(s)
        full.extend(program_pb2.AxisSelector(all=True) for _ in range(len(shape) - len(full)))
        out = []
        for s, n in zip(full, shape):
            kind = s.WhichOneof("kind")
            if kind == "all":
                out.append(n)
            elif kind == "at":
                if not -n <= s.at < n:
                    raise TraceError(f"{what}: index {s.at} out of range for an axis of size {n}")
            elif kind == "slice":
                start = s.slice.start if s.slice.HasField("start") else None
                stop = s.slice.stop if s.slice.HasField("stop") else None
                out.append(len(range(*slice(start, stop, s.slice.step or 1).indices(n))))
            elif kind == "list":
                for i in s.list.indices:
                    if not -n <= i < n:
                        raise TraceError(f"{what}: index {i} out of range for an axis of size {n}")
                out.append(len(s.list.indices))
        out_shape = tuple(out)
    return region, out_shape


def _broadcast(what: str, *shapes: Optional[Tuple[int, ...]]) -> Optional[Tuple[int, ...]]:
    if any(s is None for s in shapes):
        return None
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise TraceError(f"{what}: shapes {' and '.join(str(tuple(s)) for s in shapes)} do not "
                         "broadcast") from None


def _axes(dim: Any) -> List[int]:
    if dim is None:
        return []
    if isinstance(dim, (list, tuple)):
        return [int(d) for d in dim]
    return [int(dim)]


def _reduced_shape(shape, axes, keepdim):
    if shape is None:
        return None
    n = len(shape)
    axes = set(a % n for a in axes) if axes else set(range(n))
    return tuple((1 if i in axes else d) for i, d in enumerate(shape)
                 if keepdim or i not in axes)


class _MaxMin:
    """torch's (values, indices) of .max(dim) / .min(dim): only .values is traceable."""

    def __init__(self, values: "ActivationProxy", op: str):
        self.values = values
        self._op = op

    @property
    def indices(self):
        raise TraceError(f"act.{self._op}(dim=...).indices: arg{self._op} is not traceable")

    def __iter__(self):
        raise TraceError(f"unpacking act.{self._op}(dim=...): only .values is traceable")

    def __getitem__(self, i):
        if i == 0:
            return self.values
        return self.indices


class ActivationProxy:
    """A value inside a traced hook function: records operations as program nodes."""

    __array_priority__ = 1000

    def __init__(self, tracer: _Tracer, node: str, shape: Optional[Tuple[int, ...]],
                 is_bool: bool = False, is_activation: bool = False):
        self._tracer = tracer
        self._node = node
        self._shape = None if shape is None else tuple(int(s) for s in shape)
        self._bool = is_bool
        self._is_activation = is_activation
        self._written = False

    # ---- plumbing
    def _new(self, node, shape, is_bool=False):
        return ActivationProxy(self._tracer, node, shape, is_bool)

    def _operand(self, value: Any, what: str) -> "ActivationProxy":
        if isinstance(value, ActivationProxy):
            if value._tracer is not self._tracer:
                raise TraceError(f"{what}: a value from another hook's trace (each hook function "
                                 "sees its own activation; read another hook's value from a cache)")
            return value
        if isinstance(value, (bool, np.bool_)):
            return self._new(self._tracer.add("constant", value=float(value)), ())
        if isinstance(value, numbers.Real) and not isinstance(value, np.ndarray):
            v = float(value)
            if v != v:
                raise TraceError(f"{what}: NaN is refused in hook programs")
            return self._new(self._tracer.add("constant", value=v), ())
        if _is_torch(value):
            value = value.detach().cpu().numpy()
        try:
            arr = np.asarray(value)
        except Exception:
            raise TraceError(f"{what}: operand of type {type(value).__name__} is not traceable") from None
        if arr.dtype == object:
            raise TraceError(f"{what}: operand of type {type(value).__name__} is not traceable")
        if arr.dtype.kind == "b":
            tensor = _wire.to_tensor(arr, "literal")
            return self._new(self._tracer.add("literal", value=tensor), arr.shape, True)
        if arr.dtype.kind not in "iuf":
            raise TraceError(f"{what}: a numpy array of dtype {arr.dtype} is not traceable")
        arr = arr.astype(np.float32)
        if np.isnan(arr).any():
            raise TraceError(f"{what}: NaN is refused in hook programs")
        tensor = _wire.to_tensor(arr, "literal")
        return self._new(self._tracer.add("literal", value=tensor), arr.shape)

    def _binary(self, op: int, other: Any, name: str, reverse: bool = False):
        o = self._operand(other, name)
        a, b = (o, self) if reverse else (self, o)
        shape = _broadcast(name, a._shape, b._shape)
        node = self._tracer.add("elementwise", op=op, inputs=[a._node, b._node])
        return self._new(node, shape, op >= _EW.LT)

    def _unary(self, op: int):
        return self._new(self._tracer.add("elementwise", op=op, inputs=[self._node]), self._shape)

    def _inplace(self, result: "ActivationProxy") -> "ActivationProxy":
        # torch's in-place ops change the tensor the hook got: rebind this proxy.
        self._node, self._shape, self._bool = result._node, result._shape, result._bool
        self._written = True
        return self

    @property
    def shape(self) -> Tuple[int, ...]:
        if self._shape is None:
            raise TraceError("act.shape: the shape is not known here")
        return self._shape

    def size(self, dim: Optional[int] = None):
        return self.shape if dim is None else self.shape[dim]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return self.ndim

    # ---- arithmetic
    def __add__(self, o): return self._binary(_EW.ADD, o, "act + x")
    def __radd__(self, o): return self._binary(_EW.ADD, o, "x + act", True)
    def __sub__(self, o): return self._binary(_EW.SUB, o, "act - x")
    def __rsub__(self, o): return self._binary(_EW.SUB, o, "x - act", True)
    def __mul__(self, o): return self._binary(_EW.MUL, o, "act * x")
    def __rmul__(self, o): return self._binary(_EW.MUL, o, "x * act", True)
    def __truediv__(self, o): return self._binary(_EW.DIV, o, "act / x")
    def __rtruediv__(self, o): return self._binary(_EW.DIV, o, "x / act", True)
    def __pow__(self, o): return self._binary(_EW.POW, o, "act ** x")
    def __rpow__(self, o): return self._binary(_EW.POW, o, "x ** act", True)
    def __lt__(self, o): return self._binary(_EW.LT, o, "act < x")
    def __le__(self, o): return self._binary(_EW.LE, o, "act <= x")
    def __gt__(self, o): return self._binary(_EW.GT, o, "act > x")
    def __ge__(self, o): return self._binary(_EW.GE, o, "act >= x")
    def __eq__(self, o): return self._binary(_EW.EQ, o, "act == x")  # type: ignore[override]
    def __ne__(self, o): return self._binary(_EW.NE, o, "act != x")  # type: ignore[override]
    __hash__ = object.__hash__

    def __iadd__(self, o): return self._inplace(self + o)
    def __isub__(self, o): return self._inplace(self - o)
    def __imul__(self, o): return self._inplace(self * o)
    def __itruediv__(self, o): return self._inplace(self / o)
    def __ipow__(self, o): return self._inplace(self ** o)

    def __neg__(self): return self._unary(_EW.NEG)
    def __pos__(self): return self
    def __abs__(self): return self._unary(_EW.ABS)

    def __matmul__(self, o):
        other = self._operand(o, "act @ x")
        return self._matmul(self, other)

    def __rmatmul__(self, o):
        other = self._operand(o, "x @ act")
        return self._matmul(other, self)

    def _matmul(self, a, b):
        shape = None
        if a._shape is not None and b._shape is not None:
            try:
                shape = np.matmul(np.empty(a._shape, np.bool_), np.empty(b._shape, np.bool_)).shape
            except ValueError:
                raise TraceError(f"a @ b: shapes {a._shape} and {b._shape} do not multiply") from None
        return self._new(self._tracer.add("matmul", a=a._node, b=b._node), shape)

    # ---- elementwise methods (torch names)
    def exp(self): return self._unary(_EW.EXP)
    def log(self): return self._unary(_EW.LOG)
    def sqrt(self): return self._unary(_EW.SQRT)
    def tanh(self): return self._unary(_EW.TANH)
    def relu(self): return self._unary(_EW.RELU)
    def sigmoid(self): return self._unary(_EW.SIGMOID)
    def abs(self): return self._unary(_EW.ABS)
    def neg(self): return self._unary(_EW.NEG)
    def add(self, o): return self + o
    def sub(self, o): return self - o
    def mul(self, o): return self * o
    def div(self, o): return self / o
    def pow(self, o): return self ** o
    def maximum(self, o): return self._binary(_EW.MAXIMUM, o, "act.maximum(x)")
    def minimum(self, o): return self._binary(_EW.MINIMUM, o, "act.minimum(x)")

    def clamp(self, min=None, max=None):  # noqa: A002 (torch's names)
        out = self
        if min is not None:
            out = out.maximum(min)
        if max is not None:
            out = out.minimum(max)
        return out

    clip = clamp

    def add_(self, o): return self._inplace(self + o)
    def sub_(self, o): return self._inplace(self - o)
    def mul_(self, o): return self._inplace(self * o)
    def div_(self, o): return self._inplace(self / o)
    def zero_(self): return self._inplace(self * 0.0)
    def fill_(self, v): return self._inplace(self * 0.0 + v)

    def clone(self): return self
    def detach(self): return self
    def contiguous(self): return self
    def float(self): return self

    def to(self, *args, **kwargs):
        return self

    def cpu(self): return self

    # ---- reductions
    def _reduce(self, op, dim, keepdim, name, p=0.0):
        axes = _axes(dim)
        node = self._tracer.add("reduce", op=op, input=self._node, axes=axes, keepdim=bool(keepdim),
                                p=float(p))
        return self._new(node, _reduced_shape(self._shape, axes, keepdim))

    def sum(self, dim=None, keepdim=False, axis=None):
        return self._reduce(_RED.REDUCE_SUM, dim if axis is None else axis, keepdim, "sum")

    def mean(self, dim=None, keepdim=False, axis=None):
        return self._reduce(_RED.REDUCE_MEAN, dim if axis is None else axis, keepdim, "mean")

    def max(self, dim=None, keepdim=False):
        if isinstance(dim, (ActivationProxy, np.ndarray)) or (dim is not None and not isinstance(dim, (int, np.integer))):
            return self.maximum(dim)
        values = self._reduce(_RED.REDUCE_MAX, dim, keepdim, "max")
        return values if dim is None else _MaxMin(values, "max")

    def min(self, dim=None, keepdim=False):
        if isinstance(dim, (ActivationProxy, np.ndarray)) or (dim is not None and not isinstance(dim, (int, np.integer))):
            return self.minimum(dim)
        values = self._reduce(_RED.REDUCE_MIN, dim, keepdim, "min")
        return values if dim is None else _MaxMin(values, "min")

    def amax(self, dim=None, keepdim=False):
        return self._reduce(_RED.REDUCE_MAX, dim, keepdim, "amax")

    def amin(self, dim=None, keepdim=False):
        return self._reduce(_RED.REDUCE_MIN, dim, keepdim, "amin")

    def norm(self, p=2, dim=None, keepdim=False):
        if not isinstance(p, numbers.Real):
            raise TraceError(f"act.norm(p={p!r}): only numeric p is traceable")
        return self._reduce(_RED.REDUCE_NORM, dim, keepdim, "norm", p)

    def softmax(self, dim=-1):
        return self._new(self._tracer.add("softmax", input=self._node, axis=int(dim)), self._shape)

    def log_softmax(self, dim=-1):
        return self._new(self._tracer.add("softmax", input=self._node, axis=int(dim), log=True),
                         self._shape)

    # ---- shape
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(s) for s in shape)
        out = None
        if self._shape is not None:
            try:
                out = np.empty(self._shape, np.bool_).reshape(shape).shape
            except ValueError:
                raise TraceError(f"act.reshape{shape}: cannot reshape {self._shape}") from None
        return self._new(self._tracer.add("reshape", input=self._node, shape=list(shape)), out, self._bool)

    view = reshape

    def permute(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        axes = tuple(int(a) for a in axes)
        out = None
        if self._shape is not None:
            if sorted(a % len(self._shape) for a in axes) != list(range(len(self._shape))):
                raise TraceError(f"act.permute{axes}: not a permutation of {len(self._shape)} axes")
            out = tuple(self._shape[a] for a in axes)
        return self._new(self._tracer.add("permute", input=self._node, axes=list(axes)), out, self._bool)

    def transpose(self, a, b):
        n = self.ndim
        axes = list(range(n))
        axes[a % n], axes[b % n] = axes[b % n], axes[a % n]
        return self.permute(*axes)

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    def unsqueeze(self, dim):
        shape = list(self.shape)
        dim = dim if dim >= 0 else dim + len(shape) + 1
        shape.insert(dim, 1)
        return self.reshape(*shape)

    def squeeze(self, dim=None):
        shape = self.shape
        if dim is None:
            return self.reshape(*[s for s in shape if s != 1])
        dim %= len(shape)
        if shape[dim] != 1:
            return self
        return self.reshape(*[s for i, s in enumerate(shape) if i != dim])

    def flatten(self, start_dim=0, end_dim=-1):
        shape = self.shape
        n = len(shape)
        s, e = start_dim % n, end_dim % n
        return self.reshape(*shape[:s], int(np.prod(shape[s:e + 1])), *shape[e + 1:])

    def expand_as(self, other):
        return self + other * 0.0

    # ---- indexing
    def __getitem__(self, key):
        region, shape = _region(key, self._shape, "act[...]")
        return self._new(self._tracer.add("index", input=self._node, region=region), shape, self._bool)

    def __setitem__(self, key, value):
        region, region_shape = _region(key, self._shape, "act[...] = value")
        v = self._operand(value, "act[...] = value")
        if region_shape is not None and v._shape is not None:
            try:
                np.broadcast_to(np.empty(v._shape, np.bool_), region_shape)
            except ValueError:
                raise TraceError(f"act[...] = value: a value of shape {v._shape} does not broadcast "
                                 f"to the region's shape {region_shape}") from None
        node = self._tracer.add("write", target=self._node, value=v._node, region=region)
        self._node = node
        self._written = True

    # ---- what cannot be traced
    def _refuse(self, what: str, hint: str = ""):
        raise TraceError(f"{what} is not traceable: a hook function runs on the worker as a hook "
                         f"program, so its values are not available in Python{hint}")

    def __float__(self): self._refuse("float(act)")
    def __int__(self): self._refuse("int(act)")
    def __index__(self): self._refuse("using act as an index")
    def __complex__(self): self._refuse("complex(act)")

    def __bool__(self):
        self._refuse("the truth value of act (`if act ...:`, `and`, `or`, `not`)",
                     "; use lensgrid.trace.where(condition, a, b)")

    def __len__(self):
        return self.shape[0]

    def __iter__(self):
        self._refuse("iterating over act", "; index it instead")

    def __array__(self, *args, **kwargs):
        self._refuse("converting act to a numpy array (np.asarray(act), act.numpy())",
                     "; cache the activation with run_with_cache to read it")

    def numpy(self): self._refuse("act.numpy()")
    def tolist(self): self._refuse("act.tolist()")
    def item(self): self._refuse("act.item()")

    def __repr__(self):
        return f"<traced value {self._node} shape={self._shape} of hook {self._tracer.hook}>"

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise TraceError(f"act.{attr} is not traceable (not an operation hook programs have)")

    # ---- numpy and torch functions on proxies
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__" or kwargs.get("out") is not None:
            raise TraceError(f"np.{ufunc.__name__}.{method} on a traced value is not traceable")
        fn = _UFUNCS.get(ufunc.__name__)
        if fn is None:
            raise TraceError(f"np.{ufunc.__name__} on a traced value is not traceable")
        return fn(*inputs)

    def __array_function__(self, func, types, args, kwargs):
        fn = _NP_FUNCS.get(func.__name__)
        if fn is None:
            raise TraceError(f"np.{func.__name__} on a traced value is not traceable")
        return fn(*args, **kwargs)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        fn = _TORCH_FUNCS.get(name)
        if fn is None:
            raise TraceError(f"torch.{name} on a traced value is not traceable")
        return fn(*args, **kwargs)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _first_proxy(*values):
    for v in values:
        if isinstance(v, ActivationProxy):
            return v
        if isinstance(v, (list, tuple)):
            p = _first_proxy(*v)
            if p is not None:
                return p
    raise TraceError("no traced value among the operands")


def where(condition: Any, if_true: Any, if_false: Any) -> ActivationProxy:
    """`if_true` where `condition` else `if_false` (torch.where / np.where), traced."""
    p = _first_proxy(condition, if_true, if_false)
    c, t, f = (p._operand(v, "where(...)") for v in (condition, if_true, if_false))
    shape = _broadcast("where(...)", c._shape, t._shape, f._shape)
    node = p._tracer.add("where", condition=c._node, if_true=t._node, if_false=f._node)
    return p._new(node, shape)


def einsum(equation: str, *operands: Any) -> ActivationProxy:
    """torch.einsum with an explicit output ("bphd,hdm->bphm"), traced."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    p = _first_proxy(*operands)
    if "->" not in equation:
        raise TraceError(f"einsum({equation!r}): write the output explicitly (\"...->...\")")
    ops = [p._operand(o, "einsum(...)") for o in operands]
    shape = None
    if all(o._shape is not None for o in ops):
        try:
            shape = np.einsum(equation, *[np.empty(o._shape, np.float32) for o in ops]).shape
        except ValueError as e:
            raise TraceError(f"einsum({equation!r}): {e}") from None
    node = p._tracer.add("einsum", equation=equation.replace(" ", ""), inputs=[o._node for o in ops])
    return p._new(node, shape)


def project(x: ActivationProxy, direction: Any, mode: str = "onto") -> ActivationProxy:
    """Along the last axis: "onto" gives (x.d / d.d) d, "out" gives x minus that."""
    p = _first_proxy(x)
    d = p._operand(direction, "project(...)")
    x = p._operand(x, "project(...)")
    m = program_pb2.Project.ONTO if mode == "onto" else program_pb2.Project.OUT
    return p._new(p._tracer.add("project", mode=m, input=x._node, direction=d._node), x._shape)


def _ufunc_binary(op, name):
    def f(a, b):
        if isinstance(a, ActivationProxy):
            return a._binary(op, b, name)
        return b._binary(op, a, name, reverse=True)
    return f


_UFUNCS: Dict[str, Callable] = {
    "add": _ufunc_binary(_EW.ADD, "np.add"), "subtract": _ufunc_binary(_EW.SUB, "np.subtract"),
    "multiply": _ufunc_binary(_EW.MUL, "np.multiply"),
    "true_divide": _ufunc_binary(_EW.DIV, "np.divide"), "divide": _ufunc_binary(_EW.DIV, "np.divide"),
    "power": _ufunc_binary(_EW.POW, "np.power"), "maximum": _ufunc_binary(_EW.MAXIMUM, "np.maximum"),
    "minimum": _ufunc_binary(_EW.MINIMUM, "np.minimum"), "less": _ufunc_binary(_EW.LT, "np.less"),
    "less_equal": _ufunc_binary(_EW.LE, "np.less_equal"), "greater": _ufunc_binary(_EW.GT, "np.greater"),
    "greater_equal": _ufunc_binary(_EW.GE, "np.greater_equal"),
    "equal": _ufunc_binary(_EW.EQ, "np.equal"), "not_equal": _ufunc_binary(_EW.NE, "np.not_equal"),
    "negative": lambda a: -a, "absolute": lambda a: a.abs(), "exp": lambda a: a.exp(),
    "log": lambda a: a.log(), "sqrt": lambda a: a.sqrt(), "tanh": lambda a: a.tanh(),
    "matmul": lambda a, b: a @ b if isinstance(a, ActivationProxy) else b.__rmatmul__(a),
}
_NP_FUNCS: Dict[str, Callable] = {
    "where": where, "einsum": einsum, "matmul": lambda a, b: _UFUNCS["matmul"](a, b),
    "sum": lambda a, axis=None, keepdims=False: a.sum(axis, keepdims),
    "mean": lambda a, axis=None, keepdims=False: a.mean(axis, keepdims),
    "max": lambda a, axis=None, keepdims=False: a.amax(axis, keepdims),
    "amax": lambda a, axis=None, keepdims=False: a.amax(axis, keepdims),
    "min": lambda a, axis=None, keepdims=False: a.amin(axis, keepdims),
    "amin": lambda a, axis=None, keepdims=False: a.amin(axis, keepdims),
    "reshape": lambda a, shape: a.reshape(shape),
    "transpose": lambda a, axes=None: a.T if axes is None else a.permute(*axes),
    "clip": lambda a, lo, hi: a.clamp(lo, hi),
}


def _torch_softmax(a, dim=-1, **_):
    return a.softmax(dim)


_TORCH_FUNCS: Dict[str, Callable] = {
    "where": where, "einsum": einsum, "matmul": lambda a, b: _UFUNCS["matmul"](a, b),
    "softmax": _torch_softmax, "log_softmax": lambda a, dim=-1, **_: a.log_softmax(dim),
    "exp": lambda a: a.exp(), "log": lambda a: a.log(), "sqrt": lambda a: a.sqrt(),
    "tanh": lambda a: a.tanh(), "relu": lambda a, inplace=False: a.relu(),
    "sigmoid": lambda a: a.sigmoid(), "abs": lambda a: a.abs(),
    "maximum": _ufunc_binary(_EW.MAXIMUM, "torch.maximum"),
    "minimum": _ufunc_binary(_EW.MINIMUM, "torch.minimum"),
    "zeros_like": lambda a, **_: a * 0.0, "ones_like": lambda a, **_: a * 0.0 + 1.0,
    "sum": lambda a, dim=None, keepdim=False: a.sum(dim, keepdim),
    "mean": lambda a, dim=None, keepdim=False: a.mean(dim, keepdim),
    "norm": lambda a, p=2, dim=None, keepdim=False: a.norm(p, dim, keepdim),
    "clamp": lambda a, min=None, max=None: a.clamp(min, max),
    "__add__": lambda a, b: a + b, "add": lambda a, b: _UFUNCS["add"](a, b),
    "__mul__": lambda a, b: a * b, "mul": lambda a, b: _UFUNCS["multiply"](a, b),
    "__sub__": lambda a, b: a - b, "sub": lambda a, b: _UFUNCS["subtract"](a, b),
}


def save(name: str, value: Any) -> Any:
    """Inside a traced hook function: return `value` (a traced value) to Python as `name`,
    without changing the activation (a program `saves` entry). After
    model.run_with_hooks(..., return_saved=True) it is saved[name]; names are unique within a
    run. Returns value, so `return save("z", z)` also works."""
    if not isinstance(value, ActivationProxy):
        raise TraceError(f"lensgrid.save({name!r}, ...): the value is a {type(value).__name__}, "
                         "not a traced value (save what the hook function computes from act)")
    value._tracer.save(name, value._node, f"lensgrid.save({name!r}, ...)")
    return value


class Store(dict):
    """A dict a traced hook function records into, as TransformerLens users do with a plain
    dict: `store[hook.name] = act.norm(dim=-1)`. Each traced value assigned becomes a saved
    value named by its key (a string); run_with_hooks replaces it with the array the worker
    computed. Anything else assigned is kept as given."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, ActivationProxy):
            if not isinstance(key, str):
                raise TraceError(f"Store[{key!r}] = act...: keys of traced values must be "
                                 "strings (they name the saved value)")
            value._tracer.save(key, value._node, f"store[{key!r}] = ...")
            value._tracer.sinks.append((self, key, key))
        dict.__setitem__(self, key, value)


def trace_hook(hook_name: str, fn: Callable, shape: Optional[Sequence[int]] = None,
               is_bool: bool = False) -> program_pb2.HookProgram:
    """Calls fn(act, hook) on a proxy of the activation at `hook_name` (shape: the activation's,
    when known) and returns the hook program it recorded."""
    return trace_hook_with_sinks(hook_name, fn, shape, is_bool)[0]


def trace_hook_with_sinks(hook_name: str, fn: Callable, shape: Optional[Sequence[int]] = None,
                          is_bool: bool = False
                          ) -> Tuple[program_pb2.HookProgram, List[Tuple[Any, Any, str]]]:
    """trace_hook, plus the (Store, key, saved name) entries the function wrote."""
    tracer = _Tracer(hook_name)
    act = ActivationProxy(tracer, tracer.add("activation"), None if shape is None else tuple(shape),
                          is_bool, is_activation=True)
    hook = HookInfo(hook_name)
    try:
        out = fn(act, hook)
    except TraceError as e:
        raise TraceError(f"hook function {getattr(fn, '__name__', fn)!s} on {hook_name}: {e}") from None
    program = program_pb2.HookProgram(hook=hook_name)
    if out is None:
        output = act._node if act._written else ""
    elif isinstance(out, ActivationProxy):
        if out._tracer is not tracer:
            raise TraceError(f"hook function on {hook_name} returned a value of another hook's trace")
        if out._bool:
            raise TraceError(f"hook function on {hook_name} returned a bool value (a comparison); "
                             "a hook's output must be floating point")
        if out._shape is not None and act._shape is not None and out._shape != tuple(shape or ()):
            raise TraceError(f"hook function on {hook_name} returned shape {out._shape}; the "
                             f"activation's shape is {tuple(shape or ())}")
        output = out._node
    else:
        raise TraceError(f"hook function on {hook_name} returned a {type(out).__name__}: return "
                         "the activation (the traced value) or None")
    if output == "n0":
        output = ""  # returned the activation unchanged: observe only
    program.nodes.extend(tracer.nodes)
    program.output = output
    for name, node in tracer.saves:
        program.saves.add(name=name, node=node)
    return program, tracer.sinks
