"""The report as plain data: a title and a list of sections, each a heading and its blocks (paragraphs, notes,
bulleted lists, tables, figures). sections.py builds it; each module of render/ turns it into one output format.

Text is plain text with `**bold**` spans (the only inline markup): a format decides how to show them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    kind: str = "heading"


@dataclass(frozen=True)
class Paragraph:
    text: str
    kind: str = "paragraph"


@dataclass(frozen=True)
class Note:
    """A paragraph the reader must not miss (a simulated run, a method that differs from the reference)."""

    text: str
    kind: str = "note"


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]
    kind: str = "bullets"


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    kind: str = "table"


@dataclass(frozen=True)
class Figure:
    name: str      # the PNG's file name next to the report
    png: bytes
    caption: str
    kind: str = "figure"


Block = Heading | Paragraph | Note | Bullets | Table | Figure


@dataclass
class Section:
    """A heading (level 1 for the title section, 2 for the others) and what follows it up to the next section;
    a subsection's heading (level 3) is one of its blocks."""

    heading: Heading
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    sections: list[Section] = field(default_factory=list)

    def blocks(self) -> Iterator[Block]:
        """Every block in reading order, each section's heading first."""
        for section in self.sections:
            yield section.heading
            yield from section.blocks

    def section(self, heading: str) -> Section | None:
        return next((s for s in self.sections if s.heading.text == heading), None)


class DocumentBuilder:
    """Appends to a Document the way the sections are written: a heading of level 1 or 2 opens a section."""

    def __init__(self, title: str) -> None:
        self.document = Document(title)

    def _add(self, block: Block) -> None:
        if not self.document.sections:
            raise ValueError("a report's first block is its title heading")
        self.document.sections[-1].blocks.append(block)

    def h(self, level: int, text: str) -> None:
        if level <= 2:
            self.document.sections.append(Section(Heading(level, text)))
        else:
            self._add(Heading(level, text))

    def p(self, text: str) -> None:
        self._add(Paragraph(text))

    def note(self, text: str) -> None:
        self._add(Note(text))

    def ul(self, items: list[str]) -> None:
        if items:
            self._add(Bullets(tuple(items)))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self._add(Table(tuple(header), tuple(tuple(r) for r in rows)))

    def img(self, name: str, png: bytes, alt: str) -> None:
        self._add(Figure(name, png, alt))
