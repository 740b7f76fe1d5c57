"""oneDNN linear layers (prepacked weights, bias and GELU fused) for bf16 planning on CPU.

Planning in bf16 (``PlanningModel``) spends almost all of a LeWorldModel-scale rollout in
the predictor's linear layers. Eager PyTorch runs each as ``addmm`` on the weight in its
stored layout: it first copies the broadcast bias into the fresh output and then accumulates
the product into it (for the qkv projection, 2,040 x 3,072 per call, that copy took 80% as
long as the product itself, profiled), and a transformer MLP adds a separate GELU pass over
its 2,048-wide hidden activations. oneDNN (the library behind PyTorch's CPU bf16 matmuls)
takes the weight reordered once into its blocked layout and applies the bias and the GELU
in the GEMM's epilogue: ``torch.ops.mkldnn._linear_pointwise``, the op ``torch.compile``'s
CPU backend emits for the same patterns. `PackedLinear` and `FusedFeedForward` call it
directly, without compiling, when nothing needs a gradient; anything else (training,
gradient solvers, float32, other devices) runs the plain modules' code unchanged. Results
equal the eager layers to bf16 rounding (tests/test_planning_speed.py); the speed is in
benchmarks/RESULTS.md (issue #10).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldmodel.encoder import FeedForward

def fused_mlp_available() -> bool:
    """Whether this PyTorch build has oneDNN's fused linear ops and this CPU runs bf16 in them."""
    try:
        return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
                and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    except (AttributeError, RuntimeError):
        return False


def _fast_path(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether `module` may run `x` through oneDNN's inference ops: eval mode, no autograd, bf16 on CPU."""
    return (not module.training and not torch.is_grad_enabled() and x.dtype == torch.bfloat16
            and x.device.type == "cpu")


class _Packed:
    """oneDNN-reordered copies of weights, remade whenever a weight changes (version counter or identity),
    so a packed layer never computes with stale weights."""

    def __init__(self) -> None:
        self._packed: tuple = ()
        self._key: tuple = ()

    def get(self, *weights: torch.Tensor, source: tuple[torch.Tensor, ...] = ()) -> tuple:
        """The packed form of each of `weights` (each (out, in) bf16); `source`: the parameters they are
        views of, when not themselves (a fresh slice each call, the parameter's identity and version)."""
        key = tuple((id(w), w._version) for w in (source or weights))
        if key != self._key:
            with torch.no_grad():
                self._packed = tuple(pack_weight(w.detach()) for w in weights)
            self._key = key
        return self._packed


def pack_weight(weight: torch.Tensor, rows: int | None = None) -> torch.Tensor:
    """`weight` (out, in) reordered into oneDNN's layout for `linear`, chosen for inputs of `rows` rows
    (default: the planner's chunk, ``worldmodel.model.ROLLOUT_CHUNK_ROWS``, else 2,048)."""
    if rows is None:
        from worldmodel.model import ROLLOUT_CHUNK_ROWS

        rows = ROLLOUT_CHUNK_ROWS or 2048
    return torch.ops.mkldnn._reorder_linear_weight(weight, rows)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, attr: str = "none",
           algorithm: str = "") -> torch.Tensor:
    """oneDNN linear of x (..., in) with a `pack_weight`-ed weight -> (..., out), `attr` ('none' | 'gelu') applied."""
    shape = x.shape
    y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), weight, bias, attr, [], algorithm)
    return y.view(*shape[:-1], y.shape[-1])


