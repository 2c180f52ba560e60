"""Feed bytes -> FeedEntry records, and HTML -> plain text; no network, no state.

    parse_feed()     feedparser over the bytes of an RSS/Atom feed, plus the DealNews
                     namespaced fields (`dealnews:price`, `dealnews:retailer`/`store`,
                     `dealnews:category`) read with a namespace-agnostic expat pass,
                     because feedparser drops the text of a namespaced element that has
                     attributes (`<dealnews:price currency="USD">7.46</dealnews:price>`)
                     and some DealNews wrappers do not declare the namespace at all
    canonical_url()  scheme/host lower-cased, default port and fragment dropped, tracking
                     parameters removed (TRACKING_PARAMS, TRACKING_PREFIXES), the rest sorted
    entry_key()      the guid when it is an http(s) URL (a stable permalink), else the link
    parse_price()    "$29.99", "29.99", "1,299", "Free" -> float; anything else -> None
    html_to_text()   readable plain text of an HTML fragment (stdlib html.parser; BeautifulSoup
                     is not installed), `dealnews_snippets()` for the summary/features blocks,
                     `page_text()` for a fetched deal page

Prices are taken only from fields that state one; prices written in titles or text are
the scanner's business.
"""

from __future__ import annotations

import html
import io
import logging
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from html.parser import HTMLParser
from urllib.parse import SplitResult, unquote_plus, urlsplit, urlunsplit
from xml.parsers import expat

import feedparser
from pydantic import BaseModel, Field

from deals.framework.errors import FetchError
from deals.framework.models import FeedEntry

log = logging.getLogger("deals.agents.rss_reader")

# --------------------------------------------------------------------------- canonical URLs

TRACKING_PARAMS: frozenset[str] = frozenset(
    {
        "iref",  # DealNews: per-feed source (iref=rss-c142, iref=rss-f1912)
        "ref", "ref_", "referrer", "source", "src",
        "cmpid", "cmp", "campaign",
        "fbclid", "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid", "ttclid",
        "igshid", "li_fat_id", "epik",
        "mc_cid", "mc_eid",  # Mailchimp
        "_hsenc", "_hsmi", "hsctatracking",  # HubSpot
        "mkt_tok",  # Marketo
        "_ga", "_gl",
        "spm", "scm",
        "sr_share", "share",
    }
)
"""Query parameters (compared lower-case) that identify where a click came from, not what it shows."""

TRACKING_PREFIXES: tuple[str, ...] = ("utm_", "pk_", "mtm_", "ga_")
"""Query parameter prefixes dropped as tracking (Google Analytics utm_*, Matomo pk_*/mtm_*)."""

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _is_tracking(name: str) -> bool:
    name = name.lower()
    return name in TRACKING_PARAMS or name.startswith(TRACKING_PREFIXES)


def canonical_url(url: str) -> str:
    """The canonical form of an http(s) URL; ValueError for anything else.

    Scheme and host lower-cased, default port, user info and fragment dropped, an empty
    path made "/", tracking parameters removed and the remaining ones sorted (their
    encoding is kept as written).
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in URL {url!r}") from exc
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    pairs = [p for p in re.split(r"[&;]", parts.query) if p]
    kept = sorted(p for p in pairs if not _is_tracking(unquote_plus(p.split("=", 1)[0])))
    return urlunsplit(SplitResult(scheme, netloc, parts.path or "/", "&".join(kept), ""))


def entry_key(guid: str | None, link: str | None) -> str:
    """An entry's identity: its guid when that is an http(s) URL, else its link (both canonical).

    A guid that is not a URL (OzBargain's "751576 at https://...") is used only when the
    entry has no usable link. ValueError when neither gives a key.
    """
    for candidate in (guid, link):
        if candidate and candidate.strip().lower().startswith(("http://", "https://")):
            try:
                return canonical_url(candidate)
            except ValueError:
                continue
    if guid and guid.strip():
        return "guid:" + " ".join(guid.split())
    raise ValueError("entry has neither a guid nor an http(s) link")


# --------------------------------------------------------------------------- prices

_PRICE = re.compile(r"^(?:US\$|USD|\$)?\s*(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*(?:USD)?$", re.IGNORECASE)


def parse_price(text: str | None, currency: str | None = None) -> float | None:
    """A price stated in a field: "$29.99", "29.99", "1,299.00", "Free" (0.0); else None.

    A currency attribute other than USD gives None (prices are USD).
    """
    if text is None:
        return None
    if currency and currency.strip().upper() not in ("USD", "US$", "$"):
        return None
    value = " ".join(html.unescape(text).split())
    if value.lower() in ("free", "$0", "0"):
        return 0.0
    match = _PRICE.match(value)
    if not match:
        return None
    return float(match.group(1).replace(",", "") + (match.group(2) or ""))


# --------------------------------------------------------------------------- HTML -> text

_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
)
_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure",
        "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p",
        "pre", "section", "table", "tbody", "thead", "tr", "ul",
    }
)
_CLOSES_P = _BLOCK - {"br", "tr", "tbody", "thead", "li", "dd", "dt"}
_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object", "head", "title"})
_PAGE_SKIP = _SKIP | {"nav", "header", "footer", "aside", "form", "button", "select", "dialog"}


class Node:
    """An element of a leniently built HTML tree."""

    __slots__ = ("tag", "attrs", "children", "parent")

    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag = tag
        self.attrs = attrs
        self.children: list[Node | str] = []
        self.parent = parent

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def iter(self) -> Iterator[Node]:
        """This node and every element below it, in document order."""
        stack: list[Node] = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(child for child in reversed(node.children) if isinstance(child, Node))

    def find(self, tag: str | None = None, classes: set[str] | None = None, **attrs: str) -> Node | None:
        for node in self.iter():
            if tag is not None and node.tag != tag:
                continue
            if classes and not classes <= node.classes:
                continue
            if any(node.attrs.get(k, "").lower() != v for k, v in attrs.items()):
                continue
            return node
        return None


class _TreeBuilder(HTMLParser):
    """html.parser -> Node tree, tolerant of unclosed and stray tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.current = self.root

    def _open(self, tag: str) -> Node | None:
        node: Node | None = self.current
        while node is not None and node is not self.root:
            if node.tag == tag:
                return node
            node = node.parent
        return None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _CLOSES_P and (p := self._open("p")) is not None and p.parent is not None:
            self.current = p.parent
        if tag == "li" and self.current.tag == "li" and self.current.parent is not None:
            self.current = self.current.parent
        node = Node(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(node)
        if tag not in _VOID:
            self.current = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.current))

    def handle_endtag(self, tag: str) -> None:
        node = self._open(tag)
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def parse_html(markup: str) -> Node:
    """A lenient element tree of an HTML document or fragment."""
    builder = _TreeBuilder()
    builder.feed(markup)
    builder.close()
    return builder.root


