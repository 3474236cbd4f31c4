"""tfds builders of stored chest X-ray examples (docs/interfaces.md §1, docs/data.md).

Importing this package registers `mimic_cxr` and `image_text_csv` with tfds:

    import asg_jax.data.builders  # noqa: F401
    tfds.builder("mimic_cxr/demo", data_dir=...)
"""
from asg_jax.data.builders.common import (SKIP_REASONS, SUMMARY_FILE, ChestConfig, Skip,
                                          load_atlas, read_image, read_summary)
from asg_jax.data.builders.image_text_csv import ImageTextCsv
from asg_jax.data.builders.mimic_cxr import MimicCxr

__all__ = ["ChestConfig", "ImageTextCsv", "MimicCxr", "SKIP_REASONS", "SUMMARY_FILE", "Skip",
           "load_atlas", "read_image", "read_summary"]
