"""Accelerated backends of the flash attention kernels (placeholder until the dispatch of issue 6 lands)."""
