"""Keeping a DSN's password out of everything slotfleet prints, logs or reports.

A DSN carries a password (``postgresql://app:PASSWORD@db/app``), and the messages built
around it do not always know that: libpq echoes a malformed DSN whole
(``missing "=" after "postgres:/app:PASSWORD@db"``) or a token of it (``invalid
percent-encoded token``). :func:`scrub` replaces every form of the password found in
``dsn`` (as written, percent-decoded, in ``key=value`` form or as a ``password=`` query
parameter) and any ``scheme://user:secret@`` in the text; :func:`redact_dsn` is the DSN
itself with its password masked, for display.

Callers scrub at the edges where text leaves the process: the stores' error messages,
the operator's conditions, Events and logs, the command line's output.

What this module is not: it does not parse a DSN for connecting (the drivers do) and it
never raises: text it cannot understand is scrubbed by the generic patterns alone.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/*")
#: libpq's keyword/value form (``host=db password='a b'``) and a URI's query parameter
#: (``?password=x&port=5432``)
_KEYWORD = re.compile(r"""\bpassword\s*=\s*('(?:\\.|[^'\\])*'|\S+)""", re.IGNORECASE)
_QUERY = re.compile(r"[?&]password=([^&#\s]*)", re.IGNORECASE)
_URL_SECRET = re.compile(r"(://[^:/@\s\"']*:)[^@\s\"']*@")
_KEYWORD_SECRET = re.compile(r"""(\bpassword\s*=\s*)('(?:\\.|[^'\\])*'|[^\s&"]+)""", re.IGNORECASE)


def _secrets(dsn: str) -> set[str]:
    """Every string that may be ``dsn``'s password, as written and decoded."""
    found: set[str] = set()
    rest = _SCHEME.sub("", dsn, count=1)
    colon = rest.find(":")
    if colon >= 0:
        # user:password@host: the password ends at one of the '@' after the colon (an
        # unencoded '@' in a password makes the right one unknowable, so take each)
        for at in (i for i, c in enumerate(rest) if c == "@" and i > colon):
            found.add(rest[colon + 1 : at])
    for match in _KEYWORD.finditer(dsn):
        value = match.group(1)
        if value.startswith("'") and value.endswith("'") and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        found.add(value)
    found.update(match.group(1) for match in _QUERY.finditer(dsn))
    found |= {unquote(s) for s in found}
    found.discard("")
    return found


def scrub(text: str, dsn: str | None = None) -> str:
    """``text`` with ``dsn``'s password (every form of it) and any URL credentials or
    ``password=`` value replaced by ``***``."""
    if dsn:
        for secret in sorted(_secrets(dsn), key=len, reverse=True):
            text = text.replace(secret, MASK)
    text = _URL_SECRET.sub(rf"\g<1>{MASK}@", text)
    return _KEYWORD_SECRET.sub(rf"\g<1>{MASK}", text)


def redact_dsn(dsn: str) -> str:
    """``dsn`` with its password masked: ``postgresql://app:***@db/app``."""
    return scrub(dsn, dsn)
