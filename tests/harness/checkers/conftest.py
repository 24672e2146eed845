from __future__ import annotations

import pytest
from checker_runs import RunBuilder


@pytest.fixture
def rb() -> RunBuilder:
    return RunBuilder()
