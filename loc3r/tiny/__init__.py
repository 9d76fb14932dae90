"""The tiny preset's pretrained base: its settings, its pretraining losses, starting a model from it, its data.
Depends on the paper's model (loc3r/model), never the reverse."""

from loc3r.tiny.config import TinyBaseConfig
from loc3r.tiny.model import TinyLoc3R

__all__ = ["TinyBaseConfig", "TinyLoc3R"]
