"""Organs at risk on pelvic CT (Sartor et al. 2020, paper 003)."""
