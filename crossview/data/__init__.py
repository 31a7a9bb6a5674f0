"""Datasets: the VIGOR reader (real data) and crossview's synthetic VIGOR-style world."""
