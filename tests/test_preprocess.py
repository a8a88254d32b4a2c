from __future__ import annotations

import numpy as np
import pytest

from training.data.preprocess import (
    CELEBA_CROP,
    Augment,
    Preprocess,
    adjust_brightness,
    augment,
    crop_and_resize,
    hflip,
)


def _img(h, w):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("shape", [(218, 178), (64, 64), (25, 25), (300, 500)])
def test_crop_and_resize_sizes(shape):
    out = crop_and_resize(_img(*shape), Preprocess())
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    out = crop_and_resize(_img(*shape), Preprocess(height=128, width=104))
    assert out.shape == (128, 104, 3)


def test_celeba_crop_box_takes_the_face_region():
    img = np.zeros((218, 178, 3), np.uint8)
    img[40:188, 15:163] = 200  # the face box
    out = crop_and_resize(img, Preprocess(crop=CELEBA_CROP))
    assert out.min() > 150


def test_bad_preprocess_config_is_refused():
    with pytest.raises(ValueError, match="crop"):
        Preprocess(crop=(0.5, 0.0, 0.4, 1.0))


def test_flip_mirrors_image_and_head():
    img = _img(8, 8)
    out, cond = hflip(img, {"head": 0.2, "eyes": 0.7})
    assert np.array_equal(out, img[:, ::-1])
    assert cond == {"head": pytest.approx(0.8), "eyes": 0.7}
    back, cond2 = hflip(out, cond)
    assert np.array_equal(back, img) and cond2["head"] == pytest.approx(0.2)


def test_brightness_scales_background_label():
    img = np.full((4, 4, 3), 100, np.uint8)
    out, cond = adjust_brightness(img, 1.2, {"background": 0.5, "head": 0.3})
    assert out[0, 0, 0] == 120 and cond == {"background": pytest.approx(0.6), "head": 0.3}


def test_augment_is_deterministic_by_seed_and_flips_about_half():
    img = _img(16, 16)
    cond = {"head": 0.1, "background": 0.5}
    runs = [augment(img, cond, np.random.default_rng(7), Augment()) for _ in range(2)]
    assert np.array_equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    rng = np.random.default_rng(0)
    heads = [augment(img, cond, rng, Augment(brightness=0))[1]["head"] for _ in range(400)]
    assert 0.4 < np.mean(np.isclose(heads, 0.9)) < 0.6
