"""OARSeg: organs at risk on pelvic CT (Sartor et al. 2020) and GI-tract organs on abdominal MR
(UW-Madison GI tract, paper 001)."""
