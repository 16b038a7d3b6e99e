"""The ``Scan`` base class and the registry of named scan orders.

A scan maps a 2-D feature map to K 1-D route sequences and back. It owns only geometry: the
(K, L) *index plan* that says which token (``h * W + w``) each route visits at each step. Plans
are built once per (H, W) on the CPU, copied once per device and cached on the instance, so a
forward pass is one ``gather`` for ``flatten`` and one ``gather`` (+ a sum over routes) for
``merge`` (and, for routes that visit every token once, the backward of each is the other's gather), with no
Python loop over tokens and no data-dependent control flow (``torch.compile``
friendly).

Padding convention of index plans: a route that visits fewer than L real tokens is filled with
the sentinel index ``H * W`` ("the token after the last one"). ``flatten`` reads zeros there and
``merge`` drops whatever the route produced there. Sentinels belong at the end of a route, so that
a causal recurrence over the real tokens is unaffected. Two exceptions pad inside routes on purpose:
``atrous``, which reproduces EfficientVMamba's zero padding exactly, and ``window`` with ``pad=True``,
which fills every edge window up to full size for window attention (see their docstrings). Every
other built-in scan visits all H * W tokens on every route and has no padding.
"""
import inspect
import operator
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Type, TypeVar, Union

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from kernels._dispatch import announce, import_triton_module, profiled, use_custom_op

__all__ = ['Scan', 'register_scan', 'create_scan', 'list_scans']

# A failure is reported once, when CUDA tensors fall back to torch.gather.
_route_gather, _route_gather_error = import_triton_module('route_gather')

DeviceLike = Union[str, torch.device, None]
_ScanT = TypeVar('_ScanT', bound=Type['Scan'])
_REGISTRY: Dict[str, Type['Scan']] = {}


class _Plan(NamedTuple):
    """Everything ``flatten``/``merge`` need for one (H, W, device), built once."""
    index: Tensor  # (K, L) token index per route step; sentinel H*W marks padding
    padded: bool  # whether ``index`` holds any sentinel
    identity: bool  # K == 1 and the route is row-major: flatten/merge are views
    inverse: Optional[Tensor]  # (K, H*W) inverse permutations, when every route visits every token once
    table: Optional[Tensor]  # (m*H*W,) positions in the (K*L) route axis, slot-major; otherwise


def _token_index(index: Tensor, shape: Tuple[int, ...], token_dim: int) -> Tensor:
    """The (K, n) plan ``index`` viewed along ``token_dim`` (-1 or -2) and expanded to ``shape``."""
    num_routes, length = index.shape
    view = (1, num_routes, 1, length) if token_dim == -1 else (1, num_routes, length, 1)
    return index.view(view).expand(shape)


def _use_triton(x: Tensor) -> bool:
    """Whether the plan gathers of ``x`` run in the Triton kernel (CUDA tensors, Triton importable)."""
    # float64 keeps torch.gather: the kernel sums merge's routes in float32.
    if not x.is_cuda or x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return False
    if _route_gather is None:
        announce('scans:torch-cuda', f'scans: Triton is unavailable ({_route_gather_error}); flatten/merge of '
                                     'CUDA tensors use torch.gather', warn=True)
        return False
    announce('scans:triton', 'scans: flatten/merge of CUDA tensors use the Triton route gather')
    return True


def _gather_routes(x: Tensor, index: Tensor, token_dim: int) -> Tensor:
    """(B, G, C', H*W) maps, G = 1 or K -> (B, K, C', L) route sequences through the (K, L) plan.

    With ``token_dim=-2`` the channel-last layouts (B, G, H*W, C') -> (B, K, L, C').
    """
    num_routes, length = index.shape
    # Expanding over routes is free (stride 0): one gather writes the result.
    src = x.expand(x.shape[0], num_routes, *x.shape[2:])
    out_shape = list(src.shape)
    out_shape[token_dim] = length
    return torch.gather(src, token_dim, _token_index(index, out_shape, token_dim))


