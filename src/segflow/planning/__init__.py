"""Dataset fingerprint -> training plan, nnU-Net style: settings travel as data.

`fingerprint` measures the dataset (spacings, shapes, foreground intensities, class
frequencies), `planner` turns it and params.yaml into a typed `Plan` (spacing, normalisation,
patch, network topology, batch), and `memory` estimates what a training step needs, so the plan
fits the device. `plan` is the schema, its reader and `resolve_params`: what the later stages
import, so a planning rule changes none of their code. Modules are imported where used: importing this package costs nothing.
"""
