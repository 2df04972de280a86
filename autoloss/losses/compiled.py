"""Compiled surrogates: a metric program's per-class sums as one ``torch.compile`` graph.

What is compiled, forward and backward: everything from the logits to the program's statistics
(softmax, the one-hot ground truth and validity mask, every curve, the relaxed AND / OR,
erosion, dilation and edges, the per-class sums), with inductor (C++/OpenMP on CPU, Triton on
GPU). The curves' coefficients are graph **inputs** (:mod:`autoloss.core.tensor_curves`), so one
graph serves every curve of the same kinds and numbers of pieces: all the trials of a search.
The score (a formula over ``[C]`` vectors) and the input checks stay eager.

One graph per :class:`GraphKey` (the program, its options, the curves' kinds and pieces, dtype,
device and shapes) per process, compiled on first use with ``dynamic=False``. The backward
recomputes the fused forward instead of reading saved full-size activations (memory-bound on
CPU; a selective-checkpoint policy that prefers recomputing everything), filters included.

BF1 (issue #28) is compiled without that policy. A compiled step's peak is its backward's, the
buffers inductor keeps alive at once; for BF1 on ``[8,12,180,240]`` float32 (one thread, fresh
process, ``MALLOC_MMAP_THRESHOLD_`` lowered; inductor's generated code gives the same figures)
the recomputing graph peaked at 18 full-size buffers, 296 MiB against the eager kernel's 247 MiB:
the recomputed soft edge's four curve values and four slopes at ``x`` and at its erosion (eight
buffers) stayed alive from the edge until the edge's gradient, after the dilation's backward.
:meth:`TensorOps.edge` now forms that gradient from two factors, as the eager kernel does (the
recomputing graph: 217 MiB), and without the policy the forward saves seven full-size tensors
(116 MiB) and the step peaks at 182 MiB, in the forward, while the backward no longer recomputes
the softmax, the curves, the erosion and the dilations: 7.7-8.1x cross-entropy's time instead
of 11.0-11.3x (median of single calls; 6.7-7.2x against 9.6-9.7x over back-to-back blocks; two
processes each, one thread, no page faults, on a loaded machine, so indications).

Inductor's on-disk caches (FX graph and AOTAutograd caches, on by default, in
``$TORCHINDUCTOR_CACHE_DIR``, default ``<tmp>/torchinductor_<user>``) make the same graph cheap
to compile again in another process: a search's later workers and runs.

When (``compile`` option of :class:`~autoloss.losses.SurrogateLoss`, then this order):

1. ``AUTOLOSS_COMPILE=0`` (or ``false``/``no``/``off``) forces the eager kernel everywhere;
   ``AUTOLOSS_COMPILE=1`` compiles every eligible call;
2. ``compile=True`` / ``False`` on the loss;
3. ``compile="auto"`` (the default): inside :func:`compile_losses` (the proxy uses it) as that
   context says; otherwise compile once the eager forward passes of one key have taken
   :data:`AUTO_AFTER` seconds in this process. Compiling costs about 10-30 s per graph on a cold
   cache (plus ~15 s of compiler start-up once per process), 3-7 s from the on-disk cache, and
   saves 50-300 ms per forward+backward on CamVid-sized batches: renting (eager) until the
   rent paid equals the price of buying (compiling) never spends more than about twice what the
   better choice in hindsight would, so one-off calls, tests and short loops stay eager and a
   long training loop compiles early in its run.

Eligible calls: 2-D float32 / float64 logits that require grad (with grad mode on), non-empty, and
curves that are :class:`~autoloss.core.relaxations.BezierCurve`, ``LinearCurve`` or
``IdentityCurve``; everything else (evaluation without grad, half precision, custom curve
callables) runs the eager kernel. When compilation fails (no C++ compiler, an untraceable user
program, ...) the key runs eagerly from then on, after one :class:`CompileFallbackWarning`.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
import time
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from autoloss.core.programs import BUILTIN_PROGRAMS, MetricProgram
from autoloss.core.relaxations import Curve
from autoloss.core.tensor_curves import CurveTensors, curve_signature, curve_tensors
from autoloss.core.tensor_ops import TensorOps
from autoloss.errors import InvalidValueError

__all__ = [
    "AUTO_AFTER",
    "ENV_COMPILE",
    "CompileFallbackWarning",
    "GraphKey",
    "check_compile_option",
    "compile_losses",
    "compile_report",
    "compile_totals",
    "compiled_stats",
    "compiler_problem",
    "graph_key",
    "note_eager",
    "wants_compile",
]

ENV_COMPILE = "AUTOLOSS_COMPILE"
AUTO_AFTER = 10.0  # seconds of eager forward time of one key before compile="auto" compiles it
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_OVERRIDE: contextvars.ContextVar[bool | None] = contextvars.ContextVar("autoloss_compile",
                                                                        default=None)


class CompileFallbackWarning(UserWarning):
    """A surrogate could not be compiled and runs the eager kernel."""


def check_compile_option(compile: Any) -> bool | str:
    """``compile`` must be True, False or ``"auto"``."""
    if compile is True or compile is False or compile == "auto":
        return compile
    raise InvalidValueError(f"compile must be True, False or 'auto', but got {compile=!r}")


def _env_choice() -> bool | None:
    value = os.environ.get(ENV_COMPILE, "").strip().lower()
    if not value or value == "auto":
        return None
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise InvalidValueError(f"{ENV_COMPILE} must be one of {list(_ON + _OFF) + ['auto']}, but got "
                     f"{ENV_COMPILE}={os.environ[ENV_COMPILE]!r}")


@contextlib.contextmanager
def compile_losses(enabled: bool | str = True) -> Iterator[None]:
    """Within this block, surrogates with ``compile="auto"`` compile (``True``) or stay eager
    (``False``) from their first eligible call; ``"auto"`` restores the call counting. An
    explicit ``compile=`` on a loss and ``AUTOLOSS_COMPILE`` still win."""
    check_compile_option(enabled)
    token = _OVERRIDE.set(None if enabled == "auto" else bool(enabled))
    try:
        yield
    finally:
        _OVERRIDE.reset(token)


@dataclass(frozen=True)
class GraphKey:
    """Everything a compiled graph's structure depends on (curve *parameters* are inputs)."""

    program: MetricProgram
    mode: str  # "hard" labels [N,H,W] or "soft" [N,C,H,W]
    curves: tuple[tuple[str, str, int], ...]  # (name, kind, pieces)
    tol: int
    drop_bg: bool
    eps: float
    float32_dilation: bool
    dtype: torch.dtype
    device: torch.device
    logits_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    target_dtype: torch.dtype

    def name(self) -> str:
        """A stable identifier (same in every process) naming the compiled function."""
        stats = getattr(self.program.stats, "__qualname__", "stats")
        text = repr((self.program.name, stats, self.program.reference, self.mode, self.curves,
                     self.tol, self.drop_bg, self.eps, self.float32_dilation, str(self.dtype),
                     self.device.type, self.logits_shape, self.target_shape,
                     str(self.target_dtype)))
        return f"autoloss_{self.program.name}_{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def graph_key(program: MetricProgram, curves: Mapping[str, Curve], logits: Tensor,
              target: Tensor, *, mode: str, tol: int, drop_bg: bool, eps: float,
              float32_dilation: bool) -> GraphKey | None:
    """The key of this call, or None if it is not eligible for compilation (see the module
    docstring)."""
    if logits.dtype not in (torch.float32, torch.float64) or logits.numel() == 0:
        return None
    if logits.dim() != 4:  # 3-D volumes: the traced filters are 2-D, the eager ones cubes
        return None
    if not (logits.requires_grad and torch.is_grad_enabled()):
        return None
    try:
        signature = tuple((name, *curve_signature(curve)) for name, curve in curves.items())
    except TypeError:  # a custom curve callable
        return None
    return GraphKey(program, mode, signature, int(tol), bool(drop_bg), float(eps),
                    bool(float32_dilation), logits.dtype, logits.device,
                    tuple(logits.shape), tuple(target.shape), target.dtype)


