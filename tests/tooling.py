"""The command-line checkers some tests run (promtool, hadolint, kubernetes-validate, check-jsonschema).

A missing one fails the test in CI (``CI`` set), where .ci/run installs them all, and skips it with
where to get it on a developer's machine.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

__all__ = ["require_tool"]


def require_tool(name: str, where: str) -> str:
    """The path of ``name`` (on PATH or beside this interpreter); fail in CI, else skip, if it is missing."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        message = f"{name} is not installed ({where}; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found
