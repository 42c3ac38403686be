"""A PNG montage of windowed synthetic slices, a row per class, to eyeball the phantom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common.vocabulary import CLASS_NAMES, KIDNEY_WINDOW_CENTER_HU, KIDNEY_WINDOW_WIDTH_HU
from training.synth.generate import study_seed
from training.synth.phantom import ABDOMEN, ScanProtocol, make_phantom, render_slice

WINDOW = (KIDNEY_WINDOW_CENTER_HU, KIDNEY_WINDOW_WIDTH_HU)  # (centre, width), HU


def window(hu: np.ndarray, center: float = WINDOW[0], width: float = WINDOW[1]) -> np.ndarray:
    """HU to 8-bit grey through a linear window."""
    lo = center - width / 2
    return (np.clip((hu - lo) / width, 0.0, 1.0) * 255).astype(np.uint8)


def _pick(n: int, visible: list[int], per_row: int) -> list[int]:
    """Slices to show: spread over the lesion when there is one, else over the study."""
    pool = visible or list(range(n // 4, n - n // 4))
    return [pool[round(i * (len(pool) - 1) / max(per_row - 1, 1))] for i in range(per_row)]


def montage(
    *,
    seed: int,
    size: int = 256,
    per_row: int = 4,
    slices: int = 24,
    protocol: ScanProtocol = ABDOMEN,
    lesion_scale: float = 1.0,
) -> Image.Image:
    """A row per class; lesions at `lesion_scale`, as the studies it illustrates were made."""
    rows = []
    for number, cls in enumerate(CLASS_NAMES, start=1):
        phantom = make_phantom(
            study_class=cls,
            seed=study_seed(seed, number),
            n_slices=slices,
            protocol=protocol,
            lesion_scale=lesion_scale,
        )
        lesion = phantom.lesion
        visible = []
        if lesion is not None:
            visible = [
                i
                for i, z in enumerate(phantom.z_positions)
                if abs(z - lesion.shape.center[2]) < lesion.shape.radii[2]
            ]
        picked = _pick(slices, visible, per_row)
        tiles = [window(render_slice(phantom, phantom.z_positions[i], size, i)[0]) for i in picked]
        rows.append(np.concatenate(tiles, axis=1))
    image = Image.fromarray(np.concatenate(rows, axis=0))
    draw = ImageDraw.Draw(image)
    for r, cls in enumerate(CLASS_NAMES):
        draw.text((6, r * size + 6), cls, fill=255)
    scale = "" if lesion_scale == 1.0 else f", lesions x{lesion_scale:g}"
    caption = f"synthetic phantom, {protocol.name} protocol{scale}, window 40/400"
    draw.text((6, image.height - 16), caption, fill=200)
    return image


def save_montage(
    path: Path, *, seed: int, size: int = 256, protocol: ScanProtocol = ABDOMEN, lesion_scale: float = 1.0
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    montage(seed=seed, size=size, protocol=protocol, lesion_scale=lesion_scale).save(path)