@dataclass
class _Entry:
    function: Callable[..., Any]
    calls: int = 0
    ready: bool = False
    failed: bool = False
    seconds: float = 0.0  # the first (compiling) call


@dataclass
class _GraphCache:
    """This process's compiled graphs by key, and the eager time per key under ``"auto"``."""

    entries: dict[GraphKey, _Entry] = field(default_factory=dict)
    eager_seconds: dict[GraphKey, float] = field(default_factory=dict)  # under "auto"
    warned: bool = False


_GRAPHS = _GraphCache()


def wants_compile(option: bool | str, key: GraphKey | None) -> bool:
    """Whether this call should run compiled (``option`` is the loss's ``compile``; an eager
    call under ``"auto"`` reports its time with :func:`note_eager`)."""
    if key is None:
        return False
    env = _env_choice()
    if env is not None:
        return env
    if option != "auto":
        return bool(option)
    override = _OVERRIDE.get()
    if override is not None:
        return override
    if key in _GRAPHS.entries:
        return True
    return _GRAPHS.eager_seconds.get(key, 0.0) >= AUTO_AFTER


def note_eager(key: GraphKey | None, seconds: float) -> None:
    """Count an eager forward of ``key`` that took ``seconds`` (for ``compile="auto"``)."""
    if key is not None:
        _GRAPHS.eager_seconds[key] = _GRAPHS.eager_seconds.get(key, 0.0) + seconds


