"""BrainTumor2D3D: glioma segmentation with 2D-3D networks (Mlynarski et al. 2018)."""