def node_text(node: Node, skip: frozenset[str] = _SKIP) -> str:
    """Plain text of a subtree: one line per block, whitespace folded, empty lines dropped."""
    lines: list[str] = []
    current: list[str] = []

    def flush() -> None:
        line = " ".join("".join(current).split())
        if line:
            lines.append(line)
        current.clear()

    # iterative walk (deeply nested pages must not hit the recursion limit)
    stack: list[tuple[Node | str, bool]] = [(node, True)]
    while stack:
        item, entering = stack.pop()
        if isinstance(item, str):
            current.append(item)
        elif not entering:
            if item.tag in _BLOCK:
                flush()
            elif item.tag in ("td", "th"):
                current.append(" ")
        elif item is node or item.tag not in skip:
            if item.tag in _BLOCK:
                flush()
            if item.tag not in _VOID:
                stack.append((item, False))
                stack.extend((child, True) for child in reversed(item.children))
    flush()
    return "\n".join(lines)


def html_to_text(markup: str) -> str:
    """Readable plain text of an HTML fragment (scripts, styles and images dropped)."""
    return node_text(parse_html(markup))


def dealnews_snippets(markup: str) -> tuple[str, str] | None:
    """(summary, details) from DealNews' `div.snippet.summary` / `div.snippet.features`, if present.

    The details are the feature list items, one per line (without the "Features" header).
    """
    root = parse_html(markup)
    summary = root.find("div", {"snippet", "summary"})
    features = root.find("div", {"snippet", "features"})
    if summary is None and features is None:
        return None
    details = ""
    if features is not None:
        items = [node_text(li) for li in features.iter() if li.tag == "li"]
        if any(items):
            details = "\n".join(item for item in items if item)
        else:
            header = features.find(classes={"content-section-header"})
            if header is not None and header.parent is not None:
                header.parent.children.remove(header)
            details = node_text(features)
    return (node_text(summary) if summary is not None else ""), details


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
    """Readable text of a deal page: title, meta description, then the main text; at most `limit` chars."""
    root = parse_html(decode_html(content, charset))
    title_node = root.find("title")
    title = node_text(title_node, skip=frozenset()) if title_node is not None else ""
    description = ""
    for attrs in ({"name": "description"}, {"property": "og:description"}, {"name": "twitter:description"}):
        meta = root.find("meta", **attrs)
        if meta is not None and meta.attrs.get("content", "").strip():
            description = " ".join(html.unescape(meta.attrs["content"]).split())
            break
    main = root.find("main") or root.find("article") or root.find(role="main") or root.find("body") or root
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


def _raw_items(content: bytes) -> tuple[list[dict[str, tuple[str, dict[str, str]]]], dict[str, str]] | None:
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

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(content, True)
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
    cleaned = " ".join(html.unescape(value).split())
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
    parsed = feedparser.parse(io.BytesIO(content), response_headers=response_headers)
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