_SAVING = BUILTIN_PROGRAMS["bf1"]  # compiled without the recompute policy (module docstring)


def _make_body(key: GraphKey) -> Callable[..., Any]:
    """The function compiled for ``key``: ``(logits, target, ignore, tensors) -> (stats,
    any_valid)``, ``tensors`` the curves' tables and bounds in ``key.curves`` order."""
    program, mode, curves = key.program, key.mode, key.curves
    tol, drop_bg, eps, float32_dilation = key.tol, key.drop_bg, key.eps, key.float32_dilation

    def body(logits: Tensor, target: Tensor, ignore: Tensor,
             tensors: tuple[Tensor, ...]) -> tuple[dict[str, Tensor], Tensor]:
        probs = torch.softmax(logits, dim=1)
        num_classes = logits.shape[1]
        if mode == "hard":
            valid = (target >= 0) & (target < num_classes) & (target != ignore)
            classes = torch.arange(num_classes, device=target.device).view(1, -1, 1, 1)
            gt = ((target.unsqueeze(1) == classes) & valid.unsqueeze(1)).to(logits.dtype)
            mask = valid.unsqueeze(1).to(logits.dtype)
            any_valid = valid.any()
        else:
            gt = target.to(logits.dtype)
            mask = torch.ones_like(gt[:, :1])
            any_valid = torch.ones((), dtype=torch.bool, device=logits.device)
        given = {name: CurveTensors(kind, tensors[2 * i], tensors[2 * i + 1])
                 for i, (name, kind, _) in enumerate(curves)}
        ops = TensorOps(given, eps=eps, float32_dilation=float32_dilation)
        stats = program.run_stats(ops, probs, gt, mask, tol=tol, drop_bg=drop_bg)
        return stats, any_valid

    def checkpointed(logits: Tensor, target: Tensor, ignore: Tensor,
                     tensors: tuple[Tensor, ...]) -> tuple[dict[str, Tensor], Tensor]:
        # the backward recomputes the forward (memory-bound on CPU); not
        # for soft labels, where torch 2.13's partitioner fails on the checkpointed graph
        # ("Node fma was invalid, but is output"), nor for BF1 (module docstring): their
        # graphs save what autograd and the partitioner would
        if mode == "soft" or program is _SAVING:
            return body(logits, target, ignore, tensors)
        return checkpoint(body, logits, target, ignore, tensors, use_reentrant=False,
                          context_fn=_recompute_all)

    # a code object of its own per key: dynamo keeps compiled code per code object (its
    # recompilation limit would otherwise count every key of every loss in the process)
    name = key.name()
    code = checkpointed.__code__.replace(co_name=name)
    return types.FunctionType(code, checkpointed.__globals__, name, checkpointed.__defaults__,
                              checkpointed.__closure__)


def _compile(key: GraphKey) -> Callable[..., Any]:
    return torch.compile(_make_body(key), fullgraph=True, dynamic=False)


def _policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """Recompute everything in the backward."""
    return CheckpointPolicy.PREFER_RECOMPUTE


def _recompute_all() -> tuple[Any, Any]:
    return create_selective_checkpoint_contexts(_policy)


