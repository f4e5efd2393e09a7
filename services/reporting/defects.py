"""The defects' names, so that reports and charts say what a defect code means.

Reporting knows defect codes from the events; their names are quality's catalogue
(`QMS_QUALITY_DEFECT_CATALOGUE`), which reporting cannot ask for at run time (no service
calls another's API). So reporting starts from the same default catalogue and takes the
plant's own names from its setting `QMS_REPORTING_DEFECT_LABELS` (code -> [zh, en]): set it
to what quality is set to.
"""

from collections.abc import Mapping

from shared.defects import DEFAULT_DEFECT_LABELS
from shared.vocabulary import Language


def defect_names(configured: Mapping[str, tuple[str, str]], lang: Language
                 ) -> dict[str, str]:
    """Each known code -> its name in `lang` (the configured names over the defaults)."""
    i = 0 if lang is Language.ZH else 1
    return {code: pair[i] for code, pair in (DEFAULT_DEFECT_LABELS | dict(configured)).items()}
