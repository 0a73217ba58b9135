"""`Skips`: the one skip-statistics type (counts per reason, first examples, plain-dict behaviour)."""
from __future__ import annotations

import json
import logging

from mmrec.skips import Skips


def test_counts_examples_and_dict_behaviour(caplog):
    skips = Skips(max_examples=2, logger=logging.getLogger("t"))
    with caplog.at_level(logging.WARNING):
        for n in range(3):
            skips.add("broken", f"item {n}")
    skips.add_many("blank", 4, ["line 1", "line 2", "line 3"])
    skips.add("none", count=0)
    assert skips == {"broken": 3, "blank": 4} and skips.total == 7
    assert skips.examples == {"broken": ["item 0", "item 1"], "blank": ["line 1", "line 2"]}
    assert json.loads(json.dumps(skips)) == {"broken": 3, "blank": 4}
    assert skips.summary()["examples"]["blank"] == ["line 1", "line 2"]
    assert len([r for r in caplog.records if "broken" in r.getMessage()]) == 3
