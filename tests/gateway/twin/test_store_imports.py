"""The store keeps pandas out of the daemon: sqlite_utils would import it (31 MiB) only to
map pandas.Timestamp columns, which the store never writes. pandas is installed here (wfdb,
a runtime dependency, requires it), so the hiding is what these tests see."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip()


def test_importing_the_store_does_not_import_pandas() -> None:
    out = _run(
        "import sys, gateway.twin.store, sqlite_utils.db as db; "
        "print('pandas' in sys.modules, db.pd is None)"
    )
    assert out == "False True"


def test_a_later_import_of_pandas_still_works_and_an_earlier_one_is_kept() -> None:
    later = _run("import gateway.twin.store, pandas; print(pandas.Timestamp(0).year)")
    assert later == "1970"
    earlier = _run(
        "import pandas, gateway.twin.store, sqlite_utils.db as db; print(db.pd is pandas)"
    )
    assert earlier == "True"