@contextlib.contextmanager
def _compiling() -> Iterator[None]:
    """The settings of a compiling call: the backward is compiled with the forward (so a
    failure surfaces here), and torch's notice that a checkpoint policy is in use is hidden."""
    import torch._functorch.config as functorch_config

    notice = logging.getLogger("torch._higher_order_ops.wrap")
    level = notice.level
    notice.setLevel(logging.ERROR)
    try:
        with functorch_config.patch(force_non_lazy_backward_lowering=True):
            yield
    finally:
        notice.setLevel(level)


@contextlib.contextmanager
def _compile_turn(key: GraphKey) -> Iterator[bool]:
    """Whether this process may compile ``key`` now: False while another process compiles it
    (an exclusive, non-blocking ``flock`` beside inductor's cache), so that process fills the
    on-disk cache and this one, running eagerly meanwhile, then loads from it in seconds."""
    try:
        import fcntl

        from torch._inductor.runtime.cache_dir_utils import cache_dir
    except ImportError:  # no flock (Windows): every process compiles for itself
        yield True
        return
    folder = os.path.join(cache_dir(), "autoloss-locks")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{key.name()}.lock"), "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _reason(err: BaseException) -> str:
    """The innermost cause of a compilation error, in one line."""
    inner = getattr(err, "inner_exception", None) or err.__cause__ or err
    text = next((line for line in str(inner).splitlines() if line.strip()), "")
    return f"{type(inner).__name__}: {text.strip()[:300]}"


def compiled_stats(key: GraphKey, logits: Tensor, target: Tensor, *, ignore_index: int | None,
                   curves: Mapping[str, Curve]) -> tuple[dict[str, Tensor], Tensor] | None:
    """``(stats, any_valid)`` of the compiled graph of ``key`` (compiling it on the first call),
    or None when it cannot run compiled: compilation failed (then one
    :class:`CompileFallbackWarning`, and eager from then on) or another process is compiling
    the same graph (eager for this call)."""
    entry = _GRAPHS.entries.get(key)
    if entry is not None and entry.failed:
        return None
    ignore = torch.tensor(-1 if ignore_index is None else ignore_index, device=target.device)
    tensors: list[Tensor] = []
    for name, _, _ in key.curves:
        ct = curve_tensors(curves[name], key.dtype, key.device)
        tensors += [ct.table, ct.bounds]
    args = (logits, target, ignore, tuple(tensors))
    if entry is not None and entry.ready:
        entry.calls += 1
        return entry.function(*args)
    started = time.perf_counter()
    try:
        with _compile_turn(key) as turn:
            if not turn:
                return None
            if entry is None:
                entry = _GRAPHS.entries[key] = _Entry(_compile(key))
            with _compiling():
                out = entry.function(*args)
    except Exception as err:  # no compiler, an untraceable program, ...
        if entry is None:
            entry = _GRAPHS.entries[key] = _Entry(lambda *args: None)
        entry.failed = True
        if not _GRAPHS.warned:
            _GRAPHS.warned = True
            warnings.warn(f"autoloss could not compile the {key.program.name!r} surrogate "
                          f"({_reason(err)}); it runs the eager kernel (set {ENV_COMPILE}=0 to "
                          f"skip trying)", CompileFallbackWarning, stacklevel=4)
        return None
    entry.calls += 1
    entry.ready, entry.seconds = True, time.perf_counter() - started
    return out


def compile_report() -> list[dict[str, Any]]:
    """One record per key this process compiled or tried to: ``name``, ``program``,
    ``ready``, ``failed``, ``calls``, ``seconds`` (the compiling first call)."""
    return [{"name": key.name(), "program": key.program.name, "ready": e.ready,
             "failed": e.failed, "calls": e.calls, "seconds": e.seconds}
            for key, e in _GRAPHS.entries.items()]


def compile_totals() -> tuple[int, float]:
    """``(graphs compiled, seconds their compiling calls took)`` in this process so far."""
    ready = [e for e in _GRAPHS.entries.values() if e.ready]
    return len(ready), sum(e.seconds for e in ready)


def compiler_problem() -> str | None:
    """Why compilation cannot work here (no C++ compiler for CPU code), or None."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as err:
        return f"no C++ compiler for torch.compile ({type(err).__name__}: {err})"
    return None
