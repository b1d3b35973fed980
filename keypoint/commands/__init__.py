"""The ``geo-rs keypoint`` sub-commands: one module each with ``run(args) -> int``, imported by
:mod:`keypoint.cli` only when that sub-command runs."""
