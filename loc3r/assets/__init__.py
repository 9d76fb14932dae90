"""Files shipped with the package: the tiny preset's pretrained base (`loc3r pretrain-base`, provenance in
tiny_base/provenance.json and README), which `loc3r train --preset tiny` starts from by default."""

from pathlib import Path

TINY_BASE = Path(__file__).resolve().parent / "tiny_base"
