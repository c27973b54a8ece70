"""What the HAM10000 diagnosis codes and the CAM method ids mean (torch-free: pages import it).
Class *order* always comes from a bundle."""
from __future__ import annotations

DISPLAY_NAMES = {
    "akiec": "Actinic keratosis / intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevus",
    "vasc": "Vascular lesion",
}
MALIGNANT = frozenset({"mel", "bcc", "akiec"})
CAM_METHOD_NAMES = {  # the CAMs computed from one forward pass (model.explain.cams), in the order offered
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "hirescam": "HiResCAM",
    "xgradcam": "XGrad-CAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
}
HAM10000_CLASSES = tuple(sorted(DISPLAY_NAMES))  # default order for a new training run only


def display_name(code: str) -> str:
    """Full name for a class code; unknown codes are shown as they are."""
    return DISPLAY_NAMES.get(code.lower(), code)


def is_malignant(code: str) -> bool:
    return code.lower() in MALIGNANT


# HAM10000's dx_type: how a diagnosis was confirmed
GT_SOURCES = {"histo": "histopathology", "follow_up": "follow-up examination", "consensus": "expert consensus",
              "confocal": "in-vivo confocal microscopy"}
