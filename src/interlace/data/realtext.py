"""Real human-written English, offline: the Python documentation as a ``--data`` source ("pydocs").

The corpus is the reStructuredText source of the official Python documentation (tutorial,
library and language references, HOWTOs, FAQs, What's New, C API: about 500 documents and 1.4M
words in 3.11), written by people over three decades. It comes with Debian's ``python3-doc``
package, which installs the sources Sphinx keeps next to the HTML pages:

    apt-get install -y python3-doc      # /usr/share/doc/python3/html/_sources/**/*.rst.txt

Licence: the PSF License Agreement (PSF-2.0), as for Python itself.

Pipeline, each step a small pure function: ``rst_paragraphs`` strips the markup (directives, code
and literal blocks, tables, headings, inline roles) and keeps prose paragraphs; ``chunk_passages``
packs a document's paragraphs into passages of MIN_CHARS..MAX_CHARS characters (about 150-300
tokens), breaking between paragraphs where it can and between sentences where it must;
``split_of`` puts each *document* into calib / train / test (10% / 80% / 10%) by a hash of its
name, so that no document, and so no passage, is in two splits, whatever the Python version.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from interlace.data.rows import DataSpecError

NAME = "pydocs"
LICENCE = "PSF-2.0 (the PSF License Agreement of the Python documentation)"
DESCRIPTION = (
    "the Python documentation's reStructuredText sources (Debian's python3-doc), stripped to prose, "
    "split by document into calib/train/test (10/80/10%) and chunked into 600-1200 character passages"
)
INSTALL_HINT = "apt-get install -y python3-doc"
# python3-doc links python3/html to the default version's docs; any pythonX.Y-doc also works.
SEARCH_PATHS = ("/usr/share/doc/python3/html/_sources", "/usr/share/doc/python3.*/html/_sources")
SPLITS = ("calib", "train", "test")
SPLIT_PERCENT = {"calib": range(0, 10), "train": range(10, 90), "test": range(90, 100)}
MIN_CHARS, MAX_CHARS = 600, 1200

# Directives whose body is code, data or navigation rather than prose: the body is dropped. Every
# other directive (function, class, note, versionchanged, ...) keeps its indented body.
SKIP_BODY = frozenset(
    "index code-block code sourcecode doctest testcode testoutput testsetup testcleanup productionlist "
    "literalinclude toctree highlight include module currentmodule moduleauthor sectionauthor "
    "tabularcolumns list-table csv-table table image figure raw math parsed-literal contents only "
    "miscnews limited-api-list audit-event availability program".split()
)
# Directives whose argument is prose (".. note:: Text"); for the version directives, after the version.
PROSE_ARGUMENT = {
    **dict.fromkeys("note warning seealso tip important hint caution attention danger error impl-detail".split(), 0),
    **dict.fromkeys(("versionadded", "versionchanged", "deprecated"), 1),
    "deprecated-removed": 2,
}

DIRECTIVE = re.compile(r"(?P<indent>\s*)\.\.\s+(?P<name>[\w:-]+)::\s*(?P<argument>.*)")
COMMENT = re.compile(r"\s*\.\.(\s|$)")  # targets (.. _label:), substitutions, comments
OPTION = re.compile(r"\s*:[\w-]+:(\s|$)")
ADORNMENT = re.compile(r"""\s*([=\-~^"'*+#_:.`])\1{2,}\s*""")  # section under/overlines, transitions
TABLE_BORDER = re.compile(r"\s*(\+[-=+]+\+|=+( +=+)+)\s*")
ROLE = re.compile(r":(?:[\w-]+:)+`(?P<inner>[^`]*)`")
LINK = re.compile(r"`(?P<inner>[^`<]*?)\s*(?:<[^>`]*>)?`__?")
LIST_ITEM = re.compile(r"\s*(?:[-*+]|#\.|\d+\.|\(\w\))\s+")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


# ---------------------------------------------------------------------------------------------
# reStructuredText -> prose paragraphs


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _role_text(inner: str) -> str:
    """What Sphinx shows for a role: ``title <target>`` -> title, ``~a.b.c`` -> c, ``!x`` -> x."""
    inner = re.sub(r"\s*<[^>]*>$", "", inner).strip() or inner
    if inner.startswith("~"):
        inner = inner[1:].rsplit(".", 1)[-1]
    return inner.lstrip("!")


def strip_inline(text: str) -> str:
    """A paragraph's inline markup removed (roles, literals, links, emphasis, footnote marks)."""
    shown: list[str] = []  # text to show verbatim, kept out of the later rules behind a placeholder

    def keep(verbatim: str) -> str:
        shown.append(verbatim)
        return f"\x00{len(shown) - 1}\x01"

    text = re.sub(r"``(.+?)``", lambda match: keep(match[1]), text)
    text = ROLE.sub(lambda match: keep(_role_text(match["inner"])), text)
    text = re.sub(r"\\(.)", lambda match: "" if match[1] == " " else keep(match[1]), text)  # escapes
    text = LINK.sub(lambda match: match["inner"], text)
    text = re.sub(r"\*\*([^\s*](?:.*?[^\s*])??)\*\*", r"\1", text)
    text = re.sub(r"(?<![\w*])\*([^\s*](?:.*?[^\s*])??)\*(?![\w*])", r"\1", text)
    text = re.sub(r"\s*\[(?:#\w*|\d+|\*)\]_", "", text)  # footnote references
    text = re.sub(r"\|(\w+)\|_?", r"\1", text)  # substitution references
    text = re.sub(r"\x00(\d+)\x01", lambda match: shown[int(match[1])], text)
    return " ".join(text.split())


def is_prose(paragraph: str, min_words: int = 8, min_letters: float = 0.75) -> bool:
    """Whether a stripped paragraph reads as English prose rather than code, a table or a list
    of names: enough words, and mostly letters."""
    if len(paragraph.split()) < min_words or paragraph.startswith((">>>", "$ ", "% ")):
        return False
    visible = [char for char in paragraph if not char.isspace()]
    return sum(char.isalpha() for char in visible) >= min_letters * len(visible)


def _blocks(lines: list[str]) -> list[list[str]]:
    """The text blocks of an rST document (runs of lines between blank lines), with markup that
    carries no prose removed: directives' code bodies, literal blocks, comments, headings, tables."""
    blocks: list[list[str]] = []
    block: list[str] = []
    skip_below: int | None = None  # skip blank lines and lines indented deeper than this

    def close() -> None:
        nonlocal block
        if block:
            blocks.append(block)
        block = []

    for index, line in enumerate(lines):
        if skip_below is not None:
            if not line.strip() or _indent(line) > skip_below:
                continue
            skip_below = None
        if not line.strip():
            close()
            continue
        following = lines[index + 1] if index + 1 < len(lines) else ""
        directive = DIRECTIVE.fullmatch(line)
        if directive:
            close()
            name, argument = directive["name"], directive["argument"].split()
            if name in SKIP_BODY:
                skip_below = _indent(line)
            elif name in PROSE_ARGUMENT and len(argument) > PROSE_ARGUMENT[name]:
                block = [" ".join(argument[PROSE_ARGUMENT[name] :])]
            continue
        if COMMENT.match(line):
            close()
            skip_below = _indent(line)
            continue
        if ADORNMENT.fullmatch(line):
            close()
            continue
        if ADORNMENT.fullmatch(following) and not block and _indent(line) == 0:
            continue  # a section title: the next line underlines it
        if TABLE_BORDER.fullmatch(line):
            block = ["<table>"]
            continue
        block.append(line)
        if line.rstrip().endswith("::"):  # "For example::" introduces an indented literal block
            block[-1] = re.sub(r"\s*::$", "" if line.rstrip().endswith(" ::") else ":", line.rstrip())
            close()
            skip_below = min(_indent(part) for part in blocks[-1])
    close()
    return blocks


def _skip_options(lines: list[str]) -> list[str]:
    """Directive option lines (``:synopsis: ...`` under ``.. module::``) removed."""
    kept, after_directive = [], False
    for line in lines:
        if DIRECTIVE.fullmatch(line):
            after_directive = True
        elif after_directive and OPTION.match(line):
            continue
        else:
            after_directive = False
        kept.append(line)
    return kept


def rst_paragraphs(text: str) -> list[str]:
    """The prose paragraphs of a reStructuredText document, markup stripped, one line each.

    Code (literal blocks after ``::``, doctests, code directives), tables, headings, comments and
    targets are dropped; the bodies of descriptive directives (``.. function::``, ``.. note::``)
    are kept without their signature line. Paragraphs that do not read as prose are dropped.
    """
    lines = _skip_options(text.expandtabs(8).splitlines())
    paragraphs = []
    for block in _blocks(lines):
        if "<table>" in block or block[0].lstrip().startswith((">>>", "|")):
            continue
        if any(re.search(r"\S {3,}\S", line.strip()) for line in block):  # column gaps: a table row
            continue
        for item in _list_items(block):
            paragraph = strip_inline(" ".join(item))
            if is_prose(paragraph):
                paragraphs.append(paragraph)
    return paragraphs


def _list_items(block: list[str]) -> list[list[str]]:
    """A block cut at each list item (a compact list has no blank lines between items), markers removed."""
    items: list[list[str]] = []
    for line in block:
        marked = LIST_ITEM.match(line)
        if marked or not items:
            items.append([])
        items[-1].append(line[marked.end() :] if marked else line)
    return items


# ---------------------------------------------------------------------------------------------
# Paragraphs -> passages


def split_sentences(paragraph: str) -> list[str]:
    """A paragraph cut after each '.', '!' or '?' that a capital letter or a digit follows."""
    return [sentence for sentence in SENTENCE_END.split(paragraph) if sentence]


def chunk_passages(paragraphs: list[str], min_chars: int = MIN_CHARS, max_chars: int = MAX_CHARS) -> list[str]:
    """A document's paragraphs packed into passages of min_chars..max_chars characters.

    A passage is whole paragraphs joined by a blank line, closed at the first paragraph end past
    min_chars. A paragraph that would overflow max_chars is taken sentence by sentence instead:
    the passage closes at the first sentence end past min_chars and the paragraph's remaining
    sentences open the next one. A sentence longer than max_chars breaks the run; text shorter
    than min_chars left at a break or at the document's end is dropped.
    """
    if not 0 < min_chars <= max_chars:
        raise ValueError(f"need 0 < min_chars <= max_chars, got {min_chars} and {max_chars}")
    passages: list[str] = []
    current: list[str] = []  # the passage so far: paragraphs, the last one possibly partial

    def size(parts: list[str]) -> int:
        return len("\n\n".join(parts))

    def close() -> None:
        if size(current) >= min_chars:
            passages.append("\n\n".join(current))
        current.clear()

    for paragraph in paragraphs:
        if size([*current, paragraph]) <= max_chars:
            current.append(paragraph)
        else:
            sentences: list[str] = []  # this paragraph's sentences in the open passage
            for sentence in split_sentences(paragraph):
                if len(sentence) > max_chars or size([*current, " ".join([*sentences, sentence])]) > max_chars:
                    current.extend([" ".join(sentences)] if sentences else [])
                    sentences = []
                    close()
                    if len(sentence) > max_chars:
                        continue
                sentences.append(sentence)
                if size([*current, " ".join(sentences)]) >= min_chars:
                    current.append(" ".join(sentences))
                    sentences = []
                    close()
            current.extend([" ".join(sentences)] if sentences else [])
        if size(current) >= min_chars:
            close()
    close()
    return passages


# ---------------------------------------------------------------------------------------------
# Documents -> splits -> samples


def split_of(document: str) -> str:
    """The split a document belongs to, from a hash of its name (stable across runs and machines)."""
    bucket = int.from_bytes(hashlib.sha256(document.encode()).digest()[:8], "big") % 100
    return next(split for split, percents in SPLIT_PERCENT.items() if bucket in percents)


def find_root(root: str | Path | None = None) -> Path:
    """The directory of ``*.rst.txt`` sources: root if given, else the first of SEARCH_PATHS
    (the newest Python version where several are installed).

    Raises:
        DataSpecError: no such directory; the message gives the apt command that installs it.
    """
    if root is not None:
        candidates = [Path(root).expanduser()]
    else:
        candidates = [path for pattern in SEARCH_PATHS for path in _newest_first(Path("/").glob(pattern.lstrip("/")))]
    for candidate in candidates:
        if candidate.is_dir() and next(candidate.rglob("*.rst.txt"), None) is not None:
            return candidate
    where = str(candidates[0]) if root is not None else " or ".join(SEARCH_PATHS)
    raise DataSpecError(
        f"data spec {NAME!r}: the Python documentation sources are not installed (looked in {where}); "
        f"install them with `{INSTALL_HINT}`"
    )


def _newest_first(paths: Iterable[Path]) -> list[Path]:
    def version(path: Path) -> tuple[int, int]:
        found = re.search(r"python(\d+)\.(\d+)", str(path))
        return (int(found[1]), int(found[2])) if found else (0, 0)  # python3/ (the default) sorts last

    return sorted(paths, key=version, reverse=True)


def read_documents(root: Path) -> dict[str, str]:
    """Every ``*.rst.txt`` under root by document id (its path without the suffix: "library/os")."""
    return {
        str(path.relative_to(root)).removesuffix(".rst.txt"): path.read_text(encoding="utf-8", errors="replace")
        for path in sorted(root.rglob("*.rst.txt"))
    }


@functools.lru_cache(maxsize=4)
def _passages_by_document(root: Path) -> dict[str, tuple[str, ...]]:
    # Parsing the 1.4M words takes a few seconds; the result never changes for a root.
    documents = read_documents(root)
    passages = {name: tuple(chunk_passages(rst_paragraphs(text))) for name, text in documents.items()}
    return {name: chunks for name, chunks in passages.items() if chunks}


def passages_by_document(split: str, root: str | Path | None = None) -> dict[str, list[str]]:
    """The passages of every document in a split, by document id, in document order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    corpus = _passages_by_document(find_root(root))
    return {name: list(chunks) for name, chunks in corpus.items() if split_of(name) == split}


def load_passages(split: str, n: int | None = None, seed: int = 0, *, root: str | Path | None = None) -> list[dict]:
    """Plain-text samples of one split, in a seeded random order (a prefix is a smaller sample).

    Args:
        split: "calib", "train" or "test"; the three share no document.
        n: at most this many passages; None: all of them.
        seed: the order's seed.
        root: the sources' directory; None: where ``python3-doc`` installs them.

    Returns:
        ``{"images": [], "texts": [], "text": passage, "source": "pydocs/<document>"}`` dicts.

    Raises:
        DataSpecError: the corpus is not installed.
    """
    if n is not None and n < 1:
        raise ValueError(f"n must be None or >= 1, got {n}")
    samples = [
        {"images": [], "texts": [], "text": passage, "source": f"{NAME}/{name}"}
        for name, passages in passages_by_document(split, root).items()
        for passage in passages
    ]
    order = np.random.default_rng(seed).permutation(len(samples))
    return [samples[index] for index in order[:n]]
