"""Overlays a reader understands without the code: classes named in a legend, three orthogonal
slices through the structure, 2D images in their own orientation."""

from __future__ import annotations

import numpy as np

from segflow.reporting.figures import class_colour, plot_prediction, prediction_figure, structure_centre

NAMES = ["anterior", "posterior"]


def volume_case():
    image = np.random.default_rng(0).normal(size=(20, 24, 16))
    truth = np.zeros(image.shape, dtype=int)
    truth[12:16, 5:9, 10:14] = 1
    truth[12:16, 9:12, 10:14] = 2
    return image, truth


def test_the_overlay_names_each_class_in_a_legend_and_the_dice_in_the_title():
    image, truth = volume_case()
    fig = prediction_figure("case_7", image, truth, truth, NAMES, [0.91, 0.5])
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == NAMES
    assert [h.get_facecolor()[:3] for h in legend.legend_handles] == \
        [tuple(int(class_colour(i)[k:k + 2], 16) / 255 for k in (1, 3, 5)) for i in (1, 2)]
    assert fig._suptitle.get_text() == "case_7: Dice anterior 0.91, posterior 0.50"


def test_a_volume_shows_three_orthogonal_slices_through_the_structures_centre():
    image, truth = volume_case()
    assert structure_centre(truth) == (14, 8, 12)  # centre of mass of 12:16, 5:12, 10:14
    fig = prediction_figure("c", image, truth, truth, NAMES, [1.0, 1.0])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [f"{what}, {view}" for what in ("ground truth", "prediction")
                      for view in ("axial slice 12", "coronal slice 8", "sagittal slice 14")]
    assert all(ax.collections for ax in fig.axes), "every panel outlines its classes (contours)"


def test_a_2d_image_is_shown_as_the_png_is_not_transposed():
    image = np.zeros((30, 50))
    image[:5, :] = 1.0  # a bright band along the top rows of the PNG
    truth = np.zeros(image.shape, dtype=int)
    truth[:5, :10] = 1  # top-left corner
    fig = prediction_figure("isbi", image, truth, truth, ["membrane"], [1.0])
    shown = fig.axes[0].images[0]
    assert shown.get_array().shape == (30, 50) and shown.origin == "upper"
    np.testing.assert_array_equal(np.asarray(shown.get_array()), image)
    assert [ax.get_title() for ax in fig.axes] == ["ground truth", "prediction"]


def test_the_overlay_is_written_as_a_png_of_one_size_for_every_case(tmp_path):
    """W&B shows a list of images in one panel only when they share a size."""
    from PIL import Image

    image, truth = volume_case()
    plot_prediction("c", image, truth, np.zeros_like(truth), NAMES, [0.0, 0.0], tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    long_name = "a_much_longer_case_identifier_0123"
    plot_prediction(long_name, image[:, ::2], truth[:, ::2], truth[:, ::2], NAMES, [1.0, 1.0], tmp_path / "d.png")
    assert Image.open(tmp_path / "c.png").size == Image.open(tmp_path / "d.png").size
