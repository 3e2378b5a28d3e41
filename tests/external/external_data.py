"""Where the data sets of other projects that tests/external runs on are found.

They are not kept in this repository. Each lives in a folder of its own name under one
root: `$FASTGW_TEST_DATA` when set, else `shared/test-data/` beside the checkout (laid out
the same way for development machines and CI). A test whose data set is missing is
skipped with a pointer to the module that says how to make it.

    <root>/llhttp/LICENSE, <root>/llhttp/request/*.md       test_llhttp_fixtures.py
    <root>/wycheproof/LICENSE,
    <root>/wycheproof/json_web_signature_test.json          test_wycheproof_jws.py
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def dataset(name: str) -> Path | None:
    """The folder of data set `name`, or None when it is not there."""
    root = Path(os.environ.get("FASTGW_TEST_DATA") or ROOT.parent / "shared" / "test-data")
    folder = root / name
    return folder if folder.is_dir() else None
