"""Feed bytes -> FeedEntry records, and HTML -> plain text; no network, no state.

    parse_feed()     feedparser over the bytes of an RSS/Atom feed, plus the DealNews
                     namespaced fields (`dealnews:price`, `dealnews:retailer`/`store`,
                     `dealnews:category`) read with a namespace-agnostic expat pass,
                     because feedparser drops the text of a namespaced element that has
                     attributes (`<dealnews:price currency="USD">7.46</dealnews:price>`)
                     and some DealNews wrappers do not declare the namespace at all
    canonical_url()  re-exported from deals.framework.urls (w3lib canonicalisation, tracking
    entry_key()      parameters dropped; the key ignores http/https, www. and a trailing slash)
    parse_price()    "$29.99", "29.99", "1,299", "Free" -> float; anything else -> None
    html_to_text()   readable plain text of an HTML fragment (selectolax's lexbor parser:
                     C, linear time, at most MAX_HTML_CHARS of markup per field or page),
                     `dealnews_snippets()` for the summary/features blocks, `page_text()`
                     for a fetched deal page

Hostile text is defused here: control characters and bidi overrides are stripped from
every field (deals.framework.text), feedparser's own HTML sanitizer (slow on hostile
markup, and pointless: HTML becomes plain text here) is off, and each field's markup is
cut to MAX_HTML_CHARS before it is parsed.

Prices are taken only from fields that state one; prices written in titles or text are
the scanner's business.
"""

from __future__ import annotations

import html
import io
import logging
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from xml.parsers import expat

import feedparser
from pydantic import BaseModel, Field
from selectolax.lexbor import LexborHTMLParser, LexborNode

from deals.agents.money import stated_price
from deals.framework.errors import FetchError
from deals.framework.models import FeedEntry
from deals.framework.text import strip_controls
from deals.framework.urls import TRACKING_PARAMS, TRACKING_PREFIXES, canonical_url, entry_key

log = logging.getLogger("deals.agents.rss_reader")

# --------------------------------------------------------------------------- prices

def parse_price(text: str | None, currency: str | None = None) -> float | None:
    """A price stated in a field: "$29.99", "29.99", "1,299.00", "Free" (0.0); else None (see `money.stated_price`)."""
    return stated_price(text, currency)


# --------------------------------------------------------------------------- HTML -> text

MAX_HTML_CHARS = 65_536
"""Markup handed to the HTML parser per feed field and per page, at most (the rest is dropped)."""

_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure",
        "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p",
        "pre", "section", "table", "tbody", "thead", "tr", "ul",
    }
)  # fmt: skip
_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object", "head", "title"})
_PAGE_SKIP = _SKIP | {"nav", "header", "footer", "aside", "form", "button", "select", "dialog"}


def parse_html(markup: str) -> LexborHTMLParser:
    """The lexbor (selectolax) tree of at most MAX_HTML_CHARS of `markup`: linear time, C speed."""
    return LexborHTMLParser(markup[:MAX_HTML_CHARS])


def node_text(node: LexborNode | None, skip: frozenset[str] = _SKIP) -> str:
    """Plain text of a subtree: one line per block, whitespace folded, controls stripped, empty lines dropped."""
    if node is None:
        return ""
    lines: list[str] = []
    current: list[str] = []

    def flush() -> None:
        line = " ".join("".join(current).split())
        if line:
            lines.append(line)
        current.clear()

    # iterative walk (deeply nested pages must not hit the recursion limit)
    stack: list[tuple[LexborNode, bool]] = [(node, True)]
    while stack:
        item, entering = stack.pop()
        tag = item.tag or ""
        if tag == "-text":
            current.append(item.text_content or "")
        elif not entering:
            if tag in _BLOCK:
                flush()
            elif tag in ("td", "th"):
                current.append(" ")
        elif item is node or (tag not in skip and not tag.startswith("-")):
            if tag in _BLOCK:
                flush()
            stack.append((item, False))
            stack.extend((child, True) for child in reversed(list(item.iter(include_text=True))))
    flush()
    return strip_controls("\n".join(lines))


def html_to_text(markup: str) -> str:
    """Readable plain text of an HTML fragment (scripts, styles and images dropped)."""
    tree = parse_html(markup)
    return node_text(tree.body or tree.root)


def dealnews_snippets(markup: str) -> tuple[str, str] | None:
    """(summary, details) from DealNews' `div.snippet.summary` / `div.snippet.features`, if present.

    The details are the feature list items, one per line (without the "Features" header).
    """
    tree = parse_html(markup)
    summary = tree.css_first("div.snippet.summary")
    features = tree.css_first("div.snippet.features")
    if summary is None and features is None:
        return None
    details = ""
    if features is not None:
        items = [node_text(li) for li in features.css("li")]
        if any(items):
            details = "\n".join(item for item in items if item)
        else:
            for header in features.css(".content-section-header"):
                header.decompose()
            details = node_text(features)
    return node_text(summary), details