def _ungather_routes(y: Tensor, inverse: Tensor, keep_routes: bool, token_dim: int) -> Tensor:
    """(B, K, C', L) route sequences -> (B, K, C', H*W) maps (``keep_routes``) or their sum (B, 1, C', H*W).

    With ``token_dim=-2`` the channel-last layouts (B, K, L, C') -> (B, K or 1, H*W, C').
    """
    out_shape = list(y.shape)
    out_shape[token_dim] = inverse.shape[1]
    out = torch.gather(y, token_dim, _token_index(inverse, out_shape, token_dim))
    if keep_routes or y.shape[1] == 1:
        return out
    # Gather-then-sum over routes is deterministic, unlike scatter_add.
    return out.sum(1, keepdim=True, dtype=y.dtype)


def scaled_cast(x: Tensor, scale: float, out_dtype: Optional[torch.dtype]) -> Tensor:
    """``(scale * x).to(out_dtype)``, skipping the identity steps (the torch paths of merge's scale / out_dtype)."""
    if scale != 1.0:
        x = x * scale
    return x.to(out_dtype) if out_dtype is not None else x


class _PermuteRoutes(torch.autograd.Function):
    """Flatten/merge for plans whose every route visits every token once (a permutation per route).

    The two directions are each other's adjoint, so each backward is the other direction's gather: no
    ``scatter_add`` (atomics, and a zero-filled buffer) in the backward pass, which autograd of ``gather`` uses.
    CUDA tensors go through the Triton route gather (``kernels.route_gather``), which also sums merge's routes in
    the same pass. ``scale`` multiplies the result and ``out_dtype`` sets its dtype (both folded into the gather);
    the backward applies the same scale and returns the input's dtype.
    """

    @staticmethod
    def forward(
            ctx,
            x: Tensor,
            index: Tensor,
            inverse: Tensor,
            to_routes: bool,
            keep_routes: bool,
            token_dim: int,
            channels_contiguous_out: bool = False,
            scale: float = 1.0,
            out_dtype: Optional[torch.dtype] = None,
    ) -> Tensor:
        ctx.save_for_backward(index, inverse)
        ctx.to_routes, ctx.keep_routes, ctx.token_dim = to_routes, keep_routes, token_dim
        ctx.scale, ctx.in_dtype = scale, x.dtype
        # The gradient of a channels_last map goes back channels_last (else the conv before the scan converts it);
        # one source map only: with channel groups (G > 1) channels_last interleaves the groups per token.
        ctx.channels_contiguous_in = token_dim == -1 and x.shape[1] == 1 and x.stride(-2) == 1 and x.shape[-1] > 1
        if _use_triton(x):
            args = (index, False) if to_routes else (inverse, not keep_routes and x.shape[1] > 1)
            args += (token_dim == -2, channels_contiguous_out, scale, out_dtype)
            if use_custom_op():
                return _route_gather.route_gather_op(x, *args)
            with profiled('linzoo::route_gather'):  # named like the op in profiles
                return _route_gather.route_gather(x, *args)
        out = _gather_routes(x, index, token_dim) if to_routes else _ungather_routes(x, inverse, keep_routes, token_dim)
        return scaled_cast(out, scale, out_dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        index, inverse = ctx.saved_tensors
        # Through apply again, so the backward is differentiable too.
        grad_x = _PermuteRoutes.apply(grad, index, inverse, not ctx.to_routes, ctx.keep_routes, ctx.token_dim,
                                      ctx.channels_contiguous_in, ctx.scale,
                                      ctx.in_dtype if grad.dtype != ctx.in_dtype else None)
        return grad_x, None, None, None, None, None, None, None, None


class _PermuteRoutePair(torch.autograd.Function):
    """``_PermuteRoutes``' flatten (one source map, no channel groups) of the two channel halves of one
    channel-first map, in one Triton launch each way (CUDA, eager).

    Returns the two halves' route sequences (B, K, C/2, L) as the two contiguous slices of one buffer; the
    backward merges both gradients into one map gradient in the input's layout (channel-contiguous inputs get a
    channel-contiguous gradient), so the halves' gradients are not concatenated by a separate copy.
    Once differentiable.
    """

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, inverse: Tensor) -> Tuple[Tensor, Tensor]:
        batch, _, channels, _ = x.shape
        half = channels // 2
        ctx.save_for_backward(index, inverse)
        ctx.channels_contiguous_in = x.stride(-2) == 1 and half > 1
        ctx.in_dtype = x.dtype
        buffer = x.new_empty(2, batch, index.shape[0], half, index.shape[1])
        with profiled('linzoo::route_gather'):
            _route_gather.route_gather_pair(x[:, :, :half], x[:, :, half:], index, False, buffer[0], buffer[1])
        return buffer[0], buffer[1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Optional[Tensor], grad2: Optional[Tensor]):
        index, inverse = ctx.saved_tensors
        grad = torch.zeros_like(grad2) if grad is None else grad
        grad2 = torch.zeros_like(grad) if grad2 is None else grad2
        if grad.stride() != grad2.stride() or grad.dtype != grad2.dtype:
            grad, grad2 = grad.contiguous(), grad2.to(grad.dtype).contiguous()
        batch, routes, half, _ = grad.shape
        length = inverse.shape[1]
        if ctx.channels_contiguous_in:
            grad_x = grad.new_empty(batch, 1, length, 2 * half, dtype=ctx.in_dtype).transpose(2, 3)
        else:
            grad_x = grad.new_empty(batch, 1, 2 * half, length, dtype=ctx.in_dtype)
        with profiled('linzoo::route_gather'):
            _route_gather.route_gather_pair(grad, grad2, inverse, routes > 1, grad_x[:, :, :half],
                                            grad_x[:, :, half:])
        return grad_x, None, None


