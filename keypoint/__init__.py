"""keypoint — heatmap keypoint detectors, box detectors and their verification."""
