"""geo-rs: randomized smoothing, certified bounds and 3D geometry.

Install through the Makefile (``make demo`` / ``make test``): it pins the CPU torch wheel first and
installs everything else under ``constraints.txt`` so no CUDA build is ever pulled.
"""
from setuptools import find_packages, setup

setup(
    name="geo-rs",
    version="0.1.0",
    description="Randomized smoothing, certified bounds and certified SDFs for 3D vision",
    python_requires=">=3.11",
    packages=find_packages(include=["geo_rs", "geo_rs.*", "nerf", "nerf.*", "keypoint", "keypoint.*"]),
    # Dependencies live in requirements.txt (installed under constraints.txt by the Makefile):
    # declaring torch here would let pip resolve a CUDA build on a machine without the wheel.
    install_requires=[],
    # `pip install geo-rs[cluster]`: the Dask distributed engine for `--cluster` (the Makefile installs
    # it for the tests through requirements.txt).
    extras_require={"cluster": ["dask", "distributed"], "slurm": ["dask", "distributed", "dask-jobqueue"]},
    entry_points={
        "console_scripts": ["geo-rs = geo_rs.cli:main"],
        # Sub-commands are plugins so that geo_rs never imports nerf or keypoint.
        "geo_rs.commands": [
            "nerf = nerf.cli:register",
            "keypoint = keypoint.cli:register",
            "box = keypoint.box.cli:register",
        ],
    },
)
