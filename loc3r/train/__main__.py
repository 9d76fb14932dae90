"""`python -m loc3r.train ...` / `torchrun --nproc_per_node N -m loc3r.train ...`: `loc3r train`."""

import sys

from loc3r.train.loop import main

sys.exit(main())
