"""Training: settings and named recipes (config.py, recipes.py), the loop (loop.py: one process or torchrun, DDP /
FSDP2), the data order (order.py), checkpoints, and the tiny base's pretraining command (pretrain_base.py).
`python -m loc3r.train` (what torchrun launches) runs `loc3r train`."""