class Scan:
    """Base class of a 2-D <-> 1-D scan order with K routes.

    Subclasses set ``num_routes`` and ``visits_per_token``, call ``super().__init__()`` and implement
    ``_build_routes``; they may override ``route_length``, ``channels_per_route`` and ``check_size``
    (which declares the sizes a scan cannot take). Instances hold no parameters; they cache index
    plans per (H, W, device), so share one instance across the blocks that see the same sizes.

    Attributes:
        name: Registry name (set by ``register_scan``).
        num_routes: K, the number of 1-D routes (SSM parameter groups) per map.
        visits_per_token: m such that ``merge(flatten(x), size) == m * x``.
        splits_channels: Whether route k sees only channel group k (``flatten`` returns C/K channels).
    """
    name: str = ''
    num_routes: int = 1
    visits_per_token: int = 1
    splits_channels: bool = False

    def __init__(self) -> None:
        self._cpu_plans: Dict[Tuple[int, int], _Plan] = {}
        self._plans: Dict[Tuple[int, int, torch.device], _Plan] = {}

    # ----------------------------------------------------------------------------------------
    # geometry (override in subclasses)

    def _build_routes(self, height: int, width: int) -> Tensor:
        """Return the (K, L) int64 CPU index plan (sentinel H*W for padding); called once per size, loops welcome."""
        raise NotImplementedError

    def check_size(self, height: int, width: int) -> None:
        """Raise ValueError if this scan cannot take an (height, width) map."""
        for dim_name, value in (('H', height), ('W', width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{self._label()}: feature map size must be two ints >= 1, got {dim_name}={value!r} '
                                 f'(size=({height!r}, {width!r})); pass the spatial size (H, W) of a (B, C, H, W) map')

    def route_length(self, height: int, width: int) -> int:
        """L, the length of every route sequence (padded routes included) for an (height, width) map."""
        self.check_size(height, width)
        return height * width

    def channels_per_route(self, channels: int) -> int:
        """C', the number of channels each route carries for a C-channel map."""
        return channels

    # ----------------------------------------------------------------------------------------
    # plans

    def index_plan(self, height: int, width: int, device: DeviceLike = None) -> Tensor:
        """The cached (K, L) int64 plan of token indices ``h * W + w`` each route visits.

        Padding (routes that visit fewer than L tokens) uses the sentinel ``height * width``.

        Args:
            height: H of the feature map.
            width: W of the feature map.
            device: Device of the returned tensor (default CPU).
        """
        return self._plan(height, width, device).index

    # Runs eagerly even inside torch.compile, whose graph then holds the plan tensors as constants.
    @torch.compiler.assume_constant_result
    def _plan(self, height: int, width: int, device: DeviceLike) -> _Plan:
        dev = torch.device('cpu') if device is None else torch.device(device)
        key = (height, width, dev)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._cpu_plan(height, width)
            if dev.type != 'cpu':
                plan = _Plan(*(t.to(dev) if isinstance(t, Tensor) else t for t in plan))
                # 'cuda' and 'cuda:0' share one plan.
                plan = self._plans.setdefault((height, width, plan.index.device), plan)
            self._plans[key] = plan
        return plan

    def _cpu_plan(self, height: int, width: int) -> _Plan:
        key = (height, width)
        plan = self._cpu_plans.get(key)
        if plan is None:
            plan = self._make_plan(height, width)
            self._cpu_plans[key] = plan
        return plan

    def _make_plan(self, height: int, width: int) -> _Plan:
        self.check_size(height, width)
        num_tokens = height * width
        length = self.route_length(height, width)
        index = torch.as_tensor(self._build_routes(height, width), dtype=torch.long).reshape(-1, length).contiguous()
        if index.shape[0] != self.num_routes:
            raise RuntimeError(f'{self._label()}: built {index.shape[0]} routes, declared num_routes={self.num_routes}')
        if int(index.min()) < 0 or int(index.max()) > num_tokens:
            raise RuntimeError(f'{self._label()}: plan indices outside [0, {num_tokens}] for size {height}x{width}')
        real = index < num_tokens
        padded = not bool(real.all())
        # Each token must be visited visits_per_token times (per channel group for channel-split scans).
        expected = self.num_routes if self.splits_channels else self.visits_per_token
        counts = torch.bincount(index[real], minlength=num_tokens)
        if not bool((counts == expected).all()):
            raise RuntimeError(f'{self._label()}: routes visit tokens {counts.tolist()} times for size '
                               f'{height}x{width}; expected {expected} each')
        arange = torch.arange(num_tokens)
        full = not padded and length == num_tokens and all(
            bool((torch.bincount(route, minlength=num_tokens) == 1).all()) for route in index)
        identity = self.num_routes == 1 and full and bool((index[0] == arange).all())
        inverse = table = None
        if full:
            inverse = torch.empty_like(index)
            inverse.scatter_(1, index, arange.expand_as(index).contiguous())
        else:
            if self.splits_channels:
                raise RuntimeError(f'{self._label()}: channel-split scans need routes that visit every token once')
            # Slot j of token p holds the flattened (route, step) position of p's j-th visit.
            flat = index.reshape(-1)
            positions = torch.nonzero(flat < num_tokens).squeeze(1)
            order = torch.sort(flat[positions], stable=True).indices
            table = positions[order].view(num_tokens, self.visits_per_token).t().contiguous().view(-1)
        return _Plan(index=index, padded=padded, identity=identity, inverse=inverse, table=table)

    # ----------------------------------------------------------------------------------------
    # forward ops

    def flatten(self, x: Tensor, channels_last: bool = False) -> Tensor:
        """Read a (B, C, H, W) map along every route.

        Args:
            x: Feature map of shape (B, C, H, W), or (B, H, W, C) with ``channels_last``.
            channels_last: Take a channel-last map and return channel-last sequences (Swin's token layout),
                without a layout copy.

        Returns:
            Route sequences of shape (B, K, C', L), or (B, K, L, C') with ``channels_last``;
            C' = ``channels_per_route(C)``; zeros at padding.
        """
        layout = '(B, H, W, C)' if channels_last else '(B, C, H, W)'
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f'{self._label()}.flatten: expected a {layout} tensor, got {shape}; '
                             f'reshape token sequences (B, H*W, C) to {layout} first')
        if channels_last:
            batch, height, width, channels = x.shape
        else:
            batch, channels, height, width = x.shape
        # operator.index specialises symbolic sizes under torch.compile: plans are per (H, W).
        height, width = operator.index(height), operator.index(width)
        cpr = self.channels_per_route(channels)
        plan = self._plan(height, width, x.device)
        groups = self.num_routes if self.splits_channels else 1
        if channels_last:
            token_dim = -2
            src = x.reshape(batch, height * width, groups, cpr).transpose(1, 2)
        else:
            token_dim = -1
            src = x.reshape(batch, groups, cpr, height * width)
        if plan.identity:
            return src
        if plan.inverse is not None:
            return _PermuteRoutes.apply(src, plan.index, plan.inverse, True, self.splits_channels, token_dim)
        if plan.padded:  # the sentinel index H*W reads this zero
            pad_shape = list(src.shape)
            pad_shape[token_dim] = 1
            src = torch.cat([src, src.new_zeros(pad_shape)], dim=token_dim)
        return _gather_routes(src, plan.index, token_dim)

    def merge(self, y: Tensor, size: Tuple[int, int], channels_last: bool = False) -> Tensor:
        """Scatter route outputs back to their tokens and sum (the adjoint of ``flatten``).

        Args:
            y: Route outputs of shape (B, K, C', L), or (B, K, L, C') with ``channels_last``.
            size: (H, W) of the map.
            channels_last: Take channel-last sequences and return a channel-last map.

        Returns:
            Map of shape (B, C, H, W), or (B, H, W, C) with ``channels_last``; padded route positions are ignored.
        """
        height, width = self._checked_size(size)
        layout = "(B, K, L, C')" if channels_last else "(B, K, C', L)"
        if not isinstance(y, Tensor) or y.dim() != 4:
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f'{self._label()}.merge: expected route outputs {layout}, got {shape}')
        if channels_last:
            batch, num_routes, length, cpr = y.shape
        else:
            batch, num_routes, cpr, length = y.shape
        expected_length = self.route_length(height, width)
        if num_routes != self.num_routes or length != expected_length:
            raise ValueError(f'{self._label()}.merge: expected {layout} with K={self.num_routes}, '
                             f'L={expected_length} for size {height}x{width}, got {tuple(y.shape)}; '
                             f'pass the same size that was flattened')
        plan = self._plan(height, width, y.device)
        num_tokens = height * width
        token_dim = -2 if channels_last else -1
        if plan.identity:
            out = y
        elif plan.inverse is not None:
            out = _PermuteRoutes.apply(y, plan.index, plan.inverse, False, self.splits_channels, token_dim)
        else:
            # Route-major positions (k, step) of each token's visits, slot-major: one index_select, then a sum.
            if channels_last:
                out = y.reshape(batch, num_routes * length, cpr).index_select(1, plan.table)
                out = out.view(batch, self.visits_per_token, num_tokens, cpr)
            else:
                out = y.transpose(1, 2).reshape(batch, cpr, num_routes * length).index_select(-1, plan.table)
                out = out.view(batch, cpr, self.visits_per_token, num_tokens).transpose(1, 2)
            out = out.sum(1, keepdim=True, dtype=y.dtype) if self.visits_per_token > 1 else out
        # out: (B, G, C', H*W) or channel-last (B, G, H*W, C'), G = K for channel-split scans, else 1.
        if channels_last:
            return out.transpose(1, 2).reshape(batch, height, width, -1)
        return out.reshape(batch, -1, height, width)

    def scatter_routes(self, y: Tensor, size: Tuple[int, int]) -> Tensor:
        """Scatter every route back onto its own copy of the map, without summing over routes.

        The per-route form of ``merge``: ``merge(y, size)`` is the sum of the result over routes (its routes
        concatenated along channels for channel-splitting scans). Spatial-Mamba needs it to fuse the hidden states
        of each route on the 2-D map before reading them out.

        Args:
            y: Route sequences of shape (B, K, C', L).
            size: (H, W) of the map.

        Returns:
            Maps of shape (B, K, C', H, W).

        Raises:
            ValueError: ``y`` does not fit the size, or a route of this scan does not visit every token exactly
                once at this size (padded or partial routes have no one-to-one map).
        """
        height, width = self._checked_size(size)
        if not isinstance(y, Tensor) or y.dim() != 4:
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f'{self._label()}.scatter_routes: expected route sequences (B, K, C\', L), got {shape}')
        batch, num_routes, cpr, length = y.shape
        expected_length = self.route_length(height, width)
        if num_routes != self.num_routes or length != expected_length:
            raise ValueError(f'{self._label()}.scatter_routes: expected (B, K={self.num_routes}, C\', '
                             f'L={expected_length}) for size {height}x{width}, got {tuple(y.shape)}')
        plan = self._plan(height, width, y.device)
        if plan.identity:
            return y.reshape(batch, 1, cpr, height, width)
        if plan.inverse is None:
            raise ValueError(f'{self._label()}.scatter_routes: at size {height}x{width} the routes do not each visit '
                             f'every token exactly once, so they have no one-to-one map')
        maps = _PermuteRoutes.apply(y, plan.index, plan.inverse, False, True, -1)
        return maps.view(batch, num_routes, cpr, height, width)

    # ----------------------------------------------------------------------------------------
    # helpers

    def _checked_size(self, size: Tuple[int, int]) -> Tuple[int, int]:
        if not isinstance(size, (tuple, list)) or len(size) != 2:  # torch.Size is a tuple
            raise ValueError(f'{self._label()}.merge: size must be the (H, W) that was flattened, got {size!r}')
        try:
            # operator.index also specialises symbolic sizes under torch.compile.
            height, width = operator.index(size[0]), operator.index(size[1])
        except TypeError:
            raise ValueError(f'{self._label()}.merge: size must be two ints (H, W), got {size!r}') from None
        self.check_size(height, width)
        return height, width

    def _label(self) -> str:
        return f'scan {self.name!r}' if self.name else type(self).__name__

    def extra_repr(self) -> str:
        """Constructor arguments worth showing in ``repr``."""
        return ''

    def __repr__(self) -> str:
        extra = self.extra_repr()
        return (f'{type(self).__name__}(name={self.name!r}, num_routes={self.num_routes}, '
                f'visits_per_token={self.visits_per_token}{", " + extra if extra else ""})')


