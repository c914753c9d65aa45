"""Fixtures for the pytest-benchmark micro-benchmarks (`pytest benchmarks/ --benchmark-only`)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from benchmarks.models import prepare

    return prepare("minilm", Path("out/bench-cache")).directory
