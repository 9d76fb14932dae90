"""Shared fixtures: a small synthetic data set made once per test session (real ScanNet / SQA3D formats)."""

import pytest


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """4 synthetic rooms (3 train / 1 val / ... split by the writer), 12 frames of 64 px each."""
    from loc3r.synth.writer import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, n_scenes=4, seed=3, frames=12, size=64)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(synth_data, tmp_path_factory):
    """A tiny model trained for 2 steps on `synth_data` (4 frames): a complete run directory."""
    from loc3r.cli import main

    run = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", str(synth_data), "--out", str(run), "--steps", "2", "--batch-size", "2",
                 "--frames", "4", "--quiet"]) == 0
    return run
