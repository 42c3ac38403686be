"""A seeded abdomen phantom in Hounsfield units, with one optional kidney lesion per study.

Coordinates are DICOM patient coordinates (LPS) in millimetres: x grows to the patient's left
(image right), y grows posterior (image down), z grows toward the head. Every structure is an
analytic shape rendered slice by slice with a one-pixel soft edge (partial-volume effect), so
small image sizes still show small stones. Numpy only; a study is fully determined by its seed.

This phantom exercises the system; it says nothing about clinical accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from common.vocabulary import CLASS_NAMES

FIELD_OF_VIEW_MM = 360.0
COVERAGE_MM = 160.0  # cranio-caudal extent of a study: the kidneys and the liver's lower part
AIR_HU = -1000.0


@dataclass(frozen=True, slots=True)
class ScanProtocol:
    """Where a study's slices are: the display field of view and the cranio-caudal coverage.

    `abdomen`: the whole abdomen at the isocentre, `COVERAGE_MM` split evenly over the slices, in
    the corticomedullary phase (bright cortex, darker medullary pyramids).
    `kidney`: a renal-mass protocol: a targeted reconstruction (smaller field of view centred on the
    kidneys) of thin slices through the kidneys' middle, in the nephrographic phase, where the
    medulla has enhanced like the cortex and masses stand out against homogeneous parenchyma.
    Lesions show larger, on more slices and with more contrast, so a small model input sees them.
    """

    name: str
    fov_mm: float
    targeted: bool
    coverage_mm: float | None = None  # abdomen: fixed extent; kidney: slices x spacing
    spacing_mm: float | None = None
    nephrographic: bool = False


ABDOMEN = ScanProtocol("abdomen", FIELD_OF_VIEW_MM, targeted=False, coverage_mm=COVERAGE_MM)
KIDNEY = ScanProtocol("kidney", 200.0, targeted=True, spacing_mm=3.0, nephrographic=True)
PROTOCOLS = {p.name: p for p in (ABDOMEN, KIDNEY)}


@dataclass(frozen=True, slots=True)
class Ellipsoid:
    """An ellipsoid rotated by `angle` (radians) about the z axis."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    angle: float = 0.0


