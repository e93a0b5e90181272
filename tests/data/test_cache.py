"""The preprocessed cache: per-case .npy arrays (memory-mappable), foreground locations for the
patch sampler, and the index's entries."""

from __future__ import annotations

import numpy as np

from segflow.data.cache import FOREGROUND_SAMPLES, PreprocessedCache, foreground_locations
from segflow.data.preprocess import Preprocessing, Volume


def volume(shape=(6, 8, 5), channels=2) -> Volume:
    label = np.zeros((1, *shape), np.uint8)
    label[0, 1:3, 2:4, 1:3] = 1
    label[0, 4, 5, 3] = 2
    label[0, 0, 0, :] = 9  # an ignore label
    image = np.arange(channels * np.prod(shape), dtype=np.float32).reshape(channels, *shape)
    return Volume(image, label, np.eye(4), original_shape=(3, 4, 5), spacing=(0.5, 0.5, 1.0))


def test_a_case_is_stored_as_arrays_a_memory_map_reads_back_exactly(tmp_path):
    cache = PreprocessedCache(tmp_path)
    case = volume()
    entry = cache.write_case("c1", case, [9.0, 9.0, 9.0], ignore_label=9)
    cache.write_index(Preprocessing(target_spacing=[0.5, 0.5, 1.0], normalisation=[]), {"c1": entry})

    assert entry == {"shape": [6, 8, 5], "channels": 2, "spacing": [0.5, 0.5, 1.0], "original_shape": [3, 4, 5]}
    mapped = np.load(cache.file_item("c1")["image"], mmap_mode="r")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, case.image)
    loaded = cache.load(["c1"])[0]
    assert np.array_equal(loaded["label"], case.label) and loaded["image"].dtype == np.float32
    assert [item["case_id"] for item in cache.iter_cases(["c1", "c1"])] == ["c1", "c1"]
    assert cache.case_bytes(["c1"]) == 6 * 8 * 5 * (2 * 4 + 1)
    assert cache.case_bytes(["c1"], extra_per_voxel=8) == 6 * 8 * 5 * (2 * 4 + 1 + 8)


def test_foreground_locations_cover_each_class_and_leave_out_the_ignore_label():
    label = volume().label
    locations = foreground_locations(label, "c1", ignore_label=9)
    values = {int(label[(0, *xyz)]) for xyz in locations}
    assert values == {1, 2} and len(locations) == 8 + 1


def test_foreground_locations_are_capped_per_class_and_reproducible():
    label = np.ones((1, 30, 30, 30), np.uint8)  # 27,000 voxels of class 1
    first = foreground_locations(label, "big")
    assert len(first) == FOREGROUND_SAMPLES
    assert np.array_equal(first, foreground_locations(label, "big"))
    assert not np.array_equal(first, foreground_locations(label, "other"))
