"""Student text made safe to print: no terminal control sequences, no markup.

A notebook's text reaches the terminal through messages, file names and
tracebacks. Escape sequences there could repaint the screen with a fake score,
and rich would read `[/]` or `[red]` as markup; `printable` removes the first,
`rich_text` makes a rich Text, which never parses markup.
"""

from __future__ import annotations

import re

from rich.text import Text

# CSI and OSC sequences, then any other C0/C1 control character except newline and tab
_SEQUENCES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x9b[0-?]*[ -/]*[@-~]")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
MAX_PRINTED = 2000


def printable(text: object, *, limit: int = MAX_PRINTED) -> str:
    """`text` without control characters or escape sequences, cut to `limit` characters."""
    clean = _CONTROLS.sub("", _SEQUENCES.sub("", str(text)))
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def rich_text(text: object, style: str = "", *, limit: int = MAX_PRINTED) -> Text:
    return Text(printable(text, limit=limit), style=style)
