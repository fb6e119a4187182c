"""prometheus-client's multiprocess files, each entry parsed once.

A process file (``prometheus_client.mmap_dict.MmapedDict``) is an 8-byte header holding the used
size, then entries that are only ever appended, never moved: a 4-byte key length, the utf-8 JSON
key padded to 8 bytes, a double value and a double timestamp. So which series lies where is
parsed once, later reads parse only the entries appended since, and a scrape just reads the
file and takes the doubles it needs.
"""

from __future__ import annotations

import json
import os
import struct
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

Labels = tuple[tuple[str, str], ...]
_INT = struct.Struct("i")  # the key length and the header's used size, as mmap_dict writes them
_HEADER_BYTES = 8
_DOUBLE_BYTES = 8


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """One parsed key of a process file."""

    family: str
    sample: str
    labels: Labels  # sorted; without ``le`` for a histogram bucket
    pipeline: str | None
    bound: float | None  # a histogram bucket's ``le``
    help_text: str

    @classmethod
    def parse(cls, raw: str) -> SeriesKey:
        family, sample, labels, help_text = json.loads(raw)
        bound = labels.pop("le", None)
        return cls(family, sample, tuple(sorted(labels.items())), labels.get("pipeline"),
                   None if bound is None else float(bound), help_text)


class MetricFile:
    """One process file and its entries parsed so far, each with the index of its value among
    the file's doubles (the timestamp is the next one).

    The file is held open while it is cached: a file removed and recreated at the same path
    then gets another inode (ext4 gives a freed inode to the next new file at once), so the
    inode tells whether the parsed entries are still this file's.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.kind, self.mode, self.pid = _name_parts(os.path.basename(path))
        fd = os.open(path, os.O_RDONLY)
        self._fd = fd
        self.close = weakref.finalize(self, os.close, fd)  # also when dropped without close()
        self.inode = os.fstat(fd).st_ino
        self.entries: list[tuple[SeriesKey, int]] = []
        self.pipelines: set[str] = set()  # the pipeline labels of the entries
        self._parsed_bytes = _HEADER_BYTES

    def read(self) -> memoryview[float] | None:
        """The file's doubles, with the entries appended since the last read parsed; None if
        the file holds less than was parsed (rewritten: read it as a new file) or, new, not
        even its header yet."""
        data = os.pread(self._fd, self._used_bytes(), 0)
        if len(data) < self._parsed_bytes:
            return None
        self._parse(data)
        return memoryview(data)[:self._parsed_bytes].cast("d")

    def _used_bytes(self) -> int:
        head = os.pread(self._fd, _HEADER_BYTES, 0)
        used = _INT.unpack_from(head)[0] if len(head) == _HEADER_BYTES else 0
        return max(used, _HEADER_BYTES)

    def _parse(self, data: bytes) -> None:
        """The complete entries of ``data`` after those already parsed."""
        start = self._parsed_bytes
        while start + _INT.size <= len(data):
            (key_bytes,) = _INT.unpack_from(data, start)
            value_at = start + _INT.size + key_bytes + (8 - (key_bytes + _INT.size) % 8)
            if value_at + 2 * _DOUBLE_BYTES > len(data):
                break
            raw = data[start + _INT.size:start + _INT.size + key_bytes].decode()
            key = SeriesKey.parse(raw)
            self.entries.append((key, value_at // _DOUBLE_BYTES))
            if key.pipeline is not None:
                self.pipelines.add(key.pipeline)
            start = self._parsed_bytes = value_at + 2 * _DOUBLE_BYTES


class MetricFiles:
    """The process files of the last read, by path, so the next read parses only what is new."""

    def __init__(self) -> None:
        self._files: dict[str, MetricFile] = {}

    def read(self, paths: Iterable[str]) -> list[tuple[MetricFile, memoryview[float]]]:
        """Each of ``paths`` that still exists, with its doubles; files no longer listed, or
        replaced, are closed and forgotten."""
        found: list[tuple[MetricFile, memoryview[float]]] = []
        for path in paths:
            try:
                read = self._read(path)
            except FileNotFoundError:  # a live gauge file removed by mark_process_dead
                continue
            if read is not None:
                found.append(read)
        kept = {file.path: file for file, _ in found}
        for path, file in self._files.items():
            if kept.get(path) is not file:
                file.close()
        self._files = kept
        return found

    def _read(self, path: str) -> tuple[MetricFile, memoryview[float]] | None:
        file = self._files.get(path)
        if file is not None and file.inode == os.stat(path).st_ino:
            doubles = file.read()
            if doubles is not None:
                return file, doubles
        file = MetricFile(path)
        doubles = file.read()
        return None if doubles is None else (file, doubles)


def _name_parts(name: str) -> tuple[str, str, str]:
    """``gauge_livesum_worker-0.db`` -> kind, multiprocess mode and process (the last two for
    gauges only)."""
    kind, _, rest = name.partition("_")
    if kind != "gauge":
        return kind, "", ""
    mode, _, pid = rest.rpartition("_")
    return kind, mode, pid.removesuffix(".db")