@dataclass(frozen=True, slots=True)
class Waves:
    """A smooth 3D texture: a sum of random plane waves (zero mean, amplitude ~1)."""

    k: np.ndarray  # (n, 3) wave vectors, radians per mm
    phase: np.ndarray  # (n,)

    def at(self, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
        out = np.zeros_like(x)
        for (kx, ky, kz), ph in zip(self.k, self.phase, strict=True):
            out += np.cos(kx * x + ky * y + kz * z + ph)
        return out * np.float32(np.sqrt(2.0 / len(self.phase)))


@dataclass(frozen=True, slots=True)
class Lesion:
    kind: str  # one of CLASS_NAMES except Normal
    shape: Ellipsoid
    hu: float
    texture: Waves | None = None
    texture_hu: float = 0.0
    # Irregular outline: radius factor 1 + sum a*cos(m*theta + p) over (m, a, p).
    lobes: tuple[tuple[int, float, float], ...] = ()
    core: Ellipsoid | None = None  # necrotic centre of a tumour
    core_hu: float = 0.0


@dataclass(frozen=True, slots=True)
class Kidney:
    shape: Ellipsoid
    medial_sign: float  # +1 when the hilum points to +x (the right kidney), -1 for the left one
    cortex_hu: float
    medulla_hu: float
    pyramids: int
    pyramid_phase: float


@dataclass(frozen=True, slots=True)
class Bowel:
    x: float
    y: float
    radius: float
    sway: float  # lateral excursion along z (mm)
    wavelength: float
    phase: float
    gas_fraction: float  # 1: all gas, 0: all fluid; in between an air-fluid level


@dataclass(frozen=True)
class Phantom:
    """Every random draw of one study; `render` turns it into slices deterministically."""

    study_class: str
    seed: int
    z_top: float
    body: Ellipsoid
    fat_mm: float
    noise_hu: float
    liver: Ellipsoid
    spleen: Ellipsoid
    spine_y: float
    kidneys: tuple[Kidney, Kidney]
    bowels: tuple[Bowel, ...]
    ribs: tuple[tuple[float, float], ...]  # (angle on the body outline, lowest z of the rib)
    aorta_hu: float
    liver_hu: float
    mesentery: Waves
    lesion: Lesion | None = None
    slice_z: tuple[float, ...] = field(default=())
    slice_spacing_mm: float = COVERAGE_MM
    fov_mm: float = FIELD_OF_VIEW_MM
    center_xy: tuple[float, float] = (0.0, 0.0)  # patient x, y at the image centre

    @property
    def z_positions(self) -> tuple[float, ...]:
        return self.slice_z


def make_phantom(
    *,
    study_class: str,
    seed: int,
    n_slices: int,
    protocol: ScanProtocol = ABDOMEN,
    lesion_scale: float = 1.0,
) -> Phantom:
    """Draw a study's anatomy and lesion, and place its slices (top first) as `protocol` says.

    `lesion_scale` multiplies every lesion's radii (1: the sizes below, typical of findings; larger:
    the big end of what radiologists see, for a model that must learn from little data quickly).
    """
    if lesion_scale <= 0:
        raise ValueError(f"lesion_scale must be positive, got {lesion_scale}")
    if study_class not in CLASS_NAMES:
        raise ValueError(f"unknown class {study_class!r}; expected one of {CLASS_NAMES}")
    if n_slices < 1:
        raise ValueError("a study needs at least one slice")
    rng = np.random.default_rng(seed)
    u = rng.uniform
    z_top = round(float(u(-120, -60)), 1)
    bx, by = u(-6, 6), u(-12, 8)
    body = Ellipsoid((bx, by, 0.0), (u(145, 172), u(105, 125), 1e9))
    spine_y = by + body.radii[1] * u(0.42, 0.5)
    z_kid = z_top - COVERAGE_MM * u(0.45, 0.55)

    kidneys = []
    for side in (-1.0, 1.0):  # -1: the patient's right (image left)
        drop = u(8, 20) if side < 0 else 0.0  # the right kidney sits lower, under the liver
        rx, ry, rz = u(24, 30), u(19, 24), u(48, 58)
        shape = Ellipsoid(
            (side * u(55, 70), spine_y - u(2, 12), z_kid - drop + u(-5, 5)),
            (rx, ry, rz),
            side * np.deg2rad(u(25, 40)),
        )
        kidneys.append(
            Kidney(
                shape=shape,
                medial_sign=-side,
                cortex_hu=u(140, 185),
                medulla_hu=u(70, 100),
                pyramids=int(rng.integers(5, 8)),
                pyramid_phase=u(0, 2 * np.pi),
            )
        )

    bowels = tuple(
        Bowel(
            x=u(-90, 90),
            y=by - u(10, 0.85 * body.radii[1]),
            radius=u(7, 17),
            sway=u(0, 25),
            wavelength=u(40, 120),
            phase=u(0, 2 * np.pi),
            gas_fraction=float(rng.choice([0.0, 0.4, 0.7, 1.0])),
        )
        for _ in range(int(rng.integers(10, 18)))
    )
    ribs = tuple(
        (float(a), z_top - COVERAGE_MM * u(0.1, 0.45))
        for side in (-1, 1)
        for a in np.deg2rad(90 + side * np.linspace(35, 80, int(rng.integers(3, 6))) + u(-4, 4))
    )
    if protocol.nephrographic:
        kidneys = [replace(k, medulla_hu=k.cortex_hu) for k in kidneys]
    if protocol.targeted:
        # Centred between the kidneys, a little anterior to the spine; the slab at their mid-height.
        center_xy = (0.0, round(spine_y - 15.0, 3))
        z_mid = (kidneys[0].shape.center[2] + kidneys[1].shape.center[2]) / 2
        step = float(protocol.spacing_mm or 3.0)
        first = z_mid + step * (n_slices - 1) / 2
        slice_z = tuple(round(first - i * step, 3) for i in range(n_slices))
    else:
        center_xy = (0.0, 0.0)
        step = float(protocol.coverage_mm or COVERAGE_MM) / n_slices
        slice_z = tuple(round(z_top - (i + 0.5) * step, 3) for i in range(n_slices))
    phantom = Phantom(
        study_class=study_class,
        seed=seed,
        z_top=z_top,
        body=body,
        fat_mm=u(10, 30),
        noise_hu=u(8, 18),
        liver=Ellipsoid(
            (bx - u(65, 80), by - u(0, 15), z_top + u(0, 25)),
            (u(85, 100), u(60, 75), u(85, 100)),
            angle=np.deg2rad(u(-50, -30)),
        ),
        spleen=Ellipsoid(
            (bx + u(80, 95), spine_y - u(25, 40), z_top + u(10, 25)), (u(25, 35), u(40, 50), 50.0)
        ),
        spine_y=spine_y,
        kidneys=(kidneys[0], kidneys[1]),
        bowels=bowels,
        ribs=ribs,
        aorta_hu=u(180, 260),
        liver_hu=u(95, 120),
        mesentery=Waves(k=rng.normal(size=(16, 3)) * (2 * np.pi / 45.0), phase=rng.uniform(0, 2 * np.pi, 16)),
        slice_z=slice_z,
        slice_spacing_mm=step,
        fov_mm=protocol.fov_mm,
        center_xy=center_xy,
    )
    if study_class == "Normal":
        return phantom
    lesion = _make_lesion(study_class, phantom, rng, slice_z, lesion_scale)
    return replace(phantom, lesion=lesion)


def _snap(z: float, slice_z: tuple[float, ...]) -> float:
    """The slice position nearest `z`, so that at least one slice crosses the lesion's centre."""
    return min(slice_z, key=lambda s: abs(s - z))


def _kidney_point(kidney: Kidney, rng: np.random.Generator, rho: float, medial: float) -> np.ndarray:
    """A point at normalised radius `rho` in the kidney, `medial` > 0 biases it toward the hilum."""
    direction = rng.normal(size=3)
    direction[2] *= 0.5  # keep lesions away from the poles, where the kidney is a sliver
    direction[0] += medial * kidney.medial_sign
    direction /= np.linalg.norm(direction)
    local = direction * rho * np.array(kidney.shape.radii)
    c, s = np.cos(kidney.shape.angle), np.sin(kidney.shape.angle)
    world = np.array([c * local[0] - s * local[1], s * local[0] + c * local[1], local[2]])
    return np.array(kidney.shape.center) + world


def _make_lesion(
    kind: str, phantom: Phantom, rng: np.random.Generator, slice_z: tuple[float, ...], scale: float
) -> Lesion:
    u = rng.uniform
    kidney = phantom.kidneys[int(rng.integers(0, 2))]
    if kind == "Cyst":
        r = u(7, 22) * scale
        x, y, z = _kidney_point(kidney, rng, u(0.55, 0.95), medial=0.0)
        return Lesion(kind, Ellipsoid((x, y, _snap(z, slice_z)), (r, r, r)), hu=u(0, 20))
    if kind == "Stone":
        # In the renal pelvis or a calyx: the medial part of the sinus.
        r = u(1.5, 5.0) * scale
        x, y, z = _kidney_point(kidney, rng, u(0.1, 0.45), medial=2.5)
        return Lesion(
            kind, Ellipsoid((x, y, _snap(z, slice_z)), (r, r * u(0.7, 1.0), r * u(0.7, 1.0))), hu=u(400, 1500)
        )
    r = u(15, 32) * scale
    x, y, z = _kidney_point(kidney, rng, u(0.5, 0.85), medial=-0.5)
    center = (x, y, _snap(z, slice_z))
    texture = Waves(
        k=rng.normal(size=(14, 3)) * (2 * np.pi / u(6, 12)),
        phase=rng.uniform(0, 2 * np.pi, size=14),
    )
    lobes = tuple((int(m), float(u(0.06, 0.16)), float(u(0, 2 * np.pi))) for m in (2, 3, 5))
    core = None
    if rng.random() < 0.6:
        core = Ellipsoid(
            (center[0] + u(-3, 3), center[1] + u(-3, 3), center[2]), (r * u(0.25, 0.45),) * 2 + (r * 0.4,)
        )
    return Lesion(
        kind,
        Ellipsoid(center, (r, r * u(0.8, 1.0), r * u(0.8, 1.0)), angle=u(0, np.pi)),
        hu=u(30, 60),
        texture=texture,
        texture_hu=u(8, 15),
        lobes=lobes,
        core=core,
        core_hu=u(5, 20),
    )


# --- rendering -----------------------------------------------------------------------------------


class _Canvas:
    """One slice being painted: HU values, pixel-centre coordinates and the soft-edge width."""

    def __init__(
        self,
        size: int,
        z: float,
        fov_mm: float = FIELD_OF_VIEW_MM,
        center_xy: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        self.spacing = fov_mm / size
        self.x0 = center_xy[0] - fov_mm / 2  # patient x, y of the top-left pixel's outer corner
        self.y0 = center_xy[1] - fov_mm / 2
        offsets = (np.arange(size, dtype=np.float32) + 0.5) * self.spacing
        # rows are y (anterior at the top), columns x
        self.x, self.y = np.meshgrid(offsets + np.float32(self.x0), offsets + np.float32(self.y0))
        self.z = z
        self.hu = np.full((size, size), AIR_HU, dtype=np.float32)

    def around(self, e: Ellipsoid, margin: float = 0.0) -> _Canvas:
        """A view of the pixels near an ellipsoid: painting it paints this canvas (for speed)."""
        reach = max(e.radii[0], e.radii[1]) + margin + 2.0 * self.spacing
        n_rows, n_cols = self.hu.shape

        def span(c: float, origin: float, n: int) -> slice:
            lo = int(np.floor((c - reach - origin) / self.spacing))
            hi = int(np.ceil((c + reach - origin) / self.spacing)) + 1
            return slice(max(lo, 0), max(min(hi, n), 0))

        rows, cols = span(e.center[1], self.y0, n_rows), span(e.center[0], self.x0, n_cols)
        sub = object.__new__(_Canvas)
        sub.spacing, sub.x0, sub.y0, sub.z = self.spacing, self.x0, self.y0, self.z
        sub.x, sub.y, sub.hu = self.x[rows, cols], self.y[rows, cols], self.hu[rows, cols]
        return sub

    def coverage(self, signed_distance: np.ndarray) -> np.ndarray:
        """The fraction of each pixel inside a shape, from an approximate signed distance (mm)."""
        return np.clip(0.5 - signed_distance / self.spacing, 0.0, 1.0)

    def paint(self, cover: np.ndarray, hu: float | np.ndarray) -> None:
        self.hu += cover * (hu - self.hu)

    def ellipse(self, e: Ellipsoid, grow: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(normalised radius, local u, local v) of the ellipsoid's cross-section, or None if missed."""
        w = (self.z - e.center[2]) / e.radii[2]
        if abs(w) >= 1.0 and grow == 0.0:
            return None
        scale = np.sqrt(max(1.0 - w * w, 1e-6))
        dx, dy = self.x - np.float32(e.center[0]), self.y - np.float32(e.center[1])
        c, s = np.float32(np.cos(e.angle)), np.float32(np.sin(e.angle))
        lu, lv = c * dx + s * dy, -s * dx + c * dy
        rx, ry = e.radii[0] * scale + grow, e.radii[1] * scale + grow
        rho = np.sqrt((lu / rx) ** 2 + (lv / ry) ** 2)
        return rho, lu, lv

    def fill(self, e: Ellipsoid, hu: float | np.ndarray, grow: float = 0.0) -> np.ndarray | None:
        """Paint an ellipsoid's cross-section."""
        return self.around(e, grow)._fill(e, hu, grow)

    def _fill(self, e: Ellipsoid, hu: float | np.ndarray, grow: float) -> np.ndarray | None:
        hit = self.ellipse(e, grow)
        if hit is None:
            return None
        rho = hit[0]
        scale = np.sqrt(max(1.0 - ((self.z - e.center[2]) / e.radii[2]) ** 2, 1e-6))
        cover = self.coverage((rho - 1.0) * min(e.radii[0], e.radii[1]) * scale)
        self.paint(cover, hu)
        return cover


def render_slice(phantom: Phantom, z: float, size: int, noise_seed: int) -> tuple[np.ndarray, bool]:
    """The slice at `z` in HU (float32, size x size) and whether the lesion shows on it."""
    cv = _Canvas(size, z, phantom.fov_mm, phantom.center_xy)
    _body(cv, phantom)
    _spine(cv, phantom)
    _organs(cv, phantom)
    _ribs(cv, phantom)
    for kidney in phantom.kidneys:
        _kidney(cv, kidney)
    visible = _lesion(cv, phantom.lesion) if phantom.lesion is not None else False
    _table(cv, phantom)
    rng = np.random.default_rng(noise_seed)
    cv.hu += _correlated_noise(rng, cv.hu.shape) * np.float32(phantom.noise_hu)
    return np.clip(cv.hu, -1024.0, 3071.0), visible


def _correlated_noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Unit-variance noise with CT-like short-range correlation (a 3x3 box blur of white noise)."""
    white = rng.standard_normal(shape, dtype=np.float32)
    blurred = np.zeros_like(white)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            blurred += np.roll(np.roll(white, dy, 0), dx, 1)
    return blurred / np.float32(3.0)


def _body(cv: _Canvas, p: Phantom) -> None:
    b = p.body
    cv.fill(b, -105.0)  # subcutaneous fat
    inner = Ellipsoid(b.center, (b.radii[0] - p.fat_mm, b.radii[1] - p.fat_mm, b.radii[2]))
    cv.fill(inner, 45.0)  # abdominal wall muscle
    wall = 7.0
    cavity = Ellipsoid(b.center, (inner.radii[0] - wall, inner.radii[1] - wall, b.radii[2]))
    cv.fill(cavity, -90.0)  # visceral fat
    # Mesentery and small-bowel walls: soft tissue in a fatty net, anterior to the kidneys.
    net = p.mesentery.at(cv.x, cv.y, cv.z)
    hit = cv.ellipse(cavity)
    if hit is not None:
        anterior = np.clip((p.spine_y - 30.0 - cv.y) / 40.0, 0.0, 1.0)
        cv.paint(hit[0].__lt__(0.92) * anterior * np.clip(net - 0.3, 0.0, 1.0), 35.0)


def _spine(cv: _Canvas, p: Phantom) -> None:
    sy = p.spine_y
    far = 1e9
    # Paraspinal muscles and psoas (the psoas grows toward the pelvis).
    for side in (-1.0, 1.0):
        cv.fill(Ellipsoid((side * 38.0, sy + 42.0, 0.0), (26.0, 22.0, far)), 50.0)
        psoas = 7.0 + 0.12 * max(0.0, p.z_top - cv.z)
        cv.fill(Ellipsoid((side * (22.0 + psoas * 0.6), sy - 2.0, 0.0), (psoas, psoas * 1.1, far)), 48.0)
    # Vertebral body, or an intervertebral disc every ~32 mm.
    disc = (cv.z - p.z_top) % 32.0 < 7.0
    body = Ellipsoid((0.0, sy, 0.0), (21.0, 17.0, far))
    if disc:
        cv.fill(body, 85.0)
    else:
        cv.fill(body, 750.0)
        cv.fill(Ellipsoid((0.0, sy, 0.0), (18.5, 14.5, far)), 230.0)
    arch = Ellipsoid((0.0, sy + 30.0, 0.0), (14.0, 12.0, far))
    cv.fill(arch, 600.0)
    cv.fill(Ellipsoid((0.0, sy + 48.0, 0.0), (4.0, 12.0, far)), 600.0)  # spinous process
    cv.fill(Ellipsoid((0.0, sy + 29.0, 0.0), (8.5, 7.5, far)), 15.0)  # spinal canal (CSF)


def _ribs(cv: _Canvas, p: Phantom) -> None:
    far = 1e9
    # Ribs: cross-sections on the posterolateral body wall, the lower ribs ending higher up.
    b = p.body
    for angle, z_low in p.ribs:
        if cv.z < z_low:
            continue
        rx, ry = b.radii[0] - p.fat_mm - 10.0, b.radii[1] - p.fat_mm - 10.0
        cx = b.center[0] + rx * np.cos(angle) * 0.98
        cy = b.center[1] + ry * np.sin(angle) * 0.98
        cv.fill(Ellipsoid((cx, cy, 0.0), (6.5, 4.5, far), angle=angle), 700.0)
        cv.fill(Ellipsoid((cx, cy, 0.0), (4.0, 2.5, far), angle=angle), 220.0)


def _organs(cv: _Canvas, p: Phantom) -> None:
    far = 1e9
    _bowels(cv, p)
    cv.fill(p.liver, p.liver_hu)
    cv.fill(p.spleen, p.liver_hu - 5.0)
    sy = p.spine_y
    cv.fill(Ellipsoid((12.0, sy - 30.0, 0.0), (11.0, 11.0, far)), p.aorta_hu)
    cv.fill(Ellipsoid((-22.0, sy - 27.0, 0.0), (13.0, 9.0, far)), p.aorta_hu * 0.55)  # IVC


def _bowels(cv: _Canvas, p: Phantom) -> None:
    """Bowel loops: a soft-tissue wall, gas on top of fluid."""
    far = 1e9
    full = cv
    for bw in p.bowels:
        cv = full
        x = bw.x + bw.sway * np.sin(2 * np.pi * cv.z / bw.wavelength + bw.phase)
        wall = Ellipsoid((x, bw.y, 0.0), (bw.radius, bw.radius, far))
        cv.fill(wall, 40.0)
        cv = cv.around(wall)
        lumen = Ellipsoid((x, bw.y, 0.0), (bw.radius - 2.0, bw.radius - 2.0, far))
        hit = cv.ellipse(lumen)
        if hit is None:
            continue
        inside = cv.coverage((hit[0] - 1.0) * lumen.radii[0])
        level = bw.y + lumen.radii[0] * (2.0 * bw.gas_fraction - 1.0)  # gas rises anteriorly (-y)
        gas = cv.coverage(cv.y - level)
        cv.paint(inside, gas * AIR_HU + (1.0 - gas) * 15.0)


def _kidney(cv: _Canvas, k: Kidney) -> None:
    e = k.shape
    cv = cv.around(e, 8.0)
    # Perirenal fat keeps the kidney apart from the liver and the bowel.
    cv.fill(e, -95.0, grow=6.0)
    hit = cv.ellipse(e)
    if hit is None:
        return
    rho, lu, lv = hit
    w = (cv.z - e.center[2]) / e.radii[2]
    scale = np.sqrt(max(1.0 - w * w, 1e-6))
    rmin = min(e.radii[0], e.radii[1]) * scale
    medial = lu * np.float32(k.medial_sign) / np.float32(e.radii[0] * scale + 1e-6)
    # Bean shape: the hilum notch opens medially.
    notch = (medial > 0.45) & (np.abs(lv) < 0.45 * e.radii[1] * scale)
    kidney = cv.coverage((rho - 1.0) * rmin) * ~notch
    cv.paint(kidney, k.cortex_hu)
    # Medullary pyramids between columns of cortex; the sinus (fat + collecting system) medially.
    theta = np.arctan2(lv, lu)
    pyramid = (np.cos(k.pyramids * theta + k.pyramid_phase) > -0.3) & (rho < 0.78) & (rho > 0.35)
    cv.paint(kidney * pyramid, k.medulla_hu)
    sinus = (rho < 0.7) & (medial > 0.05)
    cv.paint(kidney * sinus, -70.0)
    pelvis_rho = np.sqrt(((medial - 0.45) / 0.35) ** 2 + (lv / (0.3 * e.radii[1] * scale)) ** 2)
    urine = cv.coverage((pelvis_rho - 1.0) * 0.3 * rmin) * (abs(w) < 0.45)
    cv.paint(urine, 8.0)


def _lesion_cover(lesion: Lesion, x: np.ndarray, y: np.ndarray, z: float, edge: float) -> np.ndarray:
    """Fraction of each point inside the lesion's (irregular) cross-section, with an `edge`-wide ramp."""
    e = lesion.shape
    w = (z - e.center[2]) / e.radii[2]
    scale = np.sqrt(1.0 - w * w)
    dx, dy = x - np.float32(e.center[0]), y - np.float32(e.center[1])
    c, s = np.float32(np.cos(e.angle)), np.float32(np.sin(e.angle))
    lu, lv = c * dx + s * dy, -s * dx + c * dy
    rho = np.sqrt((lu / (e.radii[0] * scale)) ** 2 + (lv / (e.radii[1] * scale)) ** 2)
    if lesion.lobes:
        theta = np.arctan2(lv, lu)
        rho = rho / (1.0 + sum(a * np.cos(m * theta + ph + 2.0 * w) for m, a, ph in lesion.lobes))
    return np.clip(0.5 - (rho - 1.0) * min(e.radii[0], e.radii[1]) * scale / edge, 0.0, 1.0)


def _lesion(cv: _Canvas, lesion: Lesion) -> bool:
    """Paint the lesion; True when this slice crosses it.

    Coverage is the lesion's area fraction of each pixel (supersampled where pixels are coarse), so
    a 3 mm stone on a 32x32 image still raises its pixel by partial volume, as on a real scanner.
    """
    e = lesion.shape
    if abs(cv.z - e.center[2]) >= e.radii[2]:
        return False
    cv = cv.around(e, 0.5 * max(e.radii))
    factor = int(min(16, np.ceil(cv.spacing / 0.75)))
    offsets = ((np.arange(factor, dtype=np.float32) + 0.5) / factor - 0.5) * np.float32(cv.spacing)
    cover = np.zeros_like(cv.x)
    for oy in offsets:
        for ox in offsets:
            cover += _lesion_cover(lesion, cv.x + ox, cv.y + oy, cv.z, cv.spacing / factor)
    cover /= np.float32(factor * factor)
    hu: float | np.ndarray = lesion.hu
    if lesion.texture is not None:
        hu = lesion.hu + lesion.texture.at(cv.x, cv.y, cv.z) * np.float32(lesion.texture_hu)
    cv.paint(cover, hu)
    if lesion.core is not None:
        core = cv.ellipse(lesion.core)
        if core is not None:
            core_cover = cv.coverage((core[0] - 1.0) * lesion.core.radii[0]) * cover
            cv.paint(core_cover, lesion.core_hu)
    return bool(np.any(cover > 0.0))


def _table(cv: _Canvas, p: Phantom) -> None:
    """The scanner couch: a thin dense curved shell under the patient, foam in between."""
    top = p.body.center[1] + p.body.radii[1] + 6.0
    curve = top + 0.0009 * cv.x**2
    foam = (cv.y > curve - 6.0) & (cv.y < curve) & (np.abs(cv.x) < 170.0) & (cv.hu < -900.0)
    cv.paint(foam.astype(np.float32), -850.0)
    shell = cv.coverage(np.abs(cv.y - curve - 2.0) - 2.0) * (np.abs(cv.x) < 175.0)
    cv.paint(shell, 250.0)


def render_study(phantom: Phantom, size: int) -> tuple[np.ndarray, list[str]]:
    """All slices (n, size, size) in HU and each slice's true class (the lesion class where it shows)."""
    slices, classes = [], []
    for i, z in enumerate(phantom.z_positions):
        hu, visible = render_slice(phantom, z, size, noise_seed=phantom.seed * 100_003 + i)
        slices.append(hu)
        classes.append(phantom.study_class if visible else "Normal")
    return np.stack(slices), classes
