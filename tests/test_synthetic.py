"""The procedural face set: ground truth matches what is drawn, determinism, detectability."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from training.data.palette import to_palette
from training.data.synthetic import SKIN, SynthConfig, _Geometry, _palette, render, sample_face

CFG = SynthConfig()


def _face(seed: int = 0, **over):
    return dataclasses.replace(sample_face(np.random.default_rng(seed), CFG), **over)


def test_same_face_same_pixels_and_seed_determinism():
    a = [render(sample_face(np.random.default_rng(11), CFG), CFG) for _ in range(2)]
    assert np.array_equal(a[0], a[1])
    b = render(sample_face(np.random.default_rng(12), CFG), CFG)
    assert not np.array_equal(a[0], b)
    assert a[0].shape == (64, 64, 3) and a[0].dtype == np.uint8


def test_background_brightness_tracks_label():
    # top corners are background for every face; mean brightness must rise with the label
    levels = np.linspace(0.0, 1.0, 6)
    means = []
    for v in levels:
        img = render(_face(4, background=float(v)), CFG).astype(np.float32) / 255
        corners = np.concatenate([img[:6, :6].reshape(-1, 3), img[:6, -6:].reshape(-1, 3)])
        means.append(corners.mean())
    assert np.all(np.diff(means) > 0.1), means
    assert abs(means[0] - 0.05) < 0.08 and abs(means[-1] - 0.95) < 0.08


def _eye_dark_area(face) -> int:
    """Pixels much darker than the skin in boxes around both eyes (where the renderer puts them)."""
    img = render(face, CFG).astype(np.float32).mean(axis=2) / 255
    g = _Geometry(face)
    skin = _palette(SKIN, face.skin_tone).mean()
    to_px = lambda v: int(round((v + 1) / 2 * CFG.size))  # noqa: E731
    y = int(round(g.y(-0.12) * CFG.size / 2 + CFG.size / 2))
    total = 0
    for phi in (-0.45, 0.45):
        x = to_px(g.at(phi)[0])
        total += int((img[y - 4 : y + 5, x - 5 : x + 6] < 0.6 * skin).sum())
    return total


def test_eye_region_tracks_eye_openness():
    """Opening the eyes uncovers more of the eye (area changed vs closed grows strictly with
    `eyes`), and across faces the dark-pixel area of the eye region rises with `eyes`."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    eyes, dark = [], []
    for i in range(120):
        f = sample_face(rng, CFG)
        f = dataclasses.replace(f, head=0.5 + (f.head - 0.5) * 0.3)
        eyes.append(f.eyes)
        dark.append(_eye_dark_area(f))
        if i < 20:
            closed = render(dataclasses.replace(f, eyes=0.0), CFG).astype(int)
            changed = [
                (np.abs(render(dataclasses.replace(f, eyes=v), CFG).astype(int) - closed).sum(axis=2) > 12).sum()
                for v in (0.25, 0.5, 0.75, 1.0)
            ]
            assert np.all(np.diff(changed) > 0), changed
    eyes, dark = np.array(eyes), np.array(dark)
    # skin tone and iris colour vary between faces, so the association is moderate but clear
    rho = spearmanr(eyes, dark)
    assert rho.statistic > 0.2 and rho.pvalue < 0.01, rho
    assert dark[eyes > 2 / 3].mean() > dark[eyes < 1 / 3].mean() + 3


def test_mouth_and_head_change_the_image_where_expected():
    base = _face(5, head=0.5, mouth=0.0)
    closed, open_ = render(base, CFG), render(dataclasses.replace(base, mouth=1.0), CFG)
    diff = np.abs(closed.astype(int) - open_.astype(int)).sum(axis=2)
    rows = np.nonzero(diff.sum(axis=1))[0]
    assert rows.min() > 32, "mouth openness must only change the lower face"
    # yaw moves the face's dark features toward the turn: centre of darkness shifts right
    left, right = (render(dataclasses.replace(base, head=h), CFG).mean(axis=2) for h in (0.1, 0.9))
    band = slice(20, 50)
    cols = np.arange(64)
    def dark_centre(g):
        w = np.clip(g[band].mean() - g[band], 0, None).sum(axis=0)
        return (w * cols).sum() / w.sum()
    assert dark_centre(right) > dark_centre(left) + 2


