"""Report understanding: sections, MGCA/ASG cleaning, and a rule-based parser giving
<region, finding, existence> triplets, the 40 ASG tags, CheXpert-14 and NIH-14 labels and the
anatomical regions each sentence describes. Pure Python / NumPy. See docs/reports.md.

    from asg_jax.data.reports import parse_report
    p = parse_report(open("s50414267.txt").read())
    p.sentences, p.tags, p.chexpert, p.nih14, p.regions, p.triplets

`tokenization.py` turns the report text into WordPiece ids with aggregated-word slots (the
text tower's input; not imported here: it needs the `tokenizers` library).
"""
from asg_jax.data.reports.cleaning import CleanedReport, clean_report
from asg_jax.data.reports.negation import ABSENT, PRESENT, UNCERTAIN
from asg_jax.data.reports.nih14 import NIH14
from asg_jax.data.reports.parser import Mention, ParsedReport, Triplet, parse_report
from asg_jax.data.reports.sections import extract_sections, report_text
from asg_jax.data.reports.vocabulary import CHEXPERT, REGIONS, TAGS

__all__ = [
    "ABSENT", "CHEXPERT", "CleanedReport", "Mention", "NIH14", "PRESENT", "ParsedReport", "REGIONS",
    "TAGS", "Triplet", "UNCERTAIN", "clean_report", "extract_sections", "parse_report",
    "report_text",
]
