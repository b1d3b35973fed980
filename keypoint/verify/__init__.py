"""Certified keypoints: coupled MILP verification of heatmap keypoint detectors (issue 10).

* :mod:`.spec` — :class:`KeypointSpec` (joint specifications on keypoint deviations);
* :mod:`.reachable` — reachable heatmaps at the interval / linear / exact levels;
* :mod:`.milp` — argmax + coordinates + spec-violation MILP, and its brute-force reference;
* :mod:`.attack` — PGD toward a MILP assignment, random restarts, confirmation by a forward pass;
* :mod:`.api` — :func:`verify_keypoints`, :func:`verify_keypoints_decoupled`, :func:`verify_instance`;
* :mod:`.detector` — the compact verification-oriented heatmap detector and its trainer.
"""

from .api import KeypointVerification, verify_instance, verify_keypoints, verify_keypoints_decoupled
from .spec import KeypointSpec

__all__ = [
    "KeypointSpec",
    "KeypointVerification",
    "verify_instance",
    "verify_keypoints",
    "verify_keypoints_decoupled",
]
