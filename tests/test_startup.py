"""What the commands import: each imports only what it needs (start-up time, issue 12).

Whole-process timings are measured by benchmarks/cli_wall.py; here only the
facts that make them: which modules a command loads, in a real process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import statmap
from statmap import cli, expose

pytestmark = pytest.mark.once  # imports, not values: the cell backend does not matter

# The writing side, the HTTP server and modules only some commands need.
WRITING = {"statmap.publisher", "statmap.metrics", "statmap.model", "statmap.owner"}
SERVING = {"statmap.server", "statmap.app", "statmap.host_stdlib", "statmap.host_asgi", "statmap.httputil", "asyncio"}


def modules_after(code: str, statdir: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code`` (with ``statdir`` as DIR)."""
    script = (
        "import io, json, sys\n"
        "out = sys.stdout\n"
        "sys.stdout = io.StringIO()\n"
        f"{code}\n"
        "out.write(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script.replace("DIR", repr(statdir))],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


@pytest.fixture
def published(statdir: str):  # type: ignore[no-untyped-def]
    pub = statmap.Publisher("web", statdir)
    pub.counter("requests", "Requests", labels=("code",)).labels("200").inc(3)
    yield statdir
    pub.close()


@pytest.mark.parametrize(
    ("argv", "absent"),
    [
        (["export"], WRITING | SERVING | {"statmap.cleaning"}),
        (["show", "--aggregate"], WRITING | SERVING),
        (["show"], WRITING | SERVING | {"statmap.expose", "statmap.collect", "statmap.aggregate", "statmap.pattern"}),
        (["ls"], WRITING | SERVING | {"statmap.expose"}),
    ],
    ids=["export", "show --aggregate", "show", "ls"],
)
def test_a_command_imports_only_what_it_needs(published: str, argv: list[str], absent: set[str]) -> None:
    code = f"from statmap.cli import main\nassert main({[*argv, '--dir', 'DIR']!r}) == 0".replace("'DIR'", "DIR")
    loaded = modules_after(code, published)
    assert "statmap.reader" in loaded  # it did read the files
    assert not absent & loaded, sorted(absent & loaded)


def test_import_statmap_loads_neither_side() -> None:
    loaded = modules_after("import statmap", "")
    assert not (WRITING | SERVING | {"statmap.reader", "statmap.collect"}) & loaded


def test_every_public_name_resolves_lazily_and_is_listed() -> None:
    for name in statmap.__all__:
        assert getattr(statmap, name) is not None, name
    assert set(statmap.__all__) <= set(dir(statmap))
    assert statmap.Counter is statmap.metrics.Counter  # submodules are attributes once imported
    assert statmap.open is statmap.reader.open
    assert statmap.backend in ("c", "python")
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        _ = statmap.no_such_name


def test_a_submodule_is_an_attribute_on_first_use() -> None:
    loaded = modules_after("import statmap\nassert statmap.rates.Rates", "")
    assert "statmap.rates" in loaded


def test_export_format_help_lists_exactly_the_export_formats() -> None:
    # the names are written out in cli.py so that building the parser does not import expose
    text_formats = [n for n, f in expose.FORMATS.items() if not f.binary]
    assert cli.EXPORT_FORMATS == "{" + ",".join(text_formats) + "}"
    assert list(cli._FormatNames()) == text_formats and "protobuf" not in cli._FormatNames()
    assert "prometheus" in cli._FormatNames() and "xml" not in cli._FormatNames()


def test_a_refused_match_pattern_is_still_a_usage_error(published: str) -> None:
    # main() recognises the pattern error without importing pattern.py itself
    result = subprocess.run(
        [sys.executable, "-m", "statmap", "show", "--dir", published, "--match", "a("],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("statmap: --match: ") and "Traceback" not in result.stderr
