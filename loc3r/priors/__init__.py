"""3D priors prepended to the video tokens: per-frame camera tokens from a frozen 3D foundation model (CUT3R)."""
