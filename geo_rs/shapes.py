"""Built-in test shapes (watertight triangle meshes, roughly inside the unit cube [-0.5, 0.5]³).

* ``sphere`` — radius 0.4 icosphere (smooth, convex: smoothing shrinks it by a known amount).
* ``torus`` — major radius 0.3, tube radius 0.1, axis z (a hole: genus 1).
* ``parts`` — several disjoint parts with thin and sharp features: a box, a thin plate (0.03 thick),
  a thin rod (0.04 wide), a cone spike and a small cube. Smoothing erases the plate and rod when
  σ is larger than about a third of their thickness and blunts the spike: the demo shows it.
* ``box`` — a 0.6 × 0.4 × 0.3 box (flat faces, sharp edges).

Parts are kept disjoint instead of boolean-unioned so no boolean engine is needed and the mesh
stays watertight (each part is closed; inside = inside any part).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .checks import choice

__all__ = ["builtin_shapes", "make_shape"]


def _sphere():
    import trimesh

    return trimesh.creation.icosphere(subdivisions=4, radius=0.4)


def _torus():
    import trimesh

    return trimesh.creation.torus(major_radius=0.3, minor_radius=0.1, major_sections=96, minor_sections=48)


def _box():
    import trimesh

    return trimesh.creation.box(extents=(0.6, 0.4, 0.3))


def _parts():
    import trimesh

    def at(mesh, xyz):
        mesh.apply_translation(xyz)
        return mesh

    pieces = [
        at(trimesh.creation.box(extents=(0.35, 0.35, 0.35)), (-0.2, -0.2, -0.2)),       # bulk
        at(trimesh.creation.box(extents=(0.45, 0.45, 0.03)), (0.15, 0.15, 0.3)),        # thin plate
        at(trimesh.creation.box(extents=(0.04, 0.04, 0.55)), (0.3, -0.3, 0.0)),         # thin rod
        at(trimesh.creation.cone(radius=0.12, height=0.45, sections=64), (-0.25, 0.25, -0.3)),  # spike
        at(trimesh.creation.box(extents=(0.12, 0.12, 0.12)), (0.25, 0.0, -0.3)),        # small cube
    ]
    mesh = trimesh.util.concatenate(pieces)
    mesh.merge_vertices()
    return mesh


_SHAPES: dict[str, Callable] = {"sphere": _sphere, "torus": _torus, "parts": _parts, "box": _box}


def builtin_shapes() -> list[str]:
    """Names accepted by :func:`geo_rs.load_mesh` besides file paths."""
    return sorted(_SHAPES)


def make_shape(name: str):
    """Build the named built-in shape as a ``trimesh.Trimesh`` (float64 vertices, watertight)."""
    choice("shape", name, builtin_shapes())
    mesh = _SHAPES[name]()
    mesh.metadata["name"] = name
    assert mesh.is_watertight and np.isfinite(mesh.vertices).all(), name
    return mesh