class PackedLinear(nn.Linear):
    """``nn.Linear`` whose bf16 CPU inference runs as one oneDNN GEMM with a prepacked weight and
    the bias in its epilogue; otherwise (training, autograd, other dtypes or devices) ``nn.Linear``.
    Shares the parameters of the layer it was made from (`from_linear`)."""

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> PackedLinear:
        """A `PackedLinear` sharing `linear`'s weight and bias (and its train/eval mode)."""
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        new.weight = linear.weight
        new.bias = linear.bias
        new.train(linear.training)
        new._packed = _Packed()
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in_features) -> (..., out_features), as ``nn.Linear``."""
        if not _fast_path(self, x):
            return super().forward(x)
        return linear(x, *self._packed.get(self.weight), self.bias)

    def forward_rows(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Outputs ``start:stop`` only: x (..., in_features) -> (..., stop - start), as
        ``F.linear(x, weight[start:stop], bias[start:stop])`` (the slice packed once)."""
        weight = self.weight[start:stop]
        bias = None if self.bias is None else self.bias[start:stop]
        if not _fast_path(self, x):
            return F.linear(x, weight, bias)
        if "_row_packs" not in self.__dict__:
            self._row_packs = {}
        packs = self._row_packs.setdefault((start, stop), _Packed())
        return linear(x, *packs.get(weight, source=(self.weight,)), bias)


class FusedFeedForward(nn.Module):
    """A `FeedForward` (Linear -> GELU -> Linear -> Dropout) that runs as two oneDNN GEMMs with
    prepacked weights and the GELU fused into the first, for bf16 CPU inputs without autograd;
    otherwise the wrapped `FeedForward`."""

    def __init__(self, ff: FeedForward):
        super().__init__()
        lin1, act, lin2 = ff.net[0], ff.net[1], ff.net[2]
        if not (isinstance(lin1, nn.Linear) and isinstance(act, nn.GELU) and isinstance(lin2, nn.Linear)):
            raise TypeError(f"FusedFeedForward wraps Linear -> GELU -> Linear, got {ff.net}")
        self.ff = ff
        self._algorithm = "tanh" if act.approximate == "tanh" else "none"
        self._packed = _Packed()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., W) -> (..., W), as ``FeedForward``."""
        if not _fast_path(self, x):
            return self.ff(x)
        lin1, lin2 = self.ff.net[0], self.ff.net[2]
        w1, w2 = self._packed.get(lin1.weight, lin2.weight)
        return linear(linear(x, w1, lin1.bias, "gelu", self._algorithm), w2, lin2.bias)


def pack_linears(module: nn.Module) -> int:
    """Make `module`'s transformer MLPs `FusedFeedForward` and its other ``nn.Linear`` layers
    `PackedLinear`, in place (same parameters; the same results up to bf16 rounding).

    Returns the number of modules replaced (0 where `fused_mlp_available` is false: nothing changes).
    """
    if not fused_mlp_available():
        return 0
    count = 0
    for cls, make in ((FeedForward, FusedFeedForward), (nn.Linear, PackedLinear.from_linear)):
        # a FusedFeedForward packs its own two linears: the ones inside it stay plain nn.Linear
        inside = {id(m) for f in module.modules() if isinstance(f, FusedFeedForward) for m in f.modules()}
        targets = [(parent, name, child) for parent in module.modules() if id(parent) not in inside
                   for name, child in parent.named_children() if type(child) is cls]
        for parent, name, child in targets:
            setattr(parent, name, make(child))
        count += len(targets)
    return count


def _linear_pointwise_flop(x_shape: tuple, *args, out_shape: tuple | None = None, **kwargs) -> int:
    """FLOPs of ``mkldnn._linear_pointwise``: 2 x rows x in x out (the GEMM; the fused bias and GELU
    are not counted, as for ``aten.addmm``)."""
    rows = 1
    for n in x_shape[:-1]:
        rows *= n
    return 2 * rows * x_shape[-1] * out_shape[-1]


def flop_formulas() -> dict:
    """``FlopCounterMode(custom_mapping=...)`` entries for the ops this module calls, so a plan's FLOPs
    are counted the same with and without them (PyTorch's counter knows only ``aten`` ops)."""
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return {}
    return {torch.ops.mkldnn._linear_pointwise: _linear_pointwise_flop}
