"""The five CVAE conditions: names, order and meaning. Everything that stores or exchanges
conditions (CSV files, model outputs, signatures, the wire schema) uses this order."""

from __future__ import annotations

CONDITIONS: tuple[str, ...] = ("eyes", "mouth", "hair_color", "background", "head")

MEANING: dict[str, str] = {
    "eyes": "eye openness: 0 closed … 1 wide open",
    "mouth": "mouth openness: 0 closed … 1 wide open",
    "hair_color": "hair darkness: 0 light … 1 dark",
    "background": "background brightness: 0 dark … 1 bright",
    "head": "head yaw: 0 turned to the image's left, 0.5 frontal, 1 turned to the image's right",
}

# what a condition a request leaves out means, on every transport of every service that takes
# conditions: the middle of its range (for `head`, a frontal face)
OMITTED = 0.5

# head ∈ [0, 1] maps linearly to a yaw of ±HEAD_MAX_YAW_DEG
HEAD_MAX_YAW_DEG = 60.0


def mirror_head(head: float) -> float:
    """A horizontally flipped face turns the other way: h → 1 − h."""
    return 1.0 - head
