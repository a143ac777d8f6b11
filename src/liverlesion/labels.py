"""Label conventions: the 5-label target map, LiTS's 3 labels, the Y-Net outputs, display colours."""

from __future__ import annotations

#: The joint network's output, the paper's convention.
TARGET_LABELS: tuple[str, ...] = ("background", "liver", "cyst", "hemangioma", "metastasis")
BACKGROUND, LIVER, CYST, HEMANGIOMA, METASTASIS = range(5)
#: Labels >= this value in a target map are lesions; label - FIRST_LESION_LABEL is the class index.
FIRST_LESION_LABEL = CYST

#: Lesion types, in class-index order (cyst=0, hemangioma=1, metastasis=2).
LESION_CLASSES: tuple[str, ...] = TARGET_LABELS[FIRST_LESION_LABEL:]

#: LiTS 2017 segmentation labels; also the Y-Net segmentation head's labels.
LITS_LABELS: tuple[str, ...] = ("background", "liver", "tumor")
LITS_TUMOR = 2
YNET_SEG_LABELS: tuple[str, ...] = ("background", "liver", "lesion")

#: Display colours (RGB, 0-255) of the target labels, shared by overlays and the DICOM SEG segments.
LABEL_COLOURS: dict[str, tuple[int, int, int]] = {
    "liver": (60, 180, 75),
    "cyst": (66, 135, 245),
    "hemangioma": (250, 190, 30),
    "metastasis": (230, 40, 40),
}
