"""Synthetic rooms: the embedded default data of loc3r and a test bed with exact ground truth.

Procedurally furnished rooms (scene.py, catalog.py) seen by a hand-held camera walking round them
(trajectory.py), ray-cast into RGB and metric depth (render.py), with situations and questions whose answers
follow from the geometry (relations.py, situations.py, language.py), written in the real ScanNet and SQA3D
formats (formats.py) by `loc3r synth` (writer.py: `generate`, `build_scene`).
"""
