"""Exposed label names are worked out once per family's label keys (expose.Exposer._label_names): the same
names, text and dict as working them out per series (the reference below), for keys that clash."""

from __future__ import annotations

from typing import Any

from statmap.expose import Exposer, _free, _Out, escape_label_value, label_name
from statmap.results import MetricFamily, Sample


def _reference(out: _Out, fam: MetricFamily, sample: Sample) -> tuple[str, dict[str, str]]:
    labels: dict[str, str] = {}
    kind = out.kind
    reserved = set(kind.reserved)
    if kind.label_is_name:
        reserved.add(out.name)
    for k, v in sample.labels.items():
        labels[_free(label_name(k), reserved | labels.keys())] = str(v)
    if out.publisher_label:
        labels[_free(out.publisher_label, reserved | labels.keys())] = fam.publisher
    return ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items()), labels


KEYS: tuple[tuple[str, ...], ...] = (
    (),
    ("le",),
    ("quantile", "le", "le_"),
    ("publisher", "publisher_"),
    ("__x", "_x", "x"),
    ("a-b", "a_b", "a.b"),
    ("1st", "_1st"),
    ("state", "mode"),
)


def test_label_names_as_worked_out_per_series() -> None:
    exposer = Exposer(publisher_label="always")
    plain = Exposer()
    for ftype in ("counter", "gauge", "histogram", "summary", "enum", "info", "text"):
        for keys in KEYS:
            fam = MetricFamily("app", "state", ftype, "", "", "sum", False, False, ())
            for publisher_label in ("publisher", None):
                out = _Out("state", fam, publisher_label)
                for n in range(3):
                    values: dict[str, Any] = {k: f'v{n}"\\\n{k}' for k in keys}
                    sample = Sample(values, 1, None, tuple(values.items()))
                    for e in (exposer, plain):
                        assert e.base_labels(out, fam, sample) == _reference(out, fam, sample), (ftype, keys)
