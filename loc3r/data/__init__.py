"""Readers of the real on-disk formats (ScanNet posed images, SQA3D), per-scene caches and sample building."""
