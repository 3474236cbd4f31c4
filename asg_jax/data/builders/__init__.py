"""tfds builders of stored chest X-ray examples (docs/interfaces.md §1, docs/data.md).

Importing this package registers `mimic_cxr`, `image_text_csv` and the downstream builders
`cxr_chexpert`, `cxr_nih14`, `cxr_rsna`, `cxr_siim`, `cxr_covidx` with tfds:

    import asg_jax.data.builders  # noqa: F401
    tfds.builder("mimic_cxr/demo", data_dir=...)

`build.py` builds one of them from its manual download once, and again when its inputs
change (a fingerprint of the label files; `build.prepare`, what `asg_jax.data.prepare`
calls).
"""
from asg_jax.data.builders.chest_builder import (SKIP_REASONS, SUMMARY_FILE, ChestConfig, Skip,
                                          load_atlas, read_image, read_summary)
from asg_jax.data.builders.image_text_csv import ImageTextCsv
# Downstream datasets (docs/data.md "Downstream datasets"): cxr_chexpert, cxr_nih14, cxr_rsna,
# cxr_siim, cxr_covidx, and the label fractions.
from asg_jax.data.builders.cxr_chexpert import CxrChexpert
from asg_jax.data.builders.cxr_covidx import CxrCovidx
from asg_jax.data.builders.cxr_nih14 import CxrNih14
from asg_jax.data.builders.cxr_rsna import CxrRsna
from asg_jax.data.builders.cxr_siim import CxrSiim
from asg_jax.data.builders.downstream import balanced_ids, fraction_ids
# Your own labelled images (a CSV or class folders): labelled_images.prepare(source, data_dir)
from asg_jax.data.builders.labelled_images import LabelledImages
from asg_jax.data.builders.mimic_cxr import MimicCxr

__all__ = ["ChestConfig", "ImageTextCsv", "MimicCxr", "SKIP_REASONS", "SUMMARY_FILE", "Skip",
           "load_atlas", "read_image", "read_summary",
           "CxrChexpert", "CxrCovidx", "CxrNih14", "CxrRsna", "CxrSiim", "LabelledImages",
           "balanced_ids", "fraction_ids"]
