"""Reading knobs: what every process of a directory declares and applied, and what the operator asked.

The reader-side API for tools (``statmap knobs``, ``statmap set``, the HTTP
API, and any dashboard): ``read_knobs(directory, name)`` gives one
``ProcessKnobs`` per process file, ``read_desired(directory, name)`` the
control file, and ``knobs_json`` both as one JSON document. Files are
untrusted: a knob record that breaks the rules of docs/format.md section 13
is reported in its ``problem`` and never stops the others.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import _knob_layout as KL
from . import _layout as L
from . import control_file
from .discover import statmap_files
from .errors import FormatError
from .knob_values import Control, KnobDecl, KnobState, decl_from_extras, decode_state, parse_value, typed
from .liveness import ALIVE, NOT_READY
from .reader import Reader


@dataclass(frozen=True)
class KnobView:
    """One knob of one process: its declaration and published state (None: not published yet, or a problem)."""

    name: str
    help: str
    decl: KnobDecl | None
    state: KnobState | None
    problem: str | None = None

    def typed_value(self) -> Any:
        if self.decl is None or self.state is None:
            return None
        try:
            return typed(self.decl, parse_value(self.decl, self.state.value))
        except ValueError:
            return None  # a value outside the declaration is never shown as one


@dataclass(frozen=True)
class ProcessKnobs:
    path: str
    publisher: str
    pid: int
    start_time: int
    status: str  # alive, closed, dead
    knobs: dict[str, KnobView] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """How the control file names this process (``--pid``)."""
        return f"{self.pid}:{self.start_time}"


def read_process(path: str) -> ProcessKnobs | None:
    """The knobs of one file; None when it is not ready or has no knob. Raises FormatError for a corrupt file."""
    with Reader(path) as reader:
        return _knobs_of(reader, path)


def read_each(paths: Iterable[str]) -> Iterator[tuple[str, ProcessKnobs | None, FormatError | None]]:
    """(path, its knobs or None, its FormatError or None) for each of ``paths``; files removed meanwhile are left out.

    Each reader stays open until the next file is read, as in ``render.read_snapshots``: the files of one
    program share their parsed metadata (record_table), so the next file is not parsed again.
    """
    previous: Reader | None = None
    knob_at: dict[object, list[int]] = {}  # a template (record_table) -> where its knob records are
    try:
        for path in paths:
            try:
                reader = Reader(path)
            except FormatError as exc:
                yield path, None, exc
                continue
            except OSError:
                continue  # removed meanwhile
            try:
                found = _knobs_of(reader, path, knob_at)
            except FormatError as exc:
                reader.close()
                yield path, None, exc
                continue
            except OSError:
                reader.close()
                continue
            if previous is not None:
                previous.close()
            previous = reader
            yield path, found, None
    finally:
        if previous is not None:
            previous.close()


def _knobs_of(reader: Reader, path: str, knob_at: dict[object, list[int]] | None = None) -> ProcessKnobs | None:
    """``knob_at``: the caller's memo of where each template's knob records are (files alike share it)."""
    status, header, _size = reader.poll()
    if header is None or status == NOT_READY:
        return None
    records = reader.records
    template, start = reader.template, 0
    at: list[int] = []
    if knob_at is not None and template is not None and len(template.records) <= len(records):
        start = len(template.records)  # the template's records are the first ones of this file
        known = knob_at.get(template)
        if known is None:
            known = knob_at[template] = [i for i, r in enumerate(template.records) if r.spec.mtype == L.KNOB]
        at += known
    at += [i for i in range(start, len(records)) if records[i].spec.mtype == L.KNOB]
    found: dict[str, KnobView] = {}
    for i in at:
        record = records[i]
        found[record.spec.name] = _view(reader, record)
    if not found:
        return None
    ident = header.identity
    return ProcessKnobs(path, ident.publisher, ident.pid, ident.start_time, status, found)


def _view(reader: Reader, record: L.Record) -> KnobView:
    spec = record.spec
    try:
        wrong_size = record.value_size != L.value_size(L.KNOB, 0, spec.capacity)
        if spec.capacity > KL.MAX_KNOB_STATE or wrong_size or spec.labels:
            raise ValueError(f"bad state area ({record.value_size} bytes, capacity {spec.capacity})")
        decl = decl_from_extras(spec.extras)
    except ValueError as exc:
        return KnobView(spec.name, spec.help, None, None, f"bad knob record: {exc}")
    data = reader.read_latch(record, L.text_copy_size(spec.capacity))
    if data is None:
        return KnobView(spec.name, spec.help, decl, None, "state kept changing while read")
    text = L.decode_text(data, spec.capacity)
    try:
        if text is None:
            raise ValueError("state length exceeds its capacity")
        state = decode_state(text)
    except ValueError as exc:
        return KnobView(spec.name, spec.help, decl, None, str(exc))
    return KnobView(spec.name, spec.help, decl, state)


def read_knobs(directory: str, name: str | None = None) -> tuple[list[ProcessKnobs], list[FormatError]]:
    """Every process file of ``directory`` (of publisher ``name``) that declares knobs, and the corrupt files."""
    out, errors = [], []
    paths = statmap_files(directory)
    if name is not None:
        paths = [p for p in paths if os.path.basename(p).startswith(name + ".")]
    for _path, found, error in read_each(paths):
        if error is not None:
            errors.append(error)
        elif found is not None and (name is None or found.publisher == name):
            out.append(found)
    return out, errors


def read_desired(directory: str, name: str) -> tuple[Control | None, str | None]:
    """The operator's desired state for ``name`` (None if none), and a problem with the file if any."""
    return control_file.load(control_file.control_path(directory, name))


