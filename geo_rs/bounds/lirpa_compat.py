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


@functools.lru_cache(maxsize=1)
def auto_lirpa() -> ModuleType:
    """Return the ``auto_LiRPA`` module, importing it (once) after applying the compatibility patches."""
    _patch_numpy_arraysetops()
    _patch_torch_onnx()
    import logging

    module = importlib.import_module("auto_LiRPA")
    from auto_LiRPA import bound_general

    _patch_named_members(bound_general)
    # auto_LiRPA logs every graph build at INFO/WARNING level; keep library chatter out of user output.
    logging.getLogger("auto_LiRPA").setLevel(logging.ERROR)
    return module
