"""The meter book the validation tests judge records against (one copy for test_validate.py and
test_validate_fast.py): a meter per formula, an inactive one, and one created after the records' received
time ``R_MS``."""

from __future__ import annotations

from processor.meters.book import MeterBook
from processor.meters.model import Meter

#: the received time of the records these tests judge
R_MS = 1_800_000_000_000
R_S = R_MS // 1000


def validation_book() -> MeterBook:
    b = MeterBook()
    b.add(0, Meter("mtr_sum", "Sum", "api", "sum", created=1))
    b.add(0, Meter("mtr_cnt", "Count", "cnt", "count", created=1))
    b.add(0, Meter("mtr_last", "Last", "lst", "last", created=1))
    b.add(0, Meter("mtr_off", "Off", "off", "sum", created=1).deactivated(5))
    b.add(R_MS + 1, Meter("mtr_late", "Late", "late", "sum", created=2))
    return b
