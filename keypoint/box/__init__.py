"""keypoint.box — single-box detectors and their IoU verification (IBP-IoU paper reproduction)."""