def register_scan(name: str) -> Callable[[_ScanT], _ScanT]:
    """Class decorator that registers a ``Scan`` subclass under ``name`` for ``create_scan``.

    Args:
        name: Registry name; must be new.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f'register_scan: name must be a non-empty str, got {name!r}')

    def decorator(cls: _ScanT) -> _ScanT:
        if not (isinstance(cls, type) and issubclass(cls, Scan)):
            raise TypeError(f'register_scan({name!r}) decorates Scan subclasses, got {cls!r}')
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f'register_scan: name {name!r} is already taken by {_REGISTRY[name].__qualname__}')
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def list_scans() -> List[str]:
    """Sorted names of all registered scans."""
    return sorted(_REGISTRY)


def create_scan(name: str, **kwargs: object) -> Scan:
    """Instantiate a registered scan.

    Args:
        name: Registry name (see ``list_scans()``).
        **kwargs: Scan-specific options (e.g. ``window_size`` for ``window``, ``step`` for ``atrous``).

    Raises:
        ValueError: Unknown name or invalid option value.
        TypeError: Option the scan does not accept.
    """
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f'unknown scan {name!r}; known scans: {", ".join(list_scans())}')
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError:
        accepted = [p for p in inspect.signature(cls).parameters]
        raise TypeError(f'scan {name!r} got unexpected option(s) {sorted(kwargs)}; it accepts '
                        f'{accepted if accepted else "no options"}') from None
    return cls(**kwargs)
