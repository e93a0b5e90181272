"""Training one fold: `trainer` (the Trainer the train stage calls), `loop` (epochs, validation, LR),
`loader` (data loading and per-sample seeding), `checkpoint` (resume), `history` and `summary` (the
fold's output files), `usage` (time and memory), `distributed` (DDP processes under torchrun)."""
