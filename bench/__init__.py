"""Benchmarks of the pipeline's stages against a baseline that follows the paper's released code's method."""
