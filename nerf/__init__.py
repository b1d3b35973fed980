"""nerf — a smoothed voxel radiance field whose geometry is a certified (weak) SDF."""