def test_gender_cues_overlap_but_separate():
    rng = np.random.default_rng(0)
    faces = [sample_face(rng, CFG) for _ in range(2000)]
    f = np.array([x.femininity for x in faces])
    female = np.array([x.female for x in faces])
    err = ((f > 0) != female).mean()
    assert err < 0.01, err  # ≥ 99 % separable in principle
    hair = np.array([x.hair_length for x in faces])
    assert hair[female].mean() - hair[~female].mean() > 0.5
    # …but the cues overlap: some women have short hair and some men long hair
    assert (hair[female] < 0.6).mean() > 0.02 and (hair[~female] > 0.4).mean() > 0.02


@pytest.mark.parametrize("colours", [0, 16])  # full colour, and the compact palette storage
def test_haar_detects_near_frontal_faces_across_skin_tones(colours):
    from training.data.haar import HaarProbe

    probe = HaarProbe()
    rng = np.random.default_rng(2024)
    hits = {"light": [], "mid": [], "dark": []}
    while min(len(v) for v in hits.values()) < 60:
        face = sample_face(rng, CFG)
        if abs(face.head - 0.5) >= 0.2:
            continue
        tone = "light" if face.skin_tone < 1 / 3 else "mid" if face.skin_tone < 2 / 3 else "dark"
        if len(hits[tone]) < 60:
            rgb = render(face, CFG)
            if colours:
                stored = to_palette(rgb, colours)
                assert len(stored.getcolors()) <= colours
                rgb = np.asarray(stored.convert("RGB"))
            hits[tone].append(probe.exactly_one(rgb))
    rates = {k: float(np.mean(v)) for k, v in hits.items()}
    assert all(r >= 0.9 for r in rates.values()), rates
    assert np.mean([r for r in rates.values()]) >= 0.93, rates


def test_palette_keeps_each_region_close_to_its_colour():
    rgb = render(_face(3), CFG)
    stored = to_palette(rgb, 16)
    assert stored.mode == "P" and len(stored.getcolors()) <= 16
    back = np.asarray(stored.convert("RGB")).astype(int)
    assert np.abs(back - rgb).mean() < 4.0  # posterised, not recoloured
    assert abs(back.mean() - rgb.mean()) < 1.0  # palette entries are means: brightness is kept
    assert np.abs(np.asarray(to_palette(rgb, 256).convert("RGB")).astype(int) - rgb).mean() < 2.0
    for bad in (1, 257):
        with pytest.raises(ValueError, match="colours"):
            to_palette(rgb, bad)


def test_a_written_file_gives_back_its_ground_truth(synth_root):
    """rendered_faces recovers the faces behind files of a written set: each redraws its file to the
    pixel, and with a changed condition, the same face changed (the edit benchmark's true edit)."""
    from services.shared.images import read
    from training.data.synth_dataset import rendered_faces

    files = sorted(p.relative_to(synth_root).as_posix() for p in (synth_root / "Female").glob("*.png"))[:3]
    faces, cfg = rendered_faces(synth_root, files)
    assert all(np.array_equal(render(face, cfg), read(synth_root / f)) for face, f in zip(faces, files, strict=True))
    changed = render(dataclasses.replace(faces[0], hair_color=1.0 - faces[0].hair_color), cfg)
    assert not np.array_equal(changed, read(synth_root / files[0]))
    wrong = files[0].replace("Female/", "Male/")
    with pytest.raises(ValueError, match="is not where"):
        rendered_faces(synth_root, [wrong])
