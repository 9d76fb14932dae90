"""Files shipped with the package: the tiny preset's pretrained base (`loc3r pretrain-base`, provenance in
tiny_base/provenance.json and README), which `loc3r train --preset tiny` starts from by default; view.html, the page
of eval's and infer's interactive view (loc3r.evaluate.view)."""

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
TINY_BASE = ASSETS / "tiny_base"