_META_CHARSET = re.compile(rb"""<meta[^>]+charset=["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def decode_html(content: bytes, charset: str | None = None) -> str:
    """Bytes of an HTML page -> str: the HTTP charset, else a <meta charset>, else UTF-8 (lenient)."""
    candidates = [charset] if charset else []
    match = _META_CHARSET.search(content[:4096])
    if match:
        candidates.append(match.group(1).decode("ascii", "replace"))
    for name in [*candidates, "utf-8"]:
        try:
            return content.decode(name, errors="replace")
        except LookupError:
            continue
    return content.decode("utf-8", errors="replace")


def truncate_text(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at a word boundary, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - 1)]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def page_text(content: bytes, *, charset: str | None = None, limit: int = 2000) -> str:
    """Readable text of a deal page: title, meta description, then the main text; at most `limit` chars.

    Only the first MAX_HTML_CHARS characters of the page are parsed.
    """
    tree = parse_html(decode_html(content[: MAX_HTML_CHARS * 4], charset))
    title_node = tree.css_first("title")
    title = node_text(title_node, skip=frozenset()) if title_node is not None else ""
    description = ""
    for selector in ('meta[name="description"]', 'meta[property="og:description"]', 'meta[name="twitter:description"]'):
        meta = tree.css_first(selector)
        content_attr = (meta.attributes.get("content") or "") if meta is not None else ""
        if content_attr.strip():
            description = strip_controls(" ".join(html.unescape(content_attr).split()))
            break
    main = tree.css_first("main") or tree.css_first("article") or tree.css_first('[role="main"]') or tree.body or tree.root
    body = node_text(main, skip=_PAGE_SKIP)
    parts = [title] if title else []
    if description and description != title:
        parts.append(description)
    if body:
        parts.append(body)
    return truncate_text("\n".join(parts), limit)


# --------------------------------------------------------------------------- feeds

DEALNEWS_NAMESPACE_HINT = "dealnews.com"
_ITEM_TAGS = frozenset({"item", "entry"})
# bozo reasons that say nothing about the document itself (a server's Content-Type, or an
# encoding declared one way and served another): not worth a warning when entries were read
_BENIGN_BOZO = (feedparser.NonXMLContentType, feedparser.CharacterEncodingOverride)


class ParsedFeed(BaseModel):
    """What one feed document held."""

    entries: list[FeedEntry] = Field(description="in document order, not yet capped or sorted")
    warning: str | None = Field(None, description="set when the document was not well-formed (feedparser bozo)")
    skipped: int = Field(0, description="entries dropped because they had no usable link/guid or title")


def _raw_items(
    content: bytes, encoding: str | None = None
) -> tuple[list[dict[str, tuple[str, dict[str, str]]]], dict[str, str]] | None:
    """Direct children of every <item>/<entry> as {tag: (text, attrs)}, and the root's xmlns map.

    Expat without namespace processing: prefixed names stay as written, so a wrapper that
    never declares its prefixes still parses. None when the document is not well-formed XML.
    """
    items: list[dict[str, tuple[str, dict[str, str]]]] = []
    namespaces: dict[str, str] = {}
    depth = 0
    item_depth = 0
    current: dict[str, tuple[str, dict[str, str]]] | None = None
    child: tuple[str, dict[str, str]] | None = None
    text: list[str] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth, item_depth, current, child
        depth += 1
        if depth == 1:
            namespaces.update({k[6:]: v for k, v in attrs.items() if k.startswith("xmlns:")})
        local = name.rsplit(":", 1)[-1].lower()
        if current is None and local in _ITEM_TAGS and ":" not in name:
            current, item_depth = {}, depth
        elif current is not None and depth == item_depth + 1:
            child = (name.lower(), dict(attrs))
            text.clear()

    def end(name: str) -> None:
        nonlocal depth, current, child
        if current is not None and child is not None and depth == item_depth + 1:
            current.setdefault(child[0], ("".join(text).strip(), child[1]))
            child = None
        elif current is not None and depth == item_depth:
            items.append(current)
            current = None
        depth -= 1

    def chars(data: str) -> None:
        if child is not None:
            text.append(data)

    parser = expat.ParserCreate(encoding)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(content, True)
    except LookupError:  # an encoding Python does not know: read it as UTF-8, as feedparser does
        return None if encoding else _raw_items(content, "utf-8")
    except (expat.ExpatError, ValueError):
        return None
    return items, namespaces


def _dealnews_prefix(namespaces: Mapping[str, str]) -> str:
    for prefix, uri in namespaces.items():
        if DEALNEWS_NAMESPACE_HINT in uri.lower():
            return prefix.lower()
    return "dealnews"


def _clean(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    cleaned = " ".join(strip_controls(html.unescape(value[:MAX_HTML_CHARS])).split())
    return cleaned or None


def _published(entry: Mapping[str, object]) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed = entry.get(key)
        if parsed:
            try:
                return datetime(*parsed[:6], tzinfo=timezone.utc)  # type: ignore[index,misc]
            except (TypeError, ValueError):
                continue
    return None


def _description(entry: Mapping[str, object]) -> str:
    content = entry.get("content")
    if isinstance(content, list) and content and isinstance(content[0], Mapping) and content[0].get("value"):
        # Atom <content> is usually the fuller text; RSS <description> is `summary`.
        summary = entry.get("summary")
        value = str(content[0]["value"])
        return value if not isinstance(summary, str) or len(value) >= len(summary) else summary
    summary = entry.get("summary")
    return summary if isinstance(summary, str) else ""


def _to_entry(
    entry: Mapping[str, object], extras: Mapping[str, tuple[str, dict[str, str]]], dn: str, feed_url: str
) -> FeedEntry:
    link_value = entry.get("link")
    link = link_value if isinstance(link_value, str) else None
    guid_value = entry.get("id")
    guid = guid_value if isinstance(guid_value, str) else None
    key = entry_key(guid, link)
    url = canonical_url(link) if link and link.strip().lower().startswith(("http://", "https://")) else None
    if url is None:
        if not key.startswith("http"):
            raise ValueError("entry has no http(s) link")
        url = key

    description = _description(entry)
    snippets = dealnews_snippets(description) if "snippet" in description else None
    summary, details = snippets if snippets else (html_to_text(description), "")

    title = _clean(entry.get("title")) or (summary.split("\n", 1)[0][:200] if summary else None)
    if not title:
        raise ValueError("entry has no title and no text")

    def field(name: str) -> tuple[str | None, dict[str, str]]:
        raw = extras.get(f"{dn}:{name}")
        if raw is not None:
            return raw[0], raw[1]
        value = entry.get(f"dealnews_{name}")
        return (value if isinstance(value, str) else None), {}

    price_text, price_attrs = field("price")
    price = parse_price(price_text, price_attrs.get("currency"))
    retailer = _clean(field("retailer")[0]) or _clean(field("store")[0]) or _clean(entry.get("vendorname"))
    category = _clean(field("category")[0])
    if category is None:
        tags = entry.get("tags")
        if isinstance(tags, list) and tags and isinstance(tags[0], Mapping):
            category = _clean(tags[0].get("term"))

    return FeedEntry(
        key=key,
        feed_url=feed_url,
        title=title,
        url=url,
        summary=summary,
        details=details,
        price=price,
        retailer=retailer,
        category=category,
        published=_published(entry),
    )


def parse_feed(content: bytes, *, feed_url: str, headers: Mapping[str, str] | None = None) -> ParsedFeed:
    """Parse an RSS/Atom document into FeedEntry records (document order).

    A document that is not well-formed is accepted when entries were found (with a
    warning); FetchError when it is not a feed, or is broken and yields no entries.
    """
    response_headers = {k.lower(): v for k, v in (headers or {}).items()}
    response_headers.setdefault("content-location", feed_url)
    # A stream, never raw bytes: feedparser would try bytes as a local file name first.
    parsed = feedparser.parse(
        io.BytesIO(content), response_headers=response_headers, sanitize_html=False, resolve_relative_uris=False
    )
    entries = list(parsed.get("entries") or [])
    problem = parsed.get("bozo_exception") if parsed.get("bozo") else None
    if not entries:
        if problem is not None:
            raise FetchError(f"{feed_url} is not a readable feed: {type(problem).__name__}: {problem}")
        if not parsed.get("version"):
            raise FetchError(f"{feed_url} is not an RSS or Atom feed")
        return ParsedFeed(entries=[])

    raw = _raw_items(content)
    raw_items, namespaces = raw if raw is not None else ([], {})
    dn = _dealnews_prefix(namespaces)
    if len(raw_items) != len(entries):
        by_id = {}
        for item in raw_items:
            for tag in ("guid", "id", "link"):
                if tag in item and item[tag][0]:
                    by_id.setdefault(item[tag][0], item)
        raw_items = [by_id.get(str(e.get("id") or e.get("link") or ""), {}) for e in entries]

    out: list[FeedEntry] = []
    skipped = 0
    for entry, extras in zip(entries, raw_items, strict=True):
        try:
            out.append(_to_entry(entry, extras, dn, feed_url))
        except ValueError as exc:  # includes pydantic ValidationError
            skipped += 1
            log.info("feed %s: skipped an entry (%s)", feed_url, str(exc).splitlines()[0])
    warning = None
    if problem is not None and not isinstance(problem, _BENIGN_BOZO):
        warning = f"not well-formed ({type(problem).__name__}: {problem})"
    return ParsedFeed(entries=out, warning=warning, skipped=skipped)


__all__ = [
    "TRACKING_PARAMS",
    "TRACKING_PREFIXES",
    "ParsedFeed",
    "canonical_url",
    "dealnews_snippets",
    "entry_key",
    "html_to_text",
    "page_text",
    "parse_feed",
    "parse_html",
    "parse_price",
]
