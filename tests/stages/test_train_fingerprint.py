"""The train stage's code digest: a checkpoint is resumed only by a run with the same training
code (the params and data half of the fingerprint: tests/training/test_trainer.py)."""

from __future__ import annotations

from segflow.stages.train import code_digest


def test_code_digest_covers_the_code_dvc_yaml_lists_for_train():
    """The resume fingerprint hashes the train stage's import closure: the modules whose change
    dvc.yaml reruns train for (tests/stages/test_dvc_deps.py), including ones reached only
    indirectly, such as the fold rule in data/splits.py."""
    digest = code_digest()
    assert {"stages/train.py", "training/trainer.py", "training/loop.py", "training/loader.py",
            "training/checkpoint.py", "models/factory.py", "transforms/three_d.py", "data/splits.py",
            "data/cache.py"} <= set(digest)
    assert not {"config.py", "files.py", "tracking/runs.py"} & set(digest), "infrastructure shapes no weights"
