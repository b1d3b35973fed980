"""The one place that imports auto_LiRPA 0.3, after patching it for numpy 2 and torch 2.13.

auto_LiRPA 0.3 (installed ``--no-deps``) was written for numpy 1 / torch 1.x-2.0. On numpy 2.2 and
torch 2.13 it fails in four places; each patch below restores exactly the old name/behaviour it needs
and is idempotent (applying it twice changes nothing):

1. ``from numpy.lib.arraysetops import isin`` — the private module is gone in numpy 2: a shim module
   exposing ``numpy.isin`` (same function).
2. ``from torch.onnx.symbolic_helper import _set_opset_version`` — removed; the opset now lives in
   ``torch.onnx._internal.torchscript_exporter._globals.GLOBALS.export_onnx_opset_version``.
3. ``n[k]`` on a ``torch._C.Node`` (attribute access by name, used by the graph parser) — torch used to
   install ``Node.__getitem__``; we install the same polymorphic getter (``kindOf`` then the typed getter).
4. ``BoundedModule._named_members`` overrides torch's method without the ``remove_duplicate`` keyword that
   ``nn.Module.named_parameters`` now passes: we wrap it to accept (and honour) the keyword.

One bug fix (not a version issue): ``BoundReshape.bound_backward`` assumes that a dense (non-sparse)
``Patches`` object arriving at a reshape has 9 dimensions, but a conv in patches mode hands it the
ordinary 7-dimensional form whenever all neurons of a layer are bounded (Sigmoid/Tanh after a conv, the
fused first layer under brightness/contrast): ``IndexError: tuple index out of range``. We convert such
patches to the equivalent dense matrix (``Patches.to_matrix``, auto_LiRPA's own conversion) and reshape
that, which is what the method does for every other input; the other cases are left to the original.

One speed-up: ``BoundTanh.precompute_relaxation`` (also used by ``BoundSigmoid``) rebuilds a 50,000-point
table of tangent points by bisection for every Sigmoid/Tanh node of every bounded module (~0.25 s each).
The table depends only on the function, the range, the dtype and the device, so it is memoised on those
(pure math: no model state is shared between bounded modules).

Use :func:`auto_lirpa` to get the patched module; never ``import auto_LiRPA`` elsewhere.
"""

from __future__ import annotations

import functools
import importlib
import sys
import types
from types import ModuleType


def _patch_numpy_arraysetops() -> None:
    try:
        importlib.import_module("numpy.lib.arraysetops")
        return
    except ImportError:
        pass
    import numpy as np

    shim = types.ModuleType("numpy.lib.arraysetops")
    shim.isin = np.isin  # type: ignore[attr-defined]
    shim.__doc__ = "geo_rs shim: numpy 2 removed numpy.lib.arraysetops (auto_LiRPA 0.3 imports isin from it)."
    sys.modules["numpy.lib.arraysetops"] = shim


def _patch_torch_onnx() -> None:
    import torch
    import torch.onnx.symbolic_helper as symbolic_helper

    if not hasattr(symbolic_helper, "_set_opset_version"):
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

        def _set_opset_version(opset_version: int) -> None:
            GLOBALS.export_onnx_opset_version = opset_version

        symbolic_helper._set_opset_version = _set_opset_version  # type: ignore[attr-defined]

    if not hasattr(torch._C.Node, "__getitem__"):

        def _node_getitem(node, key: str):
            # Attributes are typed (f, i, s, t, ...); kindOf names the getter to call.
            return getattr(node, node.kindOf(key))(key)

        torch._C.Node.__getitem__ = _node_getitem  # type: ignore[attr-defined]


def _patch_named_members(bound_general: ModuleType) -> None:
    cls = bound_general.BoundedModule
    if getattr(cls._named_members, "_geo_rs_patched", False):
        return
    original = cls._named_members

    @functools.wraps(original)
    def _named_members(self, get_members_fn, prefix="", recurse=True, remove_duplicate: bool = True):
        if remove_duplicate:
            yield from original(self, get_members_fn, prefix, recurse)
            return
        # Rare path (shared parameters listed twice): torch's semantics, with auto_LiRPA's name mapping.
        modules = self.named_modules(prefix=prefix, remove_duplicate=False) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for k, v in get_members_fn(module):
                if v is None:
                    continue
                name = module_prefix + ("." if module_prefix else "") + k
                yield self.node_name_map.get(name, name), v

    _named_members._geo_rs_patched = True  # type: ignore[attr-defined]
    cls._named_members = _named_members


def _patch_reshape_patches() -> None:
    from auto_LiRPA.operators.shape import BoundReshape
    from auto_LiRPA.patches import Patches

    if getattr(BoundReshape.bound_backward, "_geo_rs_patched", False):
        return
    original = BoundReshape.bound_backward

    def _dense(node, A):
        """``A`` as a dense ``(spec, batch, *input_shape[1:])`` matrix, or None if the original handles it."""
        if not isinstance(A, Patches) or A.unstable_idx is not None or A.patches.ndim != 7:
            return None
        m = A.to_matrix(node.output_shape)  # (batch, spec, C, H, W)
        return m.transpose(0, 1).reshape(m.shape[1], m.shape[0], *node.input_shape[1:])

    @functools.wraps(original)
    def bound_backward(self, last_lA, last_uA, x, shape):
        lA, uA = _dense(self, last_lA), _dense(self, last_uA)
        if lA is None and uA is None:
            return original(self, last_lA, last_uA, x, shape)
        rest_l = None if lA is not None else last_lA
        rest_u = None if uA is not None else last_uA
        if rest_l is not None or rest_u is not None:
            (ol, ou), _ = original(self, rest_l, rest_u, x, shape)[0]
            lA = ol if lA is None else lA
            uA = ou if uA is None else uA
        return [(lA, uA), (None, None)], 0, 0

    bound_backward._geo_rs_patched = True  # type: ignore[attr-defined]
    BoundReshape.bound_backward = bound_backward


def _memoise_s_shape_tables() -> None:
    import torch
    from auto_LiRPA.operators.activation import BoundTanh

    if getattr(BoundTanh.precompute_relaxation, "_geo_rs_patched", False):
        return
    original = BoundTanh.precompute_relaxation
    tables: dict = {}

    @functools.wraps(original)
    def precompute_relaxation(self, name, func, dfunc, x_limit=500):
        key = (name, x_limit, torch.get_default_dtype(), str(self.device))
        if key not in tables:
            original(self, name, func, dfunc, x_limit)
            tables[key] = (self.x_limit, self.step_pre, self.num_points_pre, self.d_lower, self.d_upper)
        x_lim, step, n_points, d_lower, d_upper = tables[key]
        self.x_limit, self.step_pre, self.num_points_pre = x_lim, step, n_points
        self.d_lower, self.d_upper = d_lower.clone(), d_upper.clone()

    precompute_relaxation._geo_rs_patched = True  # type: ignore[attr-defined]
    BoundTanh.precompute_relaxation = precompute_relaxation


@functools.lru_cache(maxsize=1)
def auto_lirpa() -> ModuleType:
    """Return the ``auto_LiRPA`` module, importing it (once) after applying the compatibility patches."""
    _patch_numpy_arraysetops()
    _patch_torch_onnx()
    import logging

    module = importlib.import_module("auto_LiRPA")
    from auto_LiRPA import bound_general

    _patch_named_members(bound_general)
    _patch_reshape_patches()
    _memoise_s_shape_tables()
    # auto_LiRPA logs every graph build at INFO/WARNING level; keep library chatter out of user output.
    logging.getLogger("auto_LiRPA").setLevel(logging.ERROR)
    return module
