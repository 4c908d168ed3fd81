"""The recent past of a directory, kept in memory by ``statmap serve``: ``/api/history``.

A ``History`` holds the last ``CAPACITY`` samples (16 minutes at one per
second) of every numeric series of the aggregate, so a dashboard that
opens shows the last quarter of an hour at once, and the events of its
processes (started, closed, died, archived) to mark on the time axis.

What is kept is what the collection read, never a derived figure: the
cumulative value of counters, the value of gauges, the count, sum and
cumulative bucket counts of histograms, the count and sum of summaries.
Rates over any smoothing interval, interval percentiles and heatmaps are
differences of these, so a client picks its interval without the server
keeping one series per interval.

Per-process values of a summed series (which worker is hot?) cost a read
per process, so they are kept only for the series someone asked to break
down (``breakdown=ID``), for ``CAPACITY`` seconds after the last request,
at most ``MAX_WATCHED`` of them: their history starts when the first
request names them.

Memory is bounded: every series costs a ring of ``CAPACITY`` floats per
column (1 for counters and gauges, 2 for summaries, 2 + buckets for
histograms); series beyond ``MAX_CELLS`` columns in all get no history
(``/api/history`` lists them as ``missing``), per-process rings stop at
``MAX_PROCESS_CELLS``. A series not seen for ``CAPACITY`` samples is
dropped. With the defaults that is at most 32 MiB + 8 MiB of floats.

The sampler is one daemon thread per app (``attach``), beside the HTTP
server's fixed pool: it takes the app's shared collection once per
``STEP`` (a request arriving at the same moment shares it), so history
costs no more collections than a dashboard polling every second.
"""

from __future__ import annotations

import bisect
import math
import os
import sys
import threading
import time
import weakref
from array import array
from collections import deque
from typing import Any, Protocol

from .breakdown import ProcessValues, SeriesKey
from .httputil import Response, _json, _text
from .reader import ALIVE, CLOSED, DEAD, ExpHistogramValue, HistogramValue, SummaryValue
from .results import ARCHIVE, Collection, MetricFamily

STEP = 1.0  # seconds between samples
CAPACITY = 960  # samples kept: 16 minutes at STEP
MAX_CELLS = 4_000_000 // CAPACITY  # columns of every series together (4M floats: 32 MiB)
MAX_PROCESS_CELLS = 1_000_000 // CAPACITY  # per-process rings (8 MiB)
MAX_WATCHED = 64  # series broken down by process at once
MAX_IDS = 400  # series per request
MAX_EVENTS = 1000

_NAN = float("nan")


def series_id(publisher: str, name: str, labels: dict[str, str]) -> str:
    """The id of a series in ``/api/series`` and ``/api/history``: ``publisher:name{k="v",...}``."""
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{publisher}:{name}" + ("{" + inner + "}" if inner else "")


def _ring() -> array[float]:
    return array("d", [_NAN]) * CAPACITY


