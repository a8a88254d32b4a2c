"""Which layout a dataset folder holds, and opening it: the seed's Female/ Male/ unlabeled/
(folders.py), CelebA (celeba.py), or, for a filter job, any folder of images."""

from __future__ import annotations

from pathlib import Path

from services.shared import celeba, folders
from services.shared.dataset import Dataset, DatasetError, open_unlabelled


def has_layout(root: Path) -> bool:
    """Whether `root` holds one of the layouts (the seed's folders, CelebA)."""
    return celeba.looks_like(root) or folders.looks_like(root)


def open_dataset(root: Path | str, verify: bool = True, any_folder: bool = False) -> Dataset:
    """Open a dataset in any supported layout (detected from what is on disk). With `any_folder`,
    a folder in neither layout is a set of unlabelled images (every image file under it), and the
    seed's layout may lack Female/ or Male/: what a filter job accepts, where training needs both
    genders labelled and says so."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if celeba.looks_like(root):
        return celeba.open_celeba(root, verify=verify)
    if folders.looks_like(root):
        return folders.open_folders(root, verify=verify, partial=any_folder)
    if any_folder:
        return open_unlabelled(root, verify=verify)
    raise DatasetError(
        f"{root}: unrecognised dataset layout. Expected either <root>/Female/ and <root>/Male/ "
        f"(optionally <root>/unlabeled/), or CelebA's <root>/img_align_celeba/ with list_attr_celeba.txt"
    )
