"""The two baselines every decoder figure is printed beside.

- Nearest neighbour: the training report whose codes are most similar to the study's
  (``neighbours.ReportNeighbours``: Jaccard over the full codes, then over the terms;
  among tied reports, the most typical wording). The issue's baseline; a second, stronger
  one also weighs the indications' wording (``indication_weight``), as the retrieval
  decoder trained with ``--retrieved-indication`` ranks its neighbours.
- Fixed normal report: the most frequent report text among the training reports coded
  ``normal``, whatever the study.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from assistant.report.decoder.data import Finding, ReportRecord
from assistant.report.decoder.neighbours import ReportNeighbours


class NearestNeighbour:
    def __init__(self, train: Sequence[ReportRecord], indication_weight: float = 0.0,
                 ) -> None:
        self.neighbours = ReportNeighbours(train, indication_weight)

    def __call__(self, findings: Sequence[Finding], indication: str | None = None) -> str:
        return self.neighbours.nearest(findings, indication=indication)[0]


def fixed_normal_report(train: Sequence[ReportRecord]) -> str:
    counts = Counter(r.target for r in train if r.is_normal)
    if not counts:
        raise ValueError("no normal report in the training set")
    return counts.most_common(1)[0][0]