def _columns(value: Any) -> list[float] | None:
    """What is kept of one value: its columns, or None for values without history (text, info, enum)."""
    if isinstance(value, (HistogramValue, ExpHistogramValue)):  # exponential: its classic cumulative buckets
        return [float(value.count), float(value.sum), *(float(c) for _bound, c in value.buckets)]
    if isinstance(value, SummaryValue):
        return [float(value.count), float(value.sum)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    return None


def _shape(fam: MetricFamily, value: Any) -> tuple[Any, ...]:
    """What a track's columns mean; a series whose shape changes starts a new track."""
    if isinstance(value, HistogramValue):
        return ("histogram", tuple(b for b, _c in value.buckets))
    if isinstance(value, ExpHistogramValue):  # its non-empty buckets' bounds, which grow; see History._regrid
        return ("histogram", tuple(b for b, _c in value.buckets), value.scale, value.zero_threshold)
    if isinstance(value, SummaryValue):
        return ("summary",)
    return ("counter" if fam.type == "counter" else "gauge",)


def _regriddable(old: tuple[Any, ...], new: tuple[Any, ...]) -> bool:
    """Both exponential, the same zero threshold, the new scale the same or coarser: _regrid is exact."""
    return len(old) == len(new) == 4 and new[2] <= old[2] and new[3] == old[3]


class _Track:
    """One series' rings, written at every sample (NaN when absent)."""

    __slots__ = ("last", "meta", "rings", "shape", "summed")

    def __init__(self, fam: MetricFamily, shape: tuple[Any, ...], width: int, summed: bool) -> None:
        self.shape = shape
        self.rings = [_ring() for _ in range(width)]
        self.last = 0  # the sample number it was last seen at
        self.summed = summed  # a total over processes: can be broken down
        self.meta: dict[str, Any] = {"kind": shape[0], "type": fam.type, "view": fam.kind.view, "unit": fam.unit}
        if shape[0] == "histogram":
            self.meta["bounds"] = [b if math.isfinite(b) else "+Inf" for b in shape[1]]
        if len(shape) > 2:  # exponential: the dashboard estimates percentiles as the reader does
            self.meta.update(scale=shape[2], zero_threshold=shape[3])


class _Watch:
    """A series broken down by process: where its records are, and a ring per process."""

    __slots__ = ("key", "rings", "until")

    def __init__(self, key: SeriesKey, until: float) -> None:
        self.key = key  # (publisher, name, labels)
        self.until = until
        self.rings: dict[str, array[float]] = {}


class History:
    """The last ``CAPACITY`` samples of a directory's numeric series; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = 0  # samples taken
        self._times = _ring()
        self._tracks: dict[str, _Track] = {}
        self._cells = 0
        self._missing: set[str] = set()
        self._watched: dict[str, _Watch] = {}
        self._process_cells = 0
        self._per_process = ProcessValues()
        self._files: dict[str, tuple[str, str, int]] = {}  # file name -> (status, publisher, pid)
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)

    # -- sampling ---------------------------------------------------------------

    def sample(self, collection: Collection) -> None:
        with self._lock:
            n = self._n
            i = n % CAPACITY
            self._times[i] = collection.time
            self._n = n + 1
            seen: set[str] = set()
            for fam in collection.families:
                summed = fam.aggregation == "sum"
                for s in fam.samples:
                    cols = _columns(s.value)
                    if cols is None:
                        continue
                    sid = series_id(fam.publisher, fam.name, s.labels)
                    track = self._tracks.get(sid)
                    shape = _shape(fam, s.value)
                    if track is not None and track.shape != shape and _regriddable(track.shape, shape):
                        track = self._regrid(sid, track, fam, shape)
                        if track is None:
                            continue
                    if track is None or track.shape != shape or len(track.rings) != len(cols):
                        track = self._new_track(sid, fam, shape, len(cols), summed and s.pid is None)
                        if track is None:
                            continue
                    for ring, v in zip(track.rings, cols, strict=True):
                        ring[i] = v
                    track.last = n
                    seen.add(sid)
            for sid, track in list(self._tracks.items()):
                if sid in seen:
                    continue
                if n - track.last >= CAPACITY:  # nothing of it left in the window
                    del self._tracks[sid]
                    self._cells -= len(track.rings)
                    continue
                for ring in track.rings:
                    ring[i] = _NAN
            self._events(collection)
            self._sample_processes(collection, i)

    def _new_track(
        self, sid: str, fam: MetricFamily, shape: tuple[Any, ...], width: int, summed: bool
    ) -> _Track | None:
        old = self._tracks.pop(sid, None)
        if old is not None:
            self._cells -= len(old.rings)
        if self._cells + width > MAX_CELLS:
            self._missing.add(sid)
            return None
        self._missing.discard(sid)
        track = self._tracks[sid] = _Track(fam, shape, width, summed)
        self._cells += width
        return track

    def _regrid(self, sid: str, old: _Track, fam: MetricFamily, shape: tuple[Any, ...]) -> _Track | None:
        """An exponential histogram's track on its new bounds (a new bucket, or a coarser scale), history kept.

        Every new bound is a bound of the old grid (same or finer scale), and no
        old non-empty bucket straddles it, so the old cumulative count at a new
        bound is the one at the largest old bound not above it: exact.
        """
        new = self._new_track(sid, fam, shape, 2 + len(shape[1]), old.summed)
        if new is None:
            return None
        new.last = old.last
        new.rings[0], new.rings[1] = old.rings[0], old.rings[1]
        old_bounds = old.shape[1]
        for k, bound in enumerate(shape[1]):
            j = bisect.bisect_right(old_bounds, bound) - 1
            if j >= 0:
                new.rings[2 + k] = array("d", old.rings[2 + j])
            else:  # nothing was at or below it: 0 wherever the series was seen
                new.rings[2 + k] = array("d", (0.0 if c == c else _NAN for c in old.rings[0]))
        return new

    def _events(self, collection: Collection) -> None:
        now: dict[str, tuple[str, str, int]] = {}
        for f in collection.files:
            if f.identity is None or f.status == ARCHIVE:
                continue
            name = os.path.basename(f.path)
            status = f.status
            now[name] = (status, f.name, f.pid)
            before = self._files.get(name)
            if before is None:
                if self._files or self._n > 1:  # not the files found at start
                    self._event(collection.time, name, f.name, f.pid, "started")
            elif before[0] != status and status in (DEAD, CLOSED):
                self._event(collection.time, name, f.name, f.pid, "died" if status == DEAD else "closed")
        for name, (status, publisher, pid) in self._files.items():
            if name not in now:
                self._event(collection.time, name, publisher, pid, "archived" if status != ALIVE else "gone")
        self._files = now

    def _event(self, at: float, file: str, publisher: str, pid: int, what: str) -> None:
        self.events.append({"time": at, "file": file, "publisher": publisher, "pid": pid, "event": what})

    def _sample_processes(self, collection: Collection, i: int) -> None:
        """One value per process of each watched series (its count for histograms and summaries)."""
        clock = time.monotonic()
        for sid, watch in list(self._watched.items()):
            if clock > watch.until:
                del self._watched[sid]
                self._process_cells -= len(watch.rings)
        if not self._watched:
            self._per_process.close()
            return
        got = self._per_process.read(collection, [w.key for w in self._watched.values()])
        for watch in self._watched.values():
            values: dict[str, float] = {}
            for pkey, _f, value in got.get(watch.key, []):
                cols = _columns(value)
                if cols is not None:
                    values[pkey] = cols[0]
            for pkey, v in values.items():
                ring = watch.rings.get(pkey)
                if ring is None:
                    if self._process_cells >= MAX_PROCESS_CELLS:
                        continue
                    ring = watch.rings[pkey] = _ring()
                    self._process_cells += 1
                ring[i] = v
            for pkey, ring in watch.rings.items():
                if pkey not in values:
                    ring[i] = _NAN

    def watch(self, sid: str, collection: Collection | None) -> bool:
        """Break ``sid`` down by process from the next sample on (False: not a summed series, or too many)."""
        with self._lock:
            until = time.monotonic() + CAPACITY * STEP
            watch = self._watched.get(sid)
            if watch is not None:
                watch.until = until
                return True
            track = self._tracks.get(sid)
            if track is None or not track.summed or collection is None or len(self._watched) >= MAX_WATCHED:
                return False
            for fam in collection.families:
                for s in fam.samples:
                    if series_id(fam.publisher, fam.name, s.labels) == sid:
                        key = (fam.publisher, fam.name, tuple(s.labels.items()))
                        self._watched[sid] = _Watch(key, until)
                        return True
            return False

    # -- reading ----------------------------------------------------------------

    def read(self, ids: list[str], since: float | None, breakdown: set[str]) -> dict[str, Any]:
        """The samples after ``since`` (all kept without it) of these series, as JSON-ready lists."""
        with self._lock:
            n = self._n
            order = [k % CAPACITY for k in range(max(0, n - CAPACITY), n)]
            if since is not None:
                order = [j for j in order if self._times[j] > since]
            times = [self._times[j] for j in order]
            series: dict[str, Any] = {}
            missing = []
            for sid in ids:
                track = self._tracks.get(sid)
                if track is None:
                    missing.append(sid)
                    continue
                cols = [[None if (v := ring[j]) != v else v for j in order] for ring in track.rings]
                entry = dict(track.meta)
                entry["summed"] = track.summed
                if track.shape[0] == "histogram":
                    entry.update(count=cols[0], sum=cols[1], buckets=cols[2:])
                elif track.shape[0] == "summary":
                    entry.update(count=cols[0], sum=cols[1])
                else:
                    entry["values"] = cols[0]
                series[sid] = entry
            processes: dict[str, dict[str, list[float | None]]] = {}
            for sid in breakdown:
                watch = self._watched.get(sid)
                if watch is not None:
                    processes[sid] = {
                        pkey: [None if (v := ring[j]) != v else v for j in order] for pkey, ring in watch.rings.items()
                    }
            first = times[0] if times else math.inf
            events = [e for e in self.events if e["time"] >= first and (since is None or e["time"] > since)]
            return {
                "step": STEP,
                "capacity": CAPACITY,
                "times": times,
                "series": series,
                "processes": processes,
                "events": events,
                "missing": missing,
            }


# -- one history per app, its sampler, and the route ---------------------------------


class _App(Protocol):
    def snapshot(self) -> Any: ...


_histories: weakref.WeakKeyDictionary[Any, History] = weakref.WeakKeyDictionary()
_attach_lock = threading.Lock()


def attach(app: _App) -> History:
    """The app's history, and its sampler thread started (once): ``make_server`` calls it at start."""
    with _attach_lock:
        history = _histories.get(app)
        if history is None:
            history = _histories[app] = History()
            thread = threading.Thread(target=_sample_loop, args=(weakref.ref(app), history), daemon=True)
            thread.name = "statmap-history"
            thread.start()
        return history


def _sample_loop(app_ref: weakref.ref[Any], history: History) -> None:
    """One sample per STEP until the app is closed or gone; a failed collection is a gap, not the end."""
    last = None
    next_at = time.monotonic()
    complained = False
    while True:
        app = app_ref()
        if app is None:
            return
        try:
            snap = app.snapshot()
        except RuntimeError:  # the app is closed
            return
        except Exception as exc:  # noqa: BLE001 - a failed collection is a gap in the history, never its end
            if not complained:
                print(f"statmap serve: history: {type(exc).__name__}: {exc}", file=sys.stderr)
                complained = True
            snap = None
        del app  # no strong reference while sleeping: the app can go away
        if snap is not None and snap.at != last:
            last = snap.at
            try:
                history.sample(snap.collection)
                complained = False
            except Exception as exc:  # noqa: BLE001 - as above
                print(f"statmap serve: history: {type(exc).__name__}: {exc}", file=sys.stderr)
        next_at += STEP
        delay = next_at - time.monotonic()
        if delay < 0:  # late (a slow collection): sample now and again a STEP later
            next_at = time.monotonic()
            delay = 0
        time.sleep(delay)


def api_history(app: _App, params: dict[str, list[str]]) -> Response:
    """``/api/history?id=ID...&since=T&breakdown=ID...``: see docs/serve.md."""
    ids = list(dict.fromkeys(params.get("id", [])))
    breakdown = list(dict.fromkeys(params.get("breakdown", [])))
    if len(ids) > MAX_IDS or len(breakdown) > MAX_WATCHED:
        return _text(400, f"at most {MAX_IDS} ids and {MAX_WATCHED} breakdowns per request")
    since: float | None = None
    raw = (params.get("since") or [""])[-1]
    if raw:
        try:
            since = float(raw)
        except ValueError:
            return _text(400, "since: a time in seconds")
        if not math.isfinite(since):
            return _text(400, "since: a time in seconds")
    history = attach(app)
    collection = None
    if breakdown:
        collection = app.snapshot().collection
    watched = {sid for sid in breakdown if history.watch(sid, collection)}
    doc = history.read(ids + [b for b in breakdown if b not in ids], since, watched)
    doc["breakdown"] = sorted(watched)
    return _json(doc)


__all__ = ["CAPACITY", "MAX_CELLS", "STEP", "History", "api_history", "attach", "series_id"]