def _state_json(view: KnobView, seq: int) -> dict[str, Any]:
    out: dict[str, Any] = {"name": view.name, "help": view.help}
    if view.decl is not None:
        out.update(view.decl.to_json())
    st = view.state
    if st is None:
        out["problem"] = view.problem or "not published yet"
        return out
    out.update(
        value=view.typed_value(),
        origin=st.origin,
        set_by={"uid": st.uid, "pid": st.pid},
        when=st.when_ns / 1e9,
        seen_seq=st.seen_seq,
        pending=seq > st.seen_seq,
    )
    if st.refused_seq:
        out["refused"] = {
            "value": st.refused_value, "reason": st.refused_reason, "when": st.refused_when_ns / 1e9,
        }  # fmt: skip
    out["history"] = [
        {"when": c.when_ns / 1e9, "origin": c.origin, "uid": c.uid, "pid": c.pid, "old": c.old, "new": c.new}
        for c in st.history
    ]
    return out


def knobs_json(directory: str, name: str | None = None, *, live_only: bool = True) -> dict[str, Any]:
    """``{"publishers": {NAME: {"desired": ..., "processes": [...]}}, "errors": [...]}``: the API's document."""
    processes, errors = read_knobs(directory, name)
    doc: dict[str, Any] = {"publishers": {}}
    for proc in processes:
        if live_only and proc.status != ALIVE:
            continue
        pub = doc["publishers"].get(proc.publisher)
        if pub is None:
            control, problem = read_desired(directory, proc.publisher)
            desired = [
                {"knob": e.knob, "target": e.target, "action": e.action, "value": e.value, "uid": e.uid,
                 "pid": e.pid, "when": e.when_ns / 1e9}
                for e in (control.entries if control else ())
            ]  # fmt: skip
            pub = doc["publishers"][proc.publisher] = {
                "seq": control.seq if control else 0, "desired": desired, "processes": [],
            }  # fmt: skip
            if problem:
                pub["problem"] = problem
        pub["processes"].append({
            "pid": proc.pid, "path": proc.path, "state": proc.status,
            "knobs": [_state_json(v, pub["seq"]) for v in proc.knobs.values()],
        })  # fmt: skip
    if errors:
        doc["errors"] = [{"path": e.path, "problem": e.problem} for e in errors]
    return doc


def file_knobs_json(path: str) -> list[dict[str, Any]] | None:
    """The knobs of one file as ``statmap show --json`` lists them; None when it has none (or cannot be read)."""
    try:
        proc = read_process(path)
    except (FormatError, OSError):
        return None  # show reports the file's problem itself
    if proc is None:
        return None
    control, _problem = read_desired(os.path.dirname(os.path.abspath(path)), proc.publisher)
    seq = control.seq if control else 0
    return [_state_json(v, seq) for v in proc.knobs.values()]
