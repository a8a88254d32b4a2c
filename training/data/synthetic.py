"""The procedural face set: faces with exact ground truth for gender and the five conditions.

`sample_face(rng, cfg)` draws every parameter of one face (ground truth and nuisance), and
`render(face, cfg)` draws it deterministically: the same Face always gives the same pixels.

What makes these faces detectable by a real face detector (OpenCV's Haar cascade) was measured
and is recorded in shared/notes/procedural-faces.md; the choices below follow it:
- highlights on forehead, nose bridge and cheekbones are *added* to the skin colour, so their
  contrast does not shrink on dark skin (purely multiplicative shading biases against dark skin);
- the whites of the eyes are mixed toward the skin colour and the sockets are darkened, keeping
  the "eye band darker than the cheeks" pattern whatever the eye openness;
- a visible bright forehead band separates brows from the fringe;
- features sit at angles on an elliptic cylinder, so yaw slides them around the face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from services.shared.conditions import HEAD_MAX_YAW_DEG
from training.data.canvas import Canvas


@dataclass(frozen=True)
class SynthConfig:
    size: int = 64  # output side in pixels (square)
    supersample: int = 2  # rendered at size·supersample, box-filtered down (anti-aliasing)
    female_fraction: float = 0.55  # share of female faces
    # std of the femininity latent around ±1; larger → more gender overlap. At 0.4 even an oracle
    # reading the cues off the face parameters was right only 99.0 % of the time; 0.3 leaves
    # overlap (ambiguous faces exist) while a 99 %-accurate filter is possible.
    cue_spread: float = 0.3
    # std of additive Gaussian sensor noise; off by default: it adds ~50 % to PNG size and is
    # better drawn fresh at training time as augmentation
    pixel_noise: float = 0.0


# Anchor colours, interpolated by a scalar in [0, 1].
SKIN = np.array([[0.96, 0.80, 0.69], [0.80, 0.60, 0.45], [0.56, 0.38, 0.26], [0.32, 0.20, 0.13]])
HAIR = np.array([[0.93, 0.82, 0.56], [0.72, 0.52, 0.30], [0.40, 0.25, 0.14], [0.07, 0.06, 0.06]])
IRIS = np.array([[0.30, 0.18, 0.08], [0.25, 0.40, 0.55], [0.30, 0.42, 0.22], [0.12, 0.08, 0.05]])


def _palette(anchors: np.ndarray, t: float) -> np.ndarray:
    pos = float(np.clip(t, 0.0, 1.0)) * (len(anchors) - 1)
    i = min(int(pos), len(anchors) - 2)
    return (anchors[i] + (anchors[i + 1] - anchors[i]) * (pos - i)).astype(np.float32)


@dataclass(frozen=True)
class Face:
    # ground truth
    female: bool
    eyes: float
    mouth: float
    hair_color: float
    background: float
    head: float
    skin_tone: float  # 0 light … 1 dark (not a condition; used to audit bias)
    femininity: float  # latent behind the gender cues; overlaps between genders
    # gender cues (derived from femininity + noise)
    hair_length: float
    jaw_taper: float
    brow_weight: float
    lip_colour: float
    beard: float
    # nuisance
    scale: float
    cx: float
    cy: float
    light_x: float
    fringe: float
    iris: int
    bg_tint: tuple[float, float, float]
    shirt: tuple[float, float, float]
    hair_phase: float
    noise_seed: int


def sample_face(rng: np.random.Generator, cfg: SynthConfig, female: bool | None = None) -> Face:
    if female is None:
        female = bool(rng.random() < cfg.female_fraction)
    f = float(rng.normal(1.0 if female else -1.0, cfg.cue_spread))
    u = rng.random
    return Face(
        female=female,
        eyes=float(u()),
        mouth=float(u()),
        hair_color=float(u()),
        background=float(u()),
        head=float(rng.beta(2.0, 2.0)),  # photo sets are mostly near-frontal, with turned tails
        skin_tone=float(u()),
        femininity=f,
        hair_length=float(np.clip(0.5 + 0.4 * f + rng.normal(0, 0.12), 0.0, 1.0)),
        jaw_taper=float(np.clip(0.30 + 0.12 * f + rng.normal(0, 0.03), 0.05, 0.6)),
        brow_weight=float(np.clip(0.5 - 0.35 * f + rng.normal(0, 0.1), 0.0, 1.0)),
        lip_colour=float(np.clip(0.5 + 0.35 * f + rng.normal(0, 0.15), 0.0, 1.0)),
        beard=float(u() * 0.5) if (f < -0.4 and u() < 0.3) else 0.0,
        scale=float(rng.uniform(0.93, 1.05)),
        cx=float(rng.normal(0.0, 0.02)),
        cy=float(0.08 + rng.normal(0.0, 0.02)),
        light_x=float(rng.uniform(-0.5, 0.5)),
        fringe=float(rng.uniform(-0.66, -0.48)),
        iris=int(rng.integers(len(IRIS))),
        bg_tint=tuple(float(v) for v in rng.normal(0.0, 0.04, 3)),
        shirt=tuple(float(v) for v in rng.uniform(0.1, 0.8, 3)),
        hair_phase=float(u() * 2 * math.pi),
        noise_seed=int(rng.integers(2**31)),
    )


def render(face: Face, cfg: SynthConfig = SynthConfig()) -> np.ndarray:
    """Draw `face` as a uint8 RGB image of cfg.size × cfg.size."""
    side = cfg.size * cfg.supersample
    cv = Canvas(side, side)
    g = _Geometry(face)
    skin = _palette(SKIN, face.skin_tone)
    hair = _palette(HAIR, face.hair_color)

    _background(cv, face)
    _body(cv, face, g, skin, hair)
    _face(cv, face, g, skin, hair)
    _eyes(cv, face, g, skin, hair)
    _nose_and_mouth(cv, face, g, skin)
    _fringe(cv, face, g, hair)

    out = cv.to_uint8(cfg.supersample)
    if cfg.pixel_noise > 0:
        noise = np.random.default_rng(face.noise_seed).normal(0.0, cfg.pixel_noise * 255, out.shape)
        out = np.clip(out + noise, 0, 255).astype(np.uint8)
    return out


class _Geometry:
    """Where things are: the head is an elliptic cylinder of half-width a turned by yaw θ."""

    def __init__(self, face: Face) -> None:
        self.a = 0.50 * face.scale * (1.0 - 0.04 * face.femininity)
        self.b = 0.66 * face.scale
        self.cx, self.cy = face.cx, face.cy
        self.theta = math.radians((face.head - 0.5) * 2 * HEAD_MAX_YAW_DEG)
        self.s = math.sin(self.theta)
        # The visible front of the head spans cylinder angles ±75°, clipped at the silhouette.
        half = math.radians(75)
        left = math.sin(max(-half + self.theta, -math.pi / 2))
        right = math.sin(min(half + self.theta, math.pi / 2))
        self.face_x = self.cx + self.a * (left + right) / 2
        self.face_hw = self.a * (right - left) / 2

    def at(self, phi: float) -> tuple[float, float]:
        """x of a surface point at cylinder angle phi, and its foreshortening cos(φ+θ)."""
        return self.cx + self.a * math.sin(phi + self.theta), math.cos(phi + self.theta)

    def y(self, t: float) -> float:
        """Height on the face in units of its half-height b (0 = centre, +1 = chin)."""
        return self.cy + t * self.b


def _background(cv: Canvas, face: Face) -> None:
    level = 0.05 + 0.9 * face.background
    tint = np.asarray(face.bg_tint, np.float32)
    colour = np.clip(level + tint - tint.mean(), 0.0, 1.0)
    cv.img[:] = colour * (1.0 + 0.06 * cv.ys)[..., None]


def _hair_texture(cv: Canvas, win, face: Face, hair: np.ndarray) -> np.ndarray:
    x, y = cv.coords(win)
    wave = 90.0 * x + 3.0 * np.sin(11.0 * y + face.hair_phase) + face.hair_phase
    streaks = 0.9 + 0.06 * np.sin(wave) + 0.04 * np.sin(2.3 * wave + 1.0)
    return hair * streaks[..., None]


def _body(cv: Canvas, face: Face, g: _Geometry, skin, hair) -> None:
    a, b = g.a, g.b
    # One hair mass: a cap over the skull that continues down the sides to a length set by
    # hair_length (ear level … shoulders), the strongest gender cue at 64 px.
    hx, cap_y, cap_ry, rx = g.cx - 0.1 * a * g.s, g.cy - 0.42 * b, 0.84 * b, 1.1 * a
    end = g.cy + b * (-0.2 + 1.55 * face.hair_length)
    win = cv.window(hx - 1.3 * a, hx + 1.3 * a, cap_y - cap_ry, max(end, cap_y))
    x, y = cv.coords(win)
    ty = (y - cap_y) / cap_ry
    width = np.where(ty < 0, rx * np.sqrt(np.clip(1.0 - ty * ty, 0.0, 1.0)), rx * (1.0 + 0.12 * face.hair_length * ty))
    m = np.clip((width - np.abs(x - hx)) / cv.px + 0.5, 0, 1) * np.clip((end - y) / (2 * cv.px) + 0.5, 0, 1)
    cv.fill(win, m, _hair_texture(cv, win, face, hair))
    # ambient occlusion: hair beside and below the face lies in the head's shadow, which frames
    # the face with a darker band even for blond hair (blond on dark skin was detected 41 % → )
    cv.scale(*cv.blob(g.face_x, g.cy + 0.1 * b, 0.75 * a, 0.8 * b), 0.5)
    cv.add(*cv.blob(hx - 0.1 * a * g.s, g.cy - 1.0 * b, 0.5 * a, 0.12 * b), 0.05 + 0.07 * (1.0 - face.hair_color))
    cv.fill(*cv.ellipse(g.cx, g.cy + 2.1 * b, 1.25, 0.75 * b + 0.2), face.shirt)
    cv.fill(*cv.ellipse(g.cx + 0.08 * a * g.s, g.cy + 1.05 * b, 0.42 * a, 0.5 * b), skin * 0.68)
    if face.hair_length < 0.45:  # ears show beside short hair
        for phi in (-1.5, 1.5):
            ex, fore = g.at(phi)
            if fore > -0.35:
                cv.fill(*cv.ellipse(ex + 0.06 * a * math.copysign(1, phi), g.y(-0.06), 0.09 * a, 0.16 * b), skin * 0.82)


def _face(cv: Canvas, face: Face, g: _Geometry, skin, hair) -> None:
    a, b = g.a, g.b
    win = cv.window(g.face_x - g.face_hw - 0.2 * a, g.face_x + g.face_hw + 0.2 * a, g.cy - b, g.cy + b)
    x, y = cv.coords(win)
    t = (y - g.cy) / b
    # jaw narrows below the centre (more for female-looking faces); the chin follows the yaw
    width = g.face_hw * np.where(t > 0, 1.0 - face.jaw_taper * t * t, 1.0 - 0.08 * t * t)
    centre = g.face_x + 0.12 * a * g.s * np.clip(t, 0.0, 1.0)
    d = np.sqrt(((x - centre) / width) ** 2 + t * t)
    mask = np.clip((1.0 - d) * b / (1.2 * cv.px) + 0.5, 0.0, 1.0)
    # Lambert shading of the cylinder, lit from the front, above and to one side
    nx = np.clip((x - g.cx) / a, -1.0, 1.0)
    ny = np.clip(0.6 * t, -1.0, 1.0)
    nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.0, 1.0))
    light = np.array([face.light_x, -0.35, 0.9]) / math.hypot(face.light_x, 0.35, 0.9)
    shade = 0.62 + 0.45 * np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0.0, 1.0)
    cv.fill(win, mask, skin * shade[..., None])
    if face.beard > 0:
        bwin, m = cv.ellipse(centre.mean(), g.y(0.78), 0.75 * g.face_hw, 0.42 * b, soft=4)
        cv.fill(bwin, m, hair * 0.6, opacity=face.beard)
    # additive highlights (see module docstring): forehead, cheekbones, chin
    fx, _ = g.at(0.0)
    cv.add(*cv.blob(g.cx + 0.8 * (fx - g.cx), g.y(-0.40), 0.30 * a, 0.11 * b), 0.12)
    for phi in (-0.62, 0.62):
        x0, fore = g.at(phi)
        if fore > 0.1:
            cv.add(*cv.blob(x0, g.y(0.10), 0.14 * a * fore, 0.08 * b), 0.12 * fore)
    cv.add(*cv.blob(fx, g.y(0.84), 0.12 * a, 0.05 * b), 0.05)


def _eyes(cv: Canvas, face: Face, g: _Geometry, skin, hair) -> None:
    a, b = g.a, g.b
    sclera = 0.65 * skin + 0.35 * np.array([0.80, 0.78, 0.75], np.float32)
    brow = np.minimum(hair * 0.75, skin * 0.5)
    iris = IRIS[face.iris].astype(np.float32)
    for phi in (-0.45, 0.45):
        ex, fore = g.at(phi)
        if fore < 0.12:  # at the silhouette: hidden
            continue
        vis = min(1.0, (fore - 0.12) / 0.25)
        ey = g.y(-0.12)
        ew = 0.19 * a * (0.35 + 0.65 * fore)
        eh = (0.012 + 0.10 * face.eyes) * b
        # socket shadow: keeps the eye band dark for closed eyes too
        socket = cv.blob(ex, ey - 0.01 * b, 1.05 * ew, 0.085 * b)
        cv.scale(*socket, 1.0 - 0.32 * vis)
        cv.add(*socket, -0.05 * vis)
        win = cv.window(ex - ew, ex + ew, ey - eh - 0.03 * b, ey + eh + 0.03 * b)
        x, y = cv.coords(win)
        dx = (x - ex) / ew
        lid = eh * np.clip(1.0 - dx * dx, 0.0, 1.0)  # almond: aperture half-height at x
        dy = y - ey
        edge = cv.px
        aperture = np.clip((lid - np.abs(dy)) / edge + 0.5, 0.0, 1.0)
        cv.fill(win, aperture, sclera, vis)
        r_iris = 0.6 * ew
        gaze = ex + 0.25 * ew * g.s
        iris_d = np.sqrt((x - gaze) ** 2 + dy * dy)
        cv.fill(win, aperture * np.clip((r_iris - iris_d) / edge + 0.5, 0, 1), iris * 0.65, vis)
        cv.fill(win, aperture * np.clip((0.45 * r_iris - iris_d) / edge + 0.5, 0, 1), (0.04, 0.03, 0.03), vis)
        # upper lid and lashes: a dark line along the top of the aperture (the whole eye when closed)
        line = np.clip((0.9 * edge - np.abs(dy + lid)) / edge + 0.5, 0.0, 1.0) * (np.abs(dx) < 1.05)
        cv.fill(win, line, (0.06, 0.04, 0.04), 0.9 * vis)
        lower = np.clip((0.6 * edge - np.abs(dy - lid)) / edge + 0.5, 0.0, 1.0) * (np.abs(dx) < 0.9)
        cv.fill(win, lower, (0.10, 0.07, 0.06), 0.5 * vis)  # lower lid: a fainter second edge
        # brow: an arched band, thicker on masculine faces
        bx, _ = g.at(phi * 1.02)
        bw = 0.24 * a * (0.35 + 0.65 * fore)
        by = g.y(-0.34)
        thick = (0.028 + 0.035 * face.brow_weight) * b
        bwin = cv.window(bx - bw, bx + bw, by - 0.06 * b - thick, by + thick)
        x, y = cv.coords(bwin)
        u = np.clip((x - bx) / bw, -1.0, 1.0)
        centre = by - 0.05 * b * (1.0 - u * u)
        half = thick * 0.5 * (1.0 - 0.5 * np.abs(u))
        m = np.clip((half - np.abs(y - centre)) / edge + 0.5, 0.0, 1.0) * (np.abs((x - bx) / bw) < 1.0)
        cv.fill(bwin, m, brow, 0.9 * vis)


def _nose_and_mouth(cv: Canvas, face: Face, g: _Geometry, skin) -> None:
    a, b = g.a, g.b
    cos_t = math.cos(g.theta)
    tip = g.cx + 1.12 * a * g.s  # the nose stands out of the cylinder, so it moves further
    bridge_top, _ = g.at(0.0)
    cv.add(*cv.blob((bridge_top + tip) / 2, g.y(0.02), 0.055 * a, 0.2 * b), 0.11)
    side = -1.0 if face.light_x > 0 else 1.0  # shadow on the side away from the light
    cv.scale(*cv.blob(tip + side * 0.09 * a, g.y(0.14), 0.05 * a, 0.12 * b), 0.86)
    for sgn in (-1.0, 1.0):
        cv.scale(*cv.blob(tip + sgn * 0.085 * a * cos_t, g.y(0.27), 0.035 * a, 0.02 * b), 0.45)
    cv.scale(*cv.blob(tip, g.y(0.32), 0.12 * a * cos_t + 0.02, 0.03 * b), 0.82)

    mx = g.cx + a * g.s
    my = g.y(0.5)
    mw = 0.30 * a * (0.4 + 0.6 * cos_t)
    opening = (0.004 + 0.12 * face.mouth) * b
    lip_h = (0.04 + 0.015 * face.lip_colour) * b
    red = np.array([0.62, 0.18, 0.22], np.float32) * (0.55 + 0.6 * skin.mean())
    lip = (1 - 0.5 * face.lip_colour) * skin * 0.78 + 0.5 * face.lip_colour * red
    cv.fill(*cv.ellipse(mx, my - opening - 0.35 * lip_h, mw, 0.75 * lip_h, soft=1.5), lip)
    cv.fill(*cv.ellipse(mx, my + opening + 0.45 * lip_h, 0.82 * mw, 0.85 * lip_h, soft=1.5), lip)
    cv.fill(*cv.ellipse(mx, my, 0.86 * mw, max(opening, 0.012 * b)), (0.10, 0.04, 0.04))
    if opening > 0.03 * b:
        cv.fill(*cv.ellipse(mx, my - 0.55 * opening, 0.55 * mw, 0.3 * opening), (0.72, 0.70, 0.64))
    cv.add(*cv.blob(mx, my + opening + 1.2 * lip_h, 0.2 * a, 0.03 * b), 0.04)


def _fringe(cv: Canvas, face: Face, g: _Geometry, hair) -> None:
    """Hair over the top of the face: the hairline is lowest at the temples."""
    a, b = g.a, g.b
    win = cv.window(g.face_x - g.face_hw - 0.1, g.face_x + g.face_hw + 0.1, g.cy - 1.1 * b, g.cy - 0.2 * b)
    x, y = cv.coords(win)
    hx = g.cx + 0.6 * a * g.s
    line = g.cy + b * (face.fringe + 0.28 * ((x - hx) / a) ** 2 + 0.02 * np.sin(25 * x + face.hair_phase))
    skull = ((x - (g.cx - 0.1 * a * g.s)) / (1.1 * a)) ** 2 + ((y - (g.cy - 0.42 * b)) / (0.84 * b)) ** 2 < 1.0
    m = np.clip((line - y) / cv.px + 0.5, 0.0, 1.0) * skull
    cv.fill(win, m, _hair_texture(cv, win, face, hair))
