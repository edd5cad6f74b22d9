"""Benchmarks behind ``tsmindex bench``: both sides measured in one run, figures saved as JSON."""
