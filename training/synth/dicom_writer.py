"""Synthetic slices as DICOM: CT Image Storage series and an optional Enhanced CT multi-frame instance.

Files are valid for `dciodvfy` and read cleanly by pydicom and DCMTK: 16-bit signed pixels with
RescaleSlope/Intercept to Hounsfield units, one series per study, consecutive slice positions and
fresh UIDs. Patient attributes are obviously fake and `PatientIdentityRemoved` says so.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from common.vocabulary import KIDNEY_WINDOW_CENTER_HU, KIDNEY_WINDOW_WIDTH_HU

RESCALE_INTERCEPT = -1024.0  # stored value = HU + 1024, as most scanners write it
RESCALE_SLOPE = 1.0
# The kidney window, as integers (written as DS "40" and "400").
WINDOW_CENTER, WINDOW_WIDTH = int(KIDNEY_WINDOW_CENTER_HU), int(KIDNEY_WINDOW_WIDTH_HU)

# Transfer syntaxes `kidneyct synth --transfer-syntax` can write, by short name.
TRANSFER_SYNTAXES: dict[str, UID] = {
    "explicit": ExplicitVRLittleEndian,
    "rle": RLELossless,
    "j2k": JPEG2000Lossless,
}


@dataclass(frozen=True, slots=True)
class StudyIdentity:
    """Who and when, all synthetic; one per study."""

    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    accession_number: str
    patient_id: str
    patient_name: str
    study_id: str
    acquired_at: dt.datetime

    @classmethod
    def new(
        cls, *, number: int, seed: int, acquired_at: dt.datetime, uid_entropy: str | None = None
    ) -> StudyIdentity:
        """`uid_entropy` makes the UIDs a function of it and `number` (the same set twice is the same
        data, so a seeded run can repeat itself); without it they are unique."""

        def uid(kind: str) -> str:
            return (
                generate_uid()
                if uid_entropy is None
                else generate_uid(entropy_srcs=[uid_entropy, str(number), kind])
            )

        return cls(
            study_instance_uid=uid("study"),
            series_instance_uid=uid("series"),
            frame_of_reference_uid=uid("frame-of-reference"),
            accession_number=f"SYN{seed % 10_000:04d}{number:06d}"[:16],
            patient_id=f"SYNTH-{seed}-{number:05d}",
            patient_name=f"SYNTHETIC^PHANTOM^{number:05d}",
            study_id=str(number % 10**16),
            acquired_at=acquired_at,
        )


@dataclass(frozen=True, slots=True)
class Geometry:
    size: int
    pixel_spacing_mm: float
    slice_thickness_mm: float
    z_positions: tuple[float, ...]
    # Patient x, y at the image centre: the isocentre, or the target of a targeted reconstruction.
    center_xy: tuple[float, float] = (0.0, 0.0)

    @property
    def reconstruction_diameter_mm(self) -> float:
        return self.size * self.pixel_spacing_mm

    @property
    def origin_xy(self) -> tuple[float, float]:
        """Patient x, y of the centre of the top-left pixel."""
        half = self.reconstruction_diameter_mm / 2
        return (
            self.center_xy[0] - half + self.pixel_spacing_mm / 2,
            self.center_xy[1] - half + self.pixel_spacing_mm / 2,
        )


def hu_to_stored(hu: np.ndarray) -> np.ndarray:
    """HU to the stored signed 16-bit values (the inverse of the rescale)."""
    stored = np.rint((hu - RESCALE_INTERCEPT) / RESCALE_SLOPE)
    return np.clip(stored, -32768, 32767).astype(np.int16)


def _derived_uid(ident: StudyIdentity, *parts: str) -> str:
    """A UID of this study's: unique when the study's UID is, repeatable when it is."""
    return generate_uid(entropy_srcs=[ident.study_instance_uid, *parts])


def _common(ds: Dataset, ident: StudyIdentity, sop_class: UID, instance: str) -> None:
    """Patient, study, series, equipment and SOP common attributes shared by both IODs."""
    when = ident.acquired_at
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = _derived_uid(ident, sop_class, instance)
    ds.InstanceCreationDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = when.strftime("%H%M%S")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = when.strftime("%H%M%S")
    ds.AccessionNumber = ident.accession_number
    ds.Modality = "CT"
    ds.Manufacturer = "kidneyct synthetic phantom"
    ds.ManufacturerModelName = "kidneyct-synth"
    ds.DeviceSerialNumber = "SYNTH-0001"
    ds.SoftwareVersions = "kidneyct-synth 1"
    ds.InstitutionName = "Synthetic data (no patient)"
    ds.ReferringPhysicianName = "SYNTHETIC^REFERRER"
    ds.StudyDescription = "SYNTHETIC KIDNEY CT PHANTOM"
    ds.SeriesDescription = "Synthetic abdomen 40/400"
    ds.PatientName = ident.patient_name
    ds.PatientID = ident.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Synthetic phantom: no real patient"
    ds.BodyPartExamined = "ABDOMEN"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = ident.study_instance_uid
    ds.SeriesInstanceUID = ident.series_instance_uid
    ds.StudyID = ident.study_id
    ds.SeriesNumber = 2
    ds.FrameOfReferenceUID = ident.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.PixelRepresentation = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15


def _file_meta(ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta


def ct_slice(hu: np.ndarray, *, ident: StudyIdentity, geometry: Geometry, index: int) -> Dataset:
    """One CT Image Storage instance: slice `index` (0 is the most cranial) of the series."""
    ds = Dataset()
    _common(ds, ident, CTImageStorage, str(index))
    x0, y0 = geometry.origin_xy
    z = geometry.z_positions[index]
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = index + 1
    ds.AcquisitionNumber = 1
    ds.ImagePositionPatient = [f"{x0:.4f}", f"{y0:.4f}", f"{z:.4f}"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = f"{z:.4f}"
    ds.SliceThickness = f"{geometry.slice_thickness_mm:.4f}"
    ds.PixelSpacing = [f"{geometry.pixel_spacing_mm:.6f}"] * 2
    ds.ReconstructionDiameter = f"{geometry.reconstruction_diameter_mm:.4f}"
    ds.KVP = 120
    ds.XRayTubeCurrent = 200
    ds.ConvolutionKernel = "STANDARD"
    ds.Rows = ds.Columns = geometry.size
    ds.RescaleIntercept = RESCALE_INTERCEPT
    ds.RescaleSlope = RESCALE_SLOPE
    ds.RescaleType = "HU"
    ds.WindowCenter = WINDOW_CENTER
    ds.WindowWidth = WINDOW_WIDTH
    ds.PixelData = hu_to_stored(hu).tobytes()
    _file_meta(ds)
    return ds


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def enhanced_ct(volume_hu: np.ndarray, *, ident: StudyIdentity, geometry: Geometry) -> Dataset:
    """One Enhanced CT Image Storage instance holding every slice as a frame (frame 1 most cranial)."""
    n = volume_hu.shape[0]
    ds = Dataset()
    _common(ds, ident, EnhancedCTImageStorage, "enhanced")
    x0, y0 = geometry.origin_xy
    ds.SeriesNumber = 3
    ds.SeriesInstanceUID = _derived_uid(ident, "enhanced-series")  # its own series within the same study
    del ds.AcquisitionDate, ds.AcquisitionTime
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.AcquisitionContextSequence = Sequence()
    ds.AcquisitionDuration = 0.5 * n
    ds.InstanceNumber = 1
    ds.AcquisitionNumber = 1
    ds.AcquisitionDateTime = ident.acquired_at.strftime("%Y%m%d%H%M%S")
    ds.ContentQualification = "PRODUCT"
    ds.ImageComments = "Synthetic phantom"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.Rows = ds.Columns = geometry.size
    ds.NumberOfFrames = n
    ds.InstitutionAddress = ""
    ds.StationName = "SYNTH"
    ds.InstitutionalDepartmentName = "Synthetic"

    dimension_org = _derived_uid(ident, "dimension-organization")
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=dimension_org)])
    ds.DimensionOrganizationType = "3D"
    ds.DimensionIndexSequence = Sequence(
        [
            _item(
                DimensionOrganizationUID=dimension_org,
                DimensionIndexPointer=0x00209057,  # InStackPositionNumber
                FunctionalGroupPointer=0x00209111,  # FrameContentSequence
                DimensionDescriptionLabel="In-Stack Position",
            )
        ]
    )
    ds.SharedFunctionalGroupsSequence = Sequence(
        [
            _item(
                PixelMeasuresSequence=Sequence(
                    [
                        _item(
                            PixelSpacing=[f"{geometry.pixel_spacing_mm:.6f}"] * 2,
                            SliceThickness=f"{geometry.slice_thickness_mm:.4f}",
                        )
                    ]
                ),
                PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
                PixelValueTransformationSequence=Sequence(
                    [_item(RescaleIntercept=RESCALE_INTERCEPT, RescaleSlope=RESCALE_SLOPE, RescaleType="HU")]
                ),
                FrameVOILUTSequence=Sequence([_item(WindowCenter=WINDOW_CENTER, WindowWidth=WINDOW_WIDTH)]),
                CTImageFrameTypeSequence=Sequence(
                    [
                        _item(
                            FrameType=["ORIGINAL", "PRIMARY", "VOLUME", "NONE"],
                            PixelPresentation="MONOCHROME",
                            VolumetricProperties="VOLUME",
                            VolumeBasedCalculationTechnique="NONE",
                        )
                    ]
                ),
                CTAcquisitionTypeSequence=Sequence(
                    [_item(AcquisitionType="SPIRAL", ConstantVolumeFlag="NO", FluoroscopyFlag="NO")]
                ),
                CTAcquisitionDetailsSequence=Sequence(
                    [
                        _item(
                            DataCollectionDiameter=500.0,
                            RevolutionTime=0.5,
                            SingleCollimationWidth=0.625,
                            TotalCollimationWidth=40.0,
                            TableHeight=150.0,
                            GantryDetectorTilt=0,
                        )
                    ]
                ),
                CTTableDynamicsSequence=Sequence(
                    [_item(TableSpeed=80.0, TableFeedPerRotation=40.0, SpiralPitchFactor=1.0)]
                ),
                CTGeometrySequence=Sequence(
                    [_item(DistanceSourceToDetector=1000.0, DistanceSourceToDataCollectionCenter=550.0)]
                ),
                CTReconstructionSequence=Sequence(
                    [
                        _item(
                            ReconstructionAlgorithm="FILTER_BACK_PROJ",
                            ConvolutionKernel="STANDARD",
                            ConvolutionKernelGroup="SOFT_TISSUE",
                            ReconstructionDiameter=geometry.reconstruction_diameter_mm,
                            ReconstructionPixelSpacing=[geometry.pixel_spacing_mm] * 2,
                            ReconstructionAngle=360.0,
                            ImageFilter="NONE",
                        )
                    ]
                ),
                CTExposureSequence=Sequence(
                    [
                        _item(
                            ExposureTimeInms=500.0,
                            XRayTubeCurrentInmA=200.0,
                            ExposureInmAs=100.0,
                            ExposureModulationType="NONE",
                        )
                    ]
                ),
                CTXRayDetailsSequence=Sequence(
                    [
                        _item(
                            KVP=120,
                            FilterType="BODY",
                            FocalSpots=[1.2],
                            FilterMaterial=["ALUMINUM"],
                            CalciumScoringMassFactorPatient=1.0,
                        )
                    ]
                ),
                FrameAnatomySequence=Sequence(
                    [
                        _item(
                            FrameLaterality="B",
                            AnatomicRegionSequence=Sequence(
                                [
                                    _item(
                                        CodeValue="818981001",
                                        CodingSchemeDesignator="SCT",
                                        CodeMeaning="Abdomen",
                                    )
                                ]
                            ),
                        )
                    ]
                ),
                IrradiationEventIdentificationSequence=Sequence(
                    [_item(IrradiationEventUID=_derived_uid(ident, "irradiation-event"))]
                ),
            )
        ]
    )
    when = ident.acquired_at.strftime("%Y%m%d%H%M%S")
    ds.PerFrameFunctionalGroupsSequence = Sequence(
        [
            _item(
                FrameContentSequence=Sequence(
                    [
                        _item(
                            FrameAcquisitionNumber=1,
                            FrameReferenceDateTime=when,
                            FrameAcquisitionDateTime=when,
                            FrameAcquisitionDuration=500.0,
                            StackID="1",
                            InStackPositionNumber=i + 1,
                            DimensionIndexValues=[i + 1],
                        )
                    ]
                ),
                CTPositionSequence=Sequence(
                    [
                        _item(
                            TablePosition=geometry.z_positions[i],
                            ReconstructionTargetCenterPatient=[*geometry.center_xy, geometry.z_positions[i]],
                            DataCollectionCenterPatient=[0.0, 0.0, geometry.z_positions[i]],
                        )
                    ]
                ),
                PlanePositionSequence=Sequence(
                    [_item(ImagePositionPatient=[f"{x0:.4f}", f"{y0:.4f}", f"{geometry.z_positions[i]:.4f}"])]
                ),
            )
            for i in range(n)
        ]
    )
    ds.PixelData = hu_to_stored(volume_hu).tobytes()
    _file_meta(ds)
    return ds


def save(ds: Dataset, path: Path, transfer_syntax: UID = ExplicitVRLittleEndian) -> None:
    """Write `ds` (compressing its pixels first when asked) as a DICOM Part 10 file."""
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, encoding_plugin="pydicom" if transfer_syntax == RLELossless else "")
        if transfer_syntax == JPEG2000Lossless:
            ds.LossyImageCompression = "00"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
