"""Training and evaluation of TSM on labelled videos, and the procedural motion dataset."""
