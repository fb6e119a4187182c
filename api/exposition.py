"""The data-path part of ``/metrics``: every process file merged and rendered as text, fast.

prometheus_client's multiprocess path reads every entry of every file, builds a ``Sample`` per
series and file, merges them in generic dictionaries and formats each line from scratch: with
300 pipelines (~20k series) a scrape took seconds on a busy machine. Here the files' entries
are parsed once (``api.metric_files``) and the merge and the text are planned once for them and
the pipelines that exist (``api.merge_plan``); a scrape reads the files and fills in the values.
The output is the text ``generate_latest`` writes (``tests/test_exposition.py`` compares them).
"""

from __future__ import annotations

import threading
from collections.abc import Container, Iterable, Sequence

from api.merge_plan import MergePlan
from api.metric_files import MetricFile, MetricFiles

_PlanKey = tuple[tuple[tuple[MetricFile, int], ...], frozenset[str]]


class Exposition:
    """Renders a metrics directory; keep one instance: the files it holds parsed and the plan
    for them are what makes a scrape cheap."""

    def __init__(self) -> None:
        self._files = MetricFiles()
        self._planned: tuple[_PlanKey, MergePlan] | None = None
        self._lock = threading.Lock()  # scrapes render in a thread pool and may overlap

    def render(self, files: Iterable[str], pipelines: Container[str]) -> str:
        """Every family of ``files``, leaving out series of pipelines not in ``pipelines``."""
        with self._lock:
            found = self._files.read(files)
            plan = self._plan([file for file, _ in found], pipelines)
            return plan.render([doubles for _, doubles in found])

    def _plan(self, files: Sequence[MetricFile], pipelines: Container[str]) -> MergePlan:
        """The last plan, unless a file is another or has new entries, or the files' pipelines
        that exist changed."""
        named = set().union(*(file.pipelines for file in files))
        kept = frozenset(name for name in named if name in pipelines)
        key = (tuple((file, len(file.entries)) for file in files), kept)
        if self._planned is None or self._planned[0] != key:
            known_lines = self._planned[1].lines if self._planned else {}
            self._planned = (key, MergePlan.build(files, kept, known_lines))
        return self._planned[1]
