"""Text from the outside world, made safe to store and to show on a terminal.

Feed titles, descriptions, links and error messages are written by strangers. Shown as
they are, ANSI/OSC escape sequences in them drive the user's terminal (colours, window
titles, hyperlinks, clearing the screen), bidi overrides reorder what the user reads
(a price or a link that is not what it looks like), and `[red]...[/red]` is markup to
rich, which crashes on a stray `[/red]`.

    strip_controls(text)    ANSI/OSC escape sequences, other C0/C1 control characters
                            and the Unicode bidi embedding/override/isolate marks
                            removed; newlines and tabs kept unless `keep_newlines=False`
    plain(text)             a rich `Text` of the stripped text: never parsed as markup,
                            for table cells and prints
    escape_markup(text)     the stripped text with rich markup escaped, for strings that
                            are printed as markup (error messages with a file name)
    money(value)            $1,234 for whole dollars, else $1,234.56; '-' for None (one
                            way to write a price in texts, tables and pages)
    report_console()        a rich Console for tables people read: the terminal's width,
                            or `PIPE_WIDTH` columns when written to a file or a pipe
                            (Rich would assume 80 and cut the numbers)

The feed parser strips controls when it reads an entry (so they are never stored) and
every face strips and escapes again when it shows text (rows stored before, catalogue
titles, error messages naming a hostile URL).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

# whole escape sequences first (CSI "ESC [ ... final", OSC "ESC ] ... BEL|ST", 8-bit CSI), then lone controls
_SEQUENCES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x9b[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f"
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[{_CONTROLS}{_BIDI}]")
_UNSAFE_LINES = re.compile(f"[{_CONTROLS}{_BIDI}\t\n]")


def strip_controls(text: str, *, keep_newlines: bool = True) -> str:
    """`text` without control characters and bidi controls (newlines and tabs kept unless told)."""
    if not text:
        return text
    text = _SEQUENCES.sub("", text.replace("\r\n", "\n"))
    if keep_newlines:
        return _UNSAFE.sub("", text)
    return _UNSAFE_LINES.sub(" ", text).replace("  ", " ")


def plain(text: object) -> Text:
    """A rich Text that shows `text` literally: controls stripped, no markup."""
    return Text(strip_controls(str(text)))


def escape_markup(text: object) -> str:
    """`text` stripped of controls and with rich markup escaped, to embed in a markup string."""
    return escape(strip_controls(str(text)))




def money(value: float | None) -> str:
    """$1,234 for whole dollars, else $1,234.56; -$12.50 below zero; '-' for None."""
    if value is None:
        return "-"
    text = f"{abs(value):,.2f}"
    return ("-$" if value < 0 and text != "0.00" else "$") + (text[:-3] if text.endswith(".00") else text)


PIPE_WIDTH = 200


def report_console(**options: Any) -> Console:
    """A Console for tables: the terminal's width, or `PIPE_WIDTH` columns when stdout is not one and COLUMNS is unset."""
    if "width" not in options and not options.get("stderr") and not sys.stdout.isatty() and not os.environ.get("COLUMNS"):
        options["width"] = PIPE_WIDTH
    return Console(**options)


__all__ = ["PIPE_WIDTH", "escape_markup", "money", "plain", "report_console", "strip_controls"]
