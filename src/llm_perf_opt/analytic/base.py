"""BaseLayer: the analytic cost API every module type implements.

Units (base units everywhere, the unit in the method name or docstring):

- FLOPs are floating-point operations, **FLOPs = 2 x MACs** for every matrix
  product and convolution (one multiply + one add per MAC). This is the
  convention of ``torch.utils.flop_counter.FlopCounterMode`` and it is stated
  here once; every formula in :mod:`llm_perf_opt.analytic.layers` follows it.
- *Tensor-core* FLOPs are those of matrix products, batched matrix products,
  convolutions and attention score/value products (what FlopCounterMode
  counts); *CUDA-core* FLOPs are everything elementwise (norms, activations,
  softmax, bias adds, RoPE, residual adds), estimated per element as written
  beside each formula.
- Bytes: ``forward_cal_io`` counts bytes read + bytes written by the kernels
  of the forward pass (weights, inputs, outputs, and the intermediates an
  un-fused implementation writes to memory). Memory footprints
  (``forward_memory_*``) are resident bytes.
- A composite layer sums its children's FLOPs/bytes (times its repetition
  count); its activation memory is a *peak*: its own held bytes plus the
  largest, over its children in order, of a child's peak and what the
  children before it kept (``kept_bytes``), never a sum.
- A node may be held at several places (layers of equal work, decode steps
  at other KV lengths): nodes are never changed once their parent holds them.

A layer's numbers are computed once at construction (shapes are fixed by the
workload), so queries are attribute reads: a whole report is a few thousand
arithmetic operations.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, cast

from llm_perf_opt.data.common import Repetition
from llm_perf_opt.hardware.gemms import gemm_flops
from llm_perf_opt.hardware.patterns import split_key
from llm_perf_opt.vocab import OperatorCategory, Stage

#: Index of the per-category cost vector: [tensor-core FLOPs, CUDA-core FLOPs, IO bytes, kernel launches].
TC, CC, IO, LAUNCH = 0, 1, 2, 3

#: The projector range's host work, in dispatched ops (the unit of the timeline model's host cost per op).
#: Source: scripts/gpu/projector_pages.py on two H200 machines (reports/hardware/h200/projector-pages.json and
#: projector-pages-2.json: embed_images under a StageRecorder at 1, 2, 4 and 8 Small, Base and Gundam pages; host
#: time around the range = fixed + per page, in module-probe calls), less the 3.4 and 4.1 probe calls that the
#: host clock holds outside the range (Small's host-clock fixed part over its CUDA-event one), divided by the
#: 1.660 probe calls per op that calibrate --prior --host-speed takes from the ten H200 host-speed files (their
#: module probe's us per launch, per op of the decode stage, over its median; 1.654 before the decode's per-row
#: launches had their own host weight, analytic.model.DECODE_ROW_HOST_WEIGHT, and 1.664 before the n-gram ban's
#: launches were counted per token pick, docs/results-h200.md section 22), the model's own launches taken
#: out, least squares over both files. tests/integration/test_projector_pages_script.py derives all three;
#: docs/results-h200.md section 19.
#: an aten call that launches nothing (slice, reshape, permute, no-op cast, expand) in the range's per-page
#: loop: a Small or Base page measures 1.8-2.2 ops for 2 launches and 10 such calls, a tiled Gundam page
#: 3.8-3.9 for 3.3 launch-equivalents and 18 calls (0.0165 and 0.0173 on each machine alone)
PROJECTOR_VIEW_CALL_WEIGHT = 0.017
#: host ops the range costs once, whatever it projects (fixed part beyond the model's launches: Small and Base
#: 6.4 ops for one view group, Gundam 8.0 for two, both machines averaged: RANGE + GROUP and RANGE + 2 * GROUP;
#: the two machines alone split them 3.4 + 2.5 and 6.1 + 0.7)
PROJECTOR_RANGE_HOST_OPS = 4.7
#: host ops per view group the range projects (its fusion and linear module calls; one group per view size:
#: 1, or 2 for tiled pages)
PROJECTOR_GROUP_HOST_OPS = 1.6

CategoryCosts = dict[OperatorCategory, list[float]]


def _add(into: CategoryCosts, cat: OperatorCategory, vec: list[float], scale: float = 1.0) -> None:
    cur = into.get(cat)
    if cur is None:
        into[cat] = [v * scale for v in vec]
    else:
        for i in range(4):
            cur[i] += vec[i] * scale


class TreeMemo:
    """Per-node answers of the aggregations that do not depend on the GPU (category costs, weight, activation
    and KV-cache bytes) for trees that no longer change, keyed by node identity.

    A report asks them of nodes at every depth; with a memo each subtree is summed once, and later reports of
    the same trees (other peaks, GPUs or calibrations) reuse the sums. Only composite nodes are kept (a leaf's
    answer is its own fields). The memo holds the nodes it answers for,
    so an id cannot be taken by another node while the memo lives. Its answers are shared: do not change them.
    """

    def __init__(self) -> None:
        self._kept: dict[tuple[str, int], tuple[BaseLayer, Any]] = {}

    def get(self, what: str, node: BaseLayer) -> Any:
        """The answer kept for ``what`` of ``node``, None when there is none."""
        hit = self._kept.get((what, id(node)))
        return None if hit is None else hit[1]

    def keep(self, what: str, node: BaseLayer, value: Any) -> Any:
        """``value``, kept as the answer for ``what`` of ``node`` when it is a composite node."""
        if node.children:
            self._kept[(what, id(node))] = (node, value)
        return value


class BaseLayer:
    """One node of the analytic module tree (a module type with fixed shapes).

    Leaf layers fill ``self.ops`` (category -> [tc_flops, cc_flops, io_bytes,
    launches]) and ``self.params`` / ``self.activation_bytes`` /
    ``self.kvcache_bytes`` in ``__init__``; composite layers list ``children``.

    Attributes:
        name: the module's attribute name in the executable model (a path component).
        stage: inference stage the node runs in.
        count: repetition count (``repetition`` says sequential FOR or parallel PARFOR).
        weight_dtype_bytes: bytes per parameter element.
    """

    #: one-line description of what the module computes (used by the Markdown docs)
    summary: str = ""
    #: the formulas, as written beside the code (used by the Markdown docs)
    formulas: tuple[str, ...] = ()

    def __init__(self, name: str, stage: Stage, *, weight_dtype_bytes: int, count: int = 1,
                 repetition: Repetition = Repetition.NONE) -> None:
        self.name = name
        self.stage = stage
        self.count = count
        self.repetition = repetition if count > 1 else Repetition.NONE
        self.weight_dtype_bytes = weight_dtype_bytes
        self.children: list[BaseLayer] = []
        self.ops: CategoryCosts = {}
        #: parameters (elements) owned directly by this node (not children)
        self.params: int = 0
        #: peak live activation bytes while this leaf runs (outputs + transient intermediates)
        self.activation_bytes: float = 0.0
        #: bytes this composite keeps alive across its children (e.g. the residual stream)
        self.held_bytes: float = 0.0
        #: bytes of this node's result that its parent keeps live after it returns, while the parent's later
        #: children run (a vision stage's earlier calls, whose outputs later stages read); 0 for a result the
        #: next sibling consumes and frees
        self.kept_bytes: float = 0.0
        #: KV-cache bytes owned by this node (decoder attention only)
        self.kvcache_bytes: float = 0.0
        #: host-device synchronisations per call of this node, made before its own kernels are issued
        #: (the host waits until the device has run everything launched so far; used by the timeline model)
        self.host_syncs: int = 0
        #: host-side ops per call that launch no kernel (index arithmetic on CPU tensors): host time only
        self.host_ops: float = 0.0
        #: launches per call that the CUDA build adds to the dispatched aten calls (host-index copies,
        #: zero-fills, contiguity copies inside kernels, multi-kernel ops); already in ``ops``
        self.cuda_launches: float = 0.0
        #: launches per call made inside another aten call, without a Python-level op of their own (all of
        #: ``cuda_launches`` plus copies that reshape/contiguous make): the timeline model charges them the
        #: runtime's launch call only; already in ``ops``
        self.inner_launches: float = 0.0
        #: op-equivalents of host time per call that the timeline model does not charge for this node's
        #: launches: bare tensor calls that cost the host less than a module's dispatched op (see
        #: :meth:`light_op`); the kernels stay in ``ops``
        self.host_discount: float = 0.0
        #: bytes moved per call by those launches; already in ``ops``
        self.cuda_io_bytes: float = 0.0
        #: category -> access-pattern key ('<pattern>@<side>', llm_perf_opt.hardware.patterns) -> bytes per
        #: call moved in that pattern; already in ``ops``' io bytes. The timeline model divides them by the
        #: pattern's measured bandwidth where a calibration has it, the roofline ignores them.
        self.pattern_io: dict[OperatorCategory, dict[str, float]] = {}
        #: category -> GEMM or call key (llm_perf_opt.hardware.gemms) -> [tc_flops, cc_flops, io_bytes,
        #: launches] per call of those GEMMs; already in ``ops``. The timeline model charges them the measured
        #: time per call where a calibration has it, the roofline ignores them.
        self.gemm_ops: dict[OperatorCategory, dict[str, list[float]]] = {}
        #: category -> GEMM key -> calls per call of this node (a GEMM op group: its launches; a timed
        #: call, :meth:`timed_call`: the calls it was given)
        self.gemm_calls: dict[OperatorCategory, dict[str, float]] = {}

    # ----------------------------------------------------------------- tree
    def add(self, child: BaseLayer) -> BaseLayer:
        """Append a child and return it."""
        self.children.append(child)
        return child

    def renamed(self, name: str) -> BaseLayer:
        """This node under another module name (e.g. the next of several equal blocks): a new node with the
        same costs, holding the same children (built once, walked once by the memoised walks). Its cost tables
        are the original's objects: neither node may get more work after this."""
        twin = copy.copy(self)
        twin.name = name
        twin.children = list(self.children)
        return twin

    @property
    def module_type(self) -> str:
        """Analytic class name (one Markdown page per module type)."""
        return type(self).__name__

    #: containers that are not modules (stages, the request root) add nothing to module paths
    transparent: bool = False

    def path_in(self, prefix: str) -> str:
        """This node's module path under ``prefix`` (transparent nodes keep the prefix)."""
        if self.transparent:
            return prefix
        return f"{prefix}.{self.name}" if prefix else self.name

    def walk(self, prefix: str = "") -> Iterator[tuple[str, BaseLayer]]:
        """Depth-first (module path, layer) pairs; transparent containers yield their own name as path."""
        path = self.path_in(prefix)
        yield (path or self.name), self
        for child in self.children:
            yield from child.walk(path)

    def op(self, cat: OperatorCategory, *, tc_flops: float = 0.0, cc_flops: float = 0.0, io_bytes: float = 0.0,
           launches: float = 0.0, pattern: str | None = None, gemm: str | None = None,
           gemm_calls: float | None = None) -> None:
        """Add one operator group's cost to this leaf; ``pattern``: the access-pattern key its bytes move in
        (:func:`llm_perf_opt.hardware.patterns.pattern_key`), None for contiguous, vectorised access;
        ``gemm``: the GEMM key (:func:`llm_perf_opt.hardware.gemms.gemm_key`) when the group is ``launches``
        calls of that one GEMM and nothing else; ``gemm_calls`` (default ``launches``): how many calls of the
        key's shape its FLOPs make, for a group that stands for a shape between two whole ones (a decode
        group's mean KV length: 1 launch = 300.5/301 calls of the KV-301 shape)."""
        if gemm_calls is not None and (gemm is None or gemm_calls <= 0):
            raise ValueError(f"{self.name}: gemm_calls={gemm_calls:g} needs a gemm key and must be > 0")
        vec = [float(tc_flops), float(cc_flops), float(io_bytes), float(launches)]
        _add(self.ops, cat, vec)
        if pattern is not None and io_bytes:
            split_key(pattern)
            by_key = self.pattern_io.setdefault(cat, {})
            by_key[pattern] = by_key.get(pattern, 0.0) + float(io_bytes)
        if gemm is not None and launches:
            if pattern is not None:
                raise ValueError(f"{self.name}: an op group is a GEMM or moves bytes in a pattern, not both")
            n_calls = float(launches) if gemm_calls is None else float(gemm_calls)
            if abs(gemm_flops(gemm) * n_calls - tc_flops) > 1e-9 * max(tc_flops, 1.0):
                raise ValueError(f"{self.name}: {n_calls:g} x {gemm} is {gemm_flops(gemm) * n_calls:g} FLOPs, "
                                 f"the op group has {tc_flops:g}")
            cur = self.gemm_ops.setdefault(cat, {}).setdefault(gemm, [0.0, 0.0, 0.0, 0.0])
            for i in range(4):
                cur[i] += vec[i]
            calls = self.gemm_calls.setdefault(cat, {})
            calls[gemm] = calls.get(gemm, 0.0) + n_calls

    def timed_call(self, cat: OperatorCategory, key: str, calls: float = 1.0) -> None:
        """Mark everything this leaf has in ``cat`` so far (every op group, CUDA's launches included) as
        ``calls`` calls of the timed key (:func:`llm_perf_opt.hardware.gemms.gemm_key`, e.g. a whole
        routed-experts call): the timeline model charges the measured time per call instead."""
        if calls <= 0:
            raise ValueError(f"{self.name}: calls of {key} must be > 0, got {calls:g}")
        vec = self.ops.get(cat)
        if vec is None:
            raise ValueError(f"{self.name}: nothing in {cat.value} to time as {key}")
        if cat in self.gemm_ops or cat in self.pattern_io:
            raise ValueError(f"{self.name}: {cat.value} already has GEMM or pattern tags")
        if abs(gemm_flops(key) * calls - vec[0]) > 1e-9 * max(vec[0], 1.0):
            raise ValueError(f"{self.name}: {calls:g} x {key} is {gemm_flops(key) * calls:g} FLOPs, "
                             f"{cat.value} has {vec[0]:g}")
        self.gemm_ops[cat] = {key: list(vec)}
        self.gemm_calls[cat] = {key: float(calls)}

    def cuda_op(self, cat: OperatorCategory, launches: float, *, io_bytes: float = 0.0,
                pattern: str | None = None) -> None:
        """Launches (and their bytes) that CUDA adds inside dispatched aten calls; counted in ``ops`` and
        in :attr:`cuda_launches` (the dispatch-meter tests subtract them, the kernel census counts them)."""
        self.op(cat, io_bytes=io_bytes, launches=launches, pattern=pattern)
        self.cuda_launches += float(launches)
        self.cuda_io_bytes += float(io_bytes)
        self.inner_launches += float(launches)

    def inner_op(self, cat: OperatorCategory, launches: float, *, io_bytes: float = 0.0) -> None:
        """Dispatched aten calls that another call makes (the copy of a reshape that cannot view): counted in
        ``ops`` and :attr:`inner_launches` (cheap on the host), visible to the dispatch meter."""
        self.op(cat, io_bytes=io_bytes, launches=launches)
        self.inner_launches += float(launches)

    def light_op(self, cat: OperatorCategory, launches: float, *, host_weight: float, io_bytes: float = 0.0) -> None:
        """Launches of bare tensor calls (a Python loop outside any module) that cost the host ``host_weight``
        of a dispatched op each (a measured fraction, 0..1): counted in ``ops``; the rest of their host cost
        goes to :attr:`host_discount`."""
        if not 0.0 <= host_weight <= 1.0:
            raise ValueError(f"{self.name}: host_weight must be in [0, 1], got {host_weight}")
        self.op(cat, io_bytes=io_bytes, launches=launches)
        self.host_discount += (1.0 - host_weight) * float(launches)

    def forward_host_discount(self) -> float:
        """Op-equivalents of host time :meth:`forward_kernel_launches` holds but the timeline does not charge
        (see :meth:`light_op`)."""
        return (self.host_discount + sum(c.forward_host_discount() for c in self.children)) * self.count

    def forward_cuda_launches(self) -> float:
        """Launches of :meth:`forward_kernel_launches` that CUDA adds to the dispatched aten calls."""
        return (self.cuda_launches + sum(c.forward_cuda_launches() for c in self.children)) * self.count

    def forward_inner_launches(self) -> float:
        """Launches of :meth:`forward_kernel_launches` made inside another aten call (see :meth:`inner_op`)."""
        return (self.inner_launches + sum(c.forward_inner_launches() for c in self.children)) * self.count

    def forward_cuda_io(self) -> float:
        """Bytes of :meth:`forward_cal_io` moved by the launches CUDA adds (see :meth:`cuda_op`)."""
        return (self.cuda_io_bytes + sum(c.forward_cuda_io() for c in self.children)) * self.count

    # --------------------------------------------------------- aggregation
    def category_costs(self, memo: TreeMemo | None = None) -> CategoryCosts:
        """Category -> [tc_flops, cc_flops, io_bytes, launches] of this node (children and count included);
        with ``memo`` the answer is the memo's (shared: do not change it)."""
        if memo is not None and (hit := memo.get("costs", self)) is not None:
            return cast(CategoryCosts, hit)
        out: CategoryCosts = {}
        for cat, vec in self.ops.items():
            _add(out, cat, vec)
        for child in self.children:
            for cat, vec in child.category_costs(memo).items():
                _add(out, cat, vec)
        if self.count != 1:
            for vec in out.values():
                for i in range(4):
                    vec[i] *= self.count
        return memo.keep("costs", self, out) if memo is not None else out

    def _total(self, index: int) -> float:
        own = sum(vec[index] for vec in self.ops.values())
        own += sum(c._total(index) for c in self.children)
        return own * self.count

    # ------------------------------------------------------------- forward
    def forward_tensor_core_flops(self) -> float:
        """FLOPs (2 x MACs) of matrix products, convolutions and attention products."""
        return self._total(TC)

    def forward_cuda_core_flops(self) -> float:
        """Elementwise FLOPs (norms, activations, softmax, bias/residual adds, RoPE)."""
        return self._total(CC)

    def forward_flops(self) -> float:
        """Tensor-core + CUDA-core FLOPs."""
        return self.forward_tensor_core_flops() + self.forward_cuda_core_flops()

    def forward_cal_io(self) -> float:
        """Bytes read + written by the forward kernels."""
        return self._total(IO)

    def forward_kernel_launches(self) -> float:
        """Kernel launches of the forward pass (an estimate per implementation)."""
        return self._total(LAUNCH)

    def forward_arithmetic_intensity(self) -> float:
        """FLOPs per byte moved (tensor-core + CUDA-core FLOPs / io bytes); 0 when nothing moves."""
        io = self.forward_cal_io()
        return self.forward_flops() / io if io else 0.0

    def param_count(self) -> int:
        """Parameter elements under this node, each module path counted once.

        One module called several times (SAM on the global view and on the
        tiles; a decoder layer in prefill and in decode) holds one set of
        weights; a FOR repetition of count n holds n sets.
        """
        seen: dict[str, int] = {}
        self._collect_params("", 1, seen)
        return sum(seen.values())

    def _collect_params(self, prefix: str, mult: int, seen: dict[str, int]) -> None:
        path = self.path_in(prefix)
        if self.repetition == Repetition.FOR:
            mult *= self.count
        if self.params:
            key = path or self.name
            seen[key] = max(seen.get(key, 0), self.params * mult)
        for child in self.children:
            child._collect_params(path, mult, seen)

    def forward_memory_weight(self, memo: TreeMemo | None = None) -> float:
        """Resident weight bytes (parameters x bytes per element)."""
        if memo is not None and (hit := memo.get("weight", self)) is not None:
            return float(hit)
        out = float(self.param_count() * self.weight_dtype_bytes)
        return memo.keep("weight", self, out) if memo is not None else out

    def forward_memory_activation(self, memo: TreeMemo | None = None) -> float:
        """Peak activation bytes: held bytes + the largest, over the children in order, of a child's peak plus
        the ``kept_bytes`` of the children before it (PARFOR copies live together)."""
        if memo is not None and (hit := memo.get("activation", self)) is not None:
            return float(hit)
        peak = self.activation_bytes
        kept = 0.0
        for c in self.children:
            peak = max(peak, kept + c.forward_memory_activation(memo))
            kept += c.kept_bytes
        peak += self.held_bytes
        out = peak * self.count if self.repetition == Repetition.PARFOR else peak
        return memo.keep("activation", self, out) if memo is not None else out

    def forward_memory_kvcache(self, memo: TreeMemo | None = None) -> float:
        """KV-cache bytes held after this node ran."""
        if memo is not None and (hit := memo.get("kvcache", self)) is not None:
            return float(hit)
        out = (self.kvcache_bytes + sum(c.forward_memory_kvcache(memo) for c in self.children)) * self.count
        return memo.keep("kvcache", self, out) if memo is not None else out

    # ------------------------------------------------------------ backward
    # Training what-if (not checked against a counter): each matrix product
    # Y = X W needs dX = dY W^T and dW = X^T dY, two products of the forward's
    # size, so backward FLOPs = 2 x forward for tensor-core and CUDA-core work;
    # backward traffic reads the forward's inputs again plus dY and writes dX
    # and dW: ~2 x forward io + one write of the weight gradients.
    def backward_tensor_core_flops(self) -> float:
        """2 x forward tensor-core FLOPs (dX and dW products)."""
        return 2.0 * self.forward_tensor_core_flops()

    def backward_cuda_core_flops(self) -> float:
        """2 x forward CUDA-core FLOPs (elementwise derivatives)."""
        return 2.0 * self.forward_cuda_core_flops()

    def backward_cal_io(self) -> float:
        """~2 x forward bytes + the weight-gradient write."""
        return 2.0 * self.forward_cal_io() + self.forward_memory_weight()

    def backward_arithmetic_intensity(self) -> float:
        """Backward FLOPs per backward byte."""
        io = self.backward_cal_io()
        return (self.backward_tensor_core_flops() + self.backward_cuda_core_flops()) / io if io else 0.0

    def backward_memory_weight(self) -> float:
        """Weight-gradient bytes (same size as the weights)."""
        return self.forward_memory_weight()

    def backward_memory_activation(self) -> float:
        """Activations saved for backward: the SUM of every leaf's live bytes (all kept until backward)."""
        own = self.activation_bytes + sum(c.backward_memory_activation() for c in self.children)
        return own * self.count

    def backward_memory_kvcache(self) -> float:
        """No KV cache in training (0 bytes)."""
        return 0.0


class CompositeLayer(BaseLayer):
    """A layer made of children only; its costs are the sums of theirs."""

    summary = "container: sums its children"


class OpGroup(BaseLayer):
    """A leaf holding work of a composite that belongs to no submodule (e.g. SAM's relative-position terms,
    the position-embedding add, window partitioning, the KV-cache append), so that every composite's work
    is exactly the sum of its children's."""

    summary = "work of the parent module outside its submodules"

    def __init__(self, name: str, stage: Stage, *, weight_dtype_bytes: int, summary: str = "") -> None:
        super().__init__(name, stage, weight_dtype_bytes=weight_dtype_bytes)
        if summary:
            self.summary = summary


class StageCost(CompositeLayer):
    """The layers of one inference stage (vision.sam, vision.clip, projector, prefill, decode)."""

    summary = "one inference stage: the layers that run in it"
    transparent = True


class RequestRoot(CompositeLayer):
    """All stages of one request (not a module: adds nothing to module paths)."""

    summary = "one request: every stage"
    transparent = True
