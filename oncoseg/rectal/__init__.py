"""RectalSeg: rectal tumour segmentation on multiparametric MR (Trebeschi et al. 2017)."""
