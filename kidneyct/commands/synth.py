"""`kidneyct synth`: write synthetic kidney-CT studies as DICOM, with their truth in `truth.csv`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from common.vocabulary import CLASS_NAMES
from kidneyct.commands.options import IMAGE_SIZE, option
from kidneyct.settings import Settings
from training.synth.dicom_writer import TRANSFER_SYNTAXES
from training.synth.generate import generate
from training.synth.montage import save_montage
from training.synth.phantom import PROTOCOLS
from training.synth.truth import TRUTH_FILE

F = TypeVar("F", bound=Callable[..., Any])


def _classes(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in CLASS_NAMES]
    if unknown or not names:
        raise click.BadParameter(
            f"expected a comma-separated subset of {', '.join(CLASS_NAMES)}; got {value!r}"
        )
    return names


def protocol_option(*, default: str) -> Callable[[F], F]:
    """`--protocol`, shared with `kidneyct demo`."""
    return click.option(
        "--protocol",
        type=click.Choice(sorted(PROTOCOLS)),
        default=default,
        show_default=True,
        help="abdomen: 360 mm field of view over 160 mm; kidney: a targeted reconstruction of thin slices "
        "through the kidneys, nephrographic phase (lesions show larger, on more slices).",
    )


def lesion_scale_option(*, default: float) -> Callable[[F], F]:
    """`--lesion-scale`, shared with `kidneyct demo`."""
    return click.option(
        "--lesion-scale",
        type=click.FloatRange(min=0.5, max=3.0),
        default=default,
        show_default=True,
        help="Multiply every lesion's size (1: typical findings; larger: the big end of what is seen).",
    )


@click.command("synth", short_help="Write synthetic kidney-CT studies as DICOM (not clinical data).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option(
    "--studies", type=click.IntRange(min=1), default=4, show_default=True, help="Number of studies."
)
@click.option("--slices", type=click.IntRange(min=1), default=24, show_default=True, help="Slices per study.")
@click.option(
    "--classes",
    default=",".join(CLASS_NAMES),
    show_default=True,
    help="Comma-separated classes; studies cycle through them in order.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the anatomy, lesions and noise."
)
@option(
    IMAGE_SIZE,
    "size",
    hidden_aliases=["--size"],
    type=click.IntRange(min=16, max=1024),
    default=512,
    show_default=True,
    help="Rows and columns of each slice, in pixels.",
)
@click.option(
    "--transfer-syntax",
    type=click.Choice(sorted(TRANSFER_SYNTAXES)),
    default="explicit",
    show_default=True,
    help="explicit: uncompressed; rle: RLE Lossless; j2k: JPEG 2000 Lossless.",
)
@protocol_option(default="abdomen")
@lesion_scale_option(default=1.0)
@click.option("--enhanced", is_flag=True, help="Write each study as one Enhanced CT multi-frame instance.")
@click.option(
    "--montage", type=click.Path(dir_okay=False, path_type=Path), help="Also save a PNG montage here."
)
@click.pass_obj
def synth(
    settings: Settings,
    out: Path,
    studies: int,
    slices: int,
    classes: str,
    seed: int,
    size: int,
    transfer_syntax: str,
    protocol: str,
    lesion_scale: float,
    enhanced: bool,
    montage: Path | None,
) -> None:
    """Write synthetic kidney-CT studies (a phantom: it exercises the system, it is not clinical data)."""
    names = _classes(classes)

    def progress(done: int, total: int, study_class: str) -> None:
        click.echo(f"study {done}/{total} ({study_class}) written", err=True)

    rows = generate(
        out,
        studies=studies,
        slices=slices,
        classes=names,
        seed=seed,
        size=size,
        transfer_syntax=TRANSFER_SYNTAXES[transfer_syntax],
        enhanced=enhanced,
        protocol=PROTOCOLS[protocol],
        lesion_scale=lesion_scale,
        progress=progress,
    )
    click.echo(
        f"{len({r.sop_instance_uid for r in rows})} instances of {studies} studies in {out}; truth in {out / TRUTH_FILE}"
    )
    if montage is not None:
        save_montage(montage, seed=seed, protocol=PROTOCOLS[protocol], lesion_scale=lesion_scale)
        click.echo(f"montage in {montage}")
