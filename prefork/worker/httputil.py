"""HTTP utilities: the header container and form-body parsing.

Pure: text and bytes in, Python objects out; no socket, event loop or clock.
The API is the classic ``tornado.httputil`` (2.4.1) one, without the defects
that later became advisories: a bounded name cache, lazily joined repeated
headers (CVE-2025-67725), header lines split on ``\\n`` only with SP/HTAB as
the only whitespace, a linear parameter parser (CVE-2025-67726), multipart
parsing that raises at the first error (CVE-2025-47287) and caps parts and
part headers before doing work (CVE-2026-31958, CVE-2026-91990), and a cap on
urlencoded fields (CVE-2026-82397). Bad input raises :class:`HTTPInputError`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import ItemsView, Iterable, Iterator, Mapping, ValuesView
from typing import Any
from urllib.parse import unquote_to_bytes


class HTTPInputError(ValueError):
    """Malformed header text or body from the peer; the server answers 400.

    A ``ValueError`` so that code which already catches that keeps working.
    """


# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters other than HTAB (RFC 9110 section 5.5: field-value).
_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HTTP_WS = " \t"


@functools.lru_cache(maxsize=1000)
def normalize_header_name(name: str) -> str:
    """``content-TYPE`` -> ``Content-Type``: each ``-`` word capitalized.

    Cached because it runs for every header of every request; bounded because
    names come from the peer, who could otherwise grow the memo forever.
    """
    return "-".join(word.capitalize() for word in name.split("-"))


class HTTPHeaders(dict[str, str]):
    """A case-insensitive multi-value header mapping that is also a ``dict``.

    Keys are normalized names; the dict value is all values joined with
    ``","``; :meth:`get_list` and :meth:`get_all` give the single values.
    The per-name lists are the source of truth: a repeat only appends and
    marks the name dirty, and the join is redone once, on the next read
    (re-joining on every ``add`` made many repeats quadratic). So every
    method that reads the dict storage is overridden to rebuild dirty names
    first, including the ones dict's C code would otherwise bypass.

    Headers from the protocol core with no repeated name (nearly every
    request) get no lists at all: ``_as_list`` is None while every name has
    exactly one value, the dict's own, and the lists are made the first time
    something needs them (:meth:`_lists`).
    """

    __slots__ = ("_as_list", "_dirty", "_last_key")

    def __init__(self, *args: Any, **kwargs: str) -> None:
        self._as_list: dict[str, list[str]] | None = {}
        self._dirty: set[str] = set()
        self._last_key: str | None = None
        if len(args) > 1:
            raise TypeError(f"HTTPHeaders expected at most 1 argument, got {len(args)}")
        if args and isinstance(args[0], HTTPHeaders):
            # Copy constructor: keep every value, not the joined strings.
            for name, value in args[0].get_all():
                self.add(name, value)
        elif args:
            self.update(args[0])
        if kwargs:
            self.update(kwargs)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> HTTPHeaders:
        """Build headers from ``(name, value)`` pairs the protocol core already validated.

        The per-request constructor: it only normalizes and adds, inlined.
        """
        self = cls.__new__(cls)
        as_list: dict[str, list[str]] = {}
        self._as_list = as_list
        self._dirty = set()
        self._last_key = None
        normalize = normalize_header_name
        setitem = dict.__setitem__
        for name, value in pairs:
            key = normalize(name)
            values = as_list.get(key)
            if values is None:
                as_list[key] = [value]
                setitem(self, key, value)
            else:
                values.append(value)
                self._dirty.add(key)
        return self

    @classmethod
    def from_parsed(cls, pairs: list[tuple[str, str]]) -> HTTPHeaders:
        """Headers of a request read by the protocol core (the server's constructor).

        Like :meth:`from_pairs`, for pairs whose names the core has already
        normalized: one C-level dict update, and no value lists unless a
        name repeats.
        """
        self = cls.__new__(cls)
        dict.update(self, pairs)
        if len(self) != len(pairs):  # a repeated name: keep every value
            dict.clear(self)
            return cls.from_pairs(pairs)
        self._as_list = None
        self._dirty = set()
        self._last_key = None
        return self

    def _lists(self) -> dict[str, list[str]]:
        """The per-name value lists, made on first use (see the class docstring)."""
        as_list = self._as_list
        if as_list is None:
            as_list = self._as_list = {name: [value] for name, value in dict.items(self)}
        return as_list

    @classmethod
    def parse(cls, text: str) -> HTTPHeaders:
        """Parse a header block; raise :class:`HTTPInputError` on any bad line.

        Lines split on ``\\n`` only (and lose one ``\\r``): ``splitlines`` also
        breaks on ``\\r``, ``\\v``, ``\\x85``..., so a peer could smuggle header
        lines past a proxy that does not. Empty lines are skipped; obs-fold
        lines are collected and applied in one join, keeping long folds linear.
        """
        headers = cls()
        folds: list[str] = []
        for line in text.split("\n"):
            if line.endswith("\r"):
                line = line[:-1]
            if not line:
                continue
            if line[0] in _HTTP_WS:
                folds.append(line)
                continue
            if folds:
                headers._fold(folds)
                folds = []
            headers._parse_field_line(line)
        if folds:
            headers._fold(folds)
        return headers

    def parse_line(self, line: str) -> None:
        """Add one header line; a line starting with SP or HTAB continues the last one.

        Only SP/HTAB: ``\\v``, ``\\f`` and Unicode spaces are not HTTP whitespace.
        """
        if line.endswith("\n"):
            line = line[:-2] if line.endswith("\r\n") else line[:-1]
        if not line:
            return
        if line[0] in _HTTP_WS:
            self._fold([line])
        else:
            self._parse_field_line(line)

    def _parse_field_line(self, line: str) -> None:
        name, colon, value = line.partition(":")
        if not colon:
            raise HTTPInputError(f"header line without a colon: {line[:100]!r}")
        if _TOKEN_RE.fullmatch(name) is None:
            raise HTTPInputError(f"invalid header name: {name[:100]!r}")
        value = value.strip(_HTTP_WS)
        if _CTL_RE.search(value) is not None:
            raise HTTPInputError(f"control character in value of header {name[:100]!r}")
        self.add(name, value)

    def _fold(self, lines: list[str]) -> None:
        """Append continuation ``lines`` to the last value, space-separated.

        Blank parts are dropped, so a folded value stays stripped at both ends.
        """
        key = self._last_key
        if key is None:
            raise HTTPInputError("header continuation line before any header")
        parts = []
        for line in lines:
            part = line.strip(_HTTP_WS)
            if _CTL_RE.search(part) is not None:
                raise HTTPInputError(f"control character in continuation of header {key!r}")
            if part:
                parts.append(part)
        if parts:
            values = self._lists()[key]
            if values[-1]:
                parts.insert(0, values[-1])
            values[-1] = " ".join(parts)
            self._dirty.add(key)

    def _flush(self) -> None:
        """Store the joined value of every name whose list changed since the last read."""
        as_list = self._lists()
        for key in self._dirty:
            dict.__setitem__(self, key, ",".join(as_list[key]))
        self._dirty.clear()

    def add(self, name: str, value: str) -> None:
        """Add a value for ``name``, keeping the values already there."""
        key = normalize_header_name(name)
        self._last_key = key
        as_list = self._lists()
        values = as_list.get(key)
        if values is None:
            as_list[key] = [value]
            dict.__setitem__(self, key, value)
        else:
            values.append(value)
            self._dirty.add(key)

    def get_list(self, name: str) -> list[str]:
        """Return a new list of the values of ``name``; empty if it is absent."""
        return list(self._lists().get(normalize_header_name(name), ()))

    def get_all(self) -> Iterator[tuple[str, str]]:
        """Yield ``(name, value)`` per value: names by first appearance, values in order."""
        if self._as_list is None:  # one value per name: the dict's own
            yield from dict.items(self)
            return
        for name, values in self._as_list.items():
            for value in values:
                yield name, value

    # -- the dict interface, normalizing every name ---------------------------

    def __getitem__(self, name: str) -> str:
        if self._dirty:
            self._flush()
        return dict.__getitem__(self, normalize_header_name(name))

    def __setitem__(self, name: str, value: str) -> None:
        """Replace every value of ``name`` with ``value``."""
        key = normalize_header_name(name)
        dict.__setitem__(self, key, value)
        if self._as_list is not None:  # (else: still one value per name)
            self._as_list[key] = [value]
            self._dirty.discard(key)

    def __delitem__(self, name: str) -> None:
        key = normalize_header_name(name)
        dict.__delitem__(self, key)
        if self._as_list is not None:
            del self._as_list[key]
            self._dirty.discard(key)
        if self._last_key == key:
            self._last_key = None

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            name = normalize_header_name(name)
        return dict.__contains__(self, name)

    def __iter__(self) -> Iterator[str]:
        # Overriding __iter__ makes CPython's dict merge (dict(h), {**h},
        # f(**h), d.update(h)) go through keys()/__getitem__ instead of copying
        # the raw storage, which may hold a stale join.
        return dict.__iter__(self)

    def get(self, name: str, default: Any = None) -> Any:
        if self._dirty:
            self._flush()
        return dict.get(self, normalize_header_name(name), default)

    def setdefault(self, name: str, default: str = "") -> str:
        key = normalize_header_name(name)
        if key in self._lists():
            return self[key]
        self[key] = default
        return default

    def pop(self, name: str, *default: Any) -> Any:
        key = normalize_header_name(name)
        if key not in self._lists():
            if default:
                return default[0]
            raise KeyError(name)
        value = self[key]
        del self[key]
        return value

    def popitem(self) -> tuple[str, str]:
        as_list = self._lists()
        if not as_list:
            raise KeyError("popitem(): HTTPHeaders is empty")
        key = next(reversed(as_list))
        return key, self.pop(key)

    def clear(self) -> None:
        dict.clear(self)
        self._as_list = {}
        self._dirty.clear()
        self._last_key = None

    def update(self, other: Any = (), /, **kwargs: str) -> None:
        """Set each given name through ``__setitem__``: one value per name."""
        if hasattr(other, "keys"):
            for name in other.keys():
                self[name] = other[name]
        else:
            for name, value in other:
                self[name] = value
        for name, value in kwargs.items():
            self[name] = value

    def __ior__(self, other: Any) -> HTTPHeaders:  # type: ignore[override]
        self.update(other)
        return self

    def __or__(self, other: Any) -> HTTPHeaders:  # type: ignore[override]
        if not isinstance(other, Mapping):
            return NotImplemented
        new = self.copy()
        new.update(other)
        return new

    def items(self) -> ItemsView[str, str]:  # type: ignore[override]
        return ItemsView(self)

    def values(self) -> ValuesView[str]:  # type: ignore[override]
        return ValuesView(self)

    def copy(self) -> HTTPHeaders:
        """Return an independent copy that keeps every value of every name."""
        return type(self)(self)

    __copy__ = copy

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self).from_pairs, (list(self.get_all()),))

    def __eq__(self, other: object) -> bool:
        """Compare as dicts: normalized names and joined values."""
        if self._dirty:
            self._flush()
        if isinstance(other, HTTPHeaders) and other._dirty:
            other._flush()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        # Needed: the inherited dict.__ne__ would compare the raw storage.
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.items())!r})"


class HTTPFile(dict[str, Any]):
    """An uploaded file: ``filename``, ``body`` (bytes) and ``content_type``.

    A dict, so ``f["body"]`` works as it did before Tornado 2.1, and an
    object, so ``f.body`` works as it has since.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            # AttributeError, not KeyError: copy, pickle and hasattr rely on it.
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


# Ints, for ``in`` on bytes: ``b"%" in data`` first tries (and fails) to read
# b"%" as an int, which costs more than the search itself.
_PERCENT = ord("%")
_PLUS = ord("+")


def parse_qs_bytes(
    qs: str | bytes, keep_blank_values: bool = False, max_fields: int = 1000
) -> dict[str, list[bytes]]:
    """``urllib.parse.parse_qs`` with bytes values (``%FF`` -> ``b"\\xff"``).

    Escapes decode as latin-1, one code point per byte, so any charset
    survives for the application to decode; names are latin-1 ``str``, as in
    Tornado. Splits on ``&`` only. Over ``max_fields`` fields (counted from the
    ``&`` before any list is built) raises :class:`HTTPInputError`.
    """
    if isinstance(qs, str):
        try:
            raw = qs.encode("latin-1")
        except UnicodeEncodeError:  # not a latin-1 decoded byte string: treat it as text
            raw = qs.encode("utf-8")
    else:
        raw = bytes(qs)
    if not raw:
        return {}
    if raw.count(b"&") + 1 > max_fields:
        raise HTTPInputError(f"too many fields in query string (limit {max_fields})")
    # urllib.parse.parse_qs's rules (parse_qsl: empty fields skipped, a field
    # without "=" is a blank value, "+" is a space), worked on the bytes: a
    # latin-1 round trip maps each byte to itself, so unquoting the bytes
    # gives what unquoting the latin-1 text and encoding it back gave.
    # Fields with neither "%" nor "+" (most of them) need no unquoting.
    result: dict[str, list[bytes]] = {}
    for field in raw.split(b"&"):
        if not field:
            continue
        name, _, value = field.partition(b"=")
        if not (value or keep_blank_values):
            continue  # a blank value (also when there is no "=")
        if _PERCENT in name or _PLUS in name:
            name = unquote_to_bytes(name.replace(b"+", b" "))
        if _PERCENT in value or _PLUS in value:
            value = unquote_to_bytes(value.replace(b"+", b" "))
        key = name.decode("latin-1")
        values = result.get(key)
        if values is None:
            result[key] = [value]
        else:
            values.append(value)
    return result


# A quoted-string: a quote, then anything but quote/backslash, or a backslash
# pair, then a quote. Written as an unrolled loop: no nested quantifier over the
# same characters, so a failed match backtracks in linear time.
_QUOTED_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SEMI_OR_QUOTE_RE = re.compile(r'[;"]')
_QUOTED_PAIR_RE = re.compile(r'\\([\\"])')


def _split_params(line: str) -> list[str]:
    """Split on ``;`` outside quotes in one pass (``cgi`` recounted quotes per ``;``).

    An unterminated quote runs to the end of the line.
    """
    parts = []
    start = pos = 0
    while True:
        match = _SEMI_OR_QUOTE_RE.search(line, pos)
        if match is None:
            break
        pos = match.start()
        if line[pos] == ";":
            parts.append(line[start:pos])
            start = pos = pos + 1
            continue
        quoted = _QUOTED_RE.match(line, pos)
        if quoted is None:
            break
        pos = quoted.end()
    parts.append(line[start:])
    return parts


def _parse_header(line: str) -> tuple[str, dict[str, str]]:
    """``form-data; name="a;b"`` -> ``("form-data", {"name": "a;b"})``, in linear time.

    Names are lower-cased; quoted values lose the quotes and the escapes
    ``\\\\`` and ``\\"`` only (browsers send Windows paths unescaped).
    """
    parts = _split_params(line)
    key = parts[0].strip()
    params: dict[str, str] = {}
    for part in parts[1:]:
        name, eq, value = part.partition("=")
        if not eq:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = _QUOTED_PAIR_RE.sub(r"\1", value[1:-1])
        params[name.strip().lower()] = value
    return key, params


def parse_multipart_form_data(
    boundary: bytes,
    data: bytes,
    arguments: dict[str, list[bytes]],
    files: dict[str, list[HTTPFile]],
    max_parts: int = 100,
    max_part_header_size: int = 10240,
) -> None:
    """Parse a ``multipart/form-data`` body into ``arguments`` and ``files``.

    The first bad part raises :class:`HTTPInputError` and nothing is added
    (logging and skipping per part let one request flood the log). Parts are
    counted before the body is split, so tiny parts cannot build a huge list.
    """
    if len(boundary) >= 2 and boundary.startswith(b'"') and boundary.endswith(b'"'):
        boundary = boundary[1:-1]
    if not boundary:
        raise HTTPInputError("empty multipart boundary")
    final = data.rfind(b"--" + boundary + b"--")
    if final == -1:
        raise HTTPInputError("multipart body has no closing boundary")
    delimiter = b"--" + boundary + b"\r\n"
    if data.count(delimiter, 0, final) > max_parts:
        raise HTTPInputError(f"too many multipart parts (limit {max_parts})")
    new_args: list[tuple[str, bytes]] = []
    new_files: list[tuple[str, HTTPFile]] = []
    for part in data[:final].split(delimiter):
        if not part:
            continue
        eoh = part.find(b"\r\n\r\n", 0, max_part_header_size + 4)
        if eoh == -1:
            if len(part) > max_part_header_size + 4:
                raise HTTPInputError(
                    f"multipart part headers too large (limit {max_part_header_size})"
                )
            raise HTTPInputError("multipart part has no header/body separator")
        raw_headers = part[:eoh]
        if raw_headers.count(b"\r") != raw_headers.count(b"\r\n"):
            raise HTTPInputError("bare CR in multipart part headers")
        try:
            headers = HTTPHeaders.parse(raw_headers.decode("utf-8"))
        except UnicodeDecodeError:
            raise HTTPInputError("multipart part headers are not UTF-8") from None
        disposition, params = _parse_header(headers.get("Content-Disposition", ""))
        # The body must be followed by the CRLF that precedes the next delimiter.
        if disposition.lower() != "form-data" or len(part) < eoh + 6 or not part.endswith(b"\r\n"):
            raise HTTPInputError("invalid multipart/form-data part")
        name = params.get("name")
        if not name:
            raise HTTPInputError("multipart/form-data part without a name")
        value = part[eoh + 4 : -2]
        filename = params.get("filename")
        if filename:
            content_type = headers.get("Content-Type") or "application/unknown"
            new_files.append(
                (name, HTTPFile(filename=filename, body=value, content_type=content_type))
            )
        else:
            new_args.append((name, value))
    for name, value in new_args:
        arguments.setdefault(name, []).append(value)
    for name, file in new_files:
        files.setdefault(name, []).append(file)


def parse_body_arguments(
    content_type: str,
    body: bytes,
    arguments: dict[str, list[bytes]],
    files: dict[str, list[HTTPFile]],
    headers: HTTPHeaders | None = None,
    max_fields: int = 1000,
    max_parts: int = 100,
) -> None:
    """Parse an urlencoded or multipart form body; leave any other type alone.

    A form body with a ``Content-Encoding`` is rejected: parsed as a form,
    compressed bytes would silently yield garbage.
    """
    lowered = content_type.lstrip().lower()
    is_urlencoded = lowered.startswith("application/x-www-form-urlencoded")
    is_multipart = lowered.startswith("multipart/form-data")
    if not (is_urlencoded or is_multipart):
        return
    if headers is not None:
        encoding = headers.get("Content-Encoding")
        if encoding and encoding.strip(_HTTP_WS).lower() != "identity":
            raise HTTPInputError(f"unsupported Content-Encoding on a form body: {encoding[:100]!r}")
    if is_urlencoded:
        parsed = parse_qs_bytes(body, keep_blank_values=False, max_fields=max_fields)
        for name, values in parsed.items():
            arguments.setdefault(name, []).extend(values)
        return
    for field in content_type.split(";")[1:]:
        key, eq, value = field.strip().partition("=")
        if eq and key.strip().lower() == "boundary":
            if value:
                parse_multipart_form_data(value.encode("utf-8"), body, arguments, files, max_parts)
                return
            break
    raise HTTPInputError("multipart/form-data without a boundary")


def url_concat(url: str, args: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> str:
    """``url`` with ``args`` added to its query (tornado's ``url_concat``):
    ``url_concat("/a?x=1", {"y": "2"})`` is ``/a?x=1&y=2``."""
    if not args:
        return url
    from urllib.parse import urlencode

    pairs = list(args.items()) if isinstance(args, Mapping) else list(args)
    if not pairs:
        return url
    separator = "&" if "?" in url and not url.endswith(("?", "&")) else ""
    if "?" not in url:
        separator = "?"
    return url + separator + urlencode(pairs)
