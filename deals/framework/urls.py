"""URLs of deals: the link we show, and the key that says two links are one deal.

    canonical_url(url)    the link as stored and texted: w3lib's `canonicalize_url` (percent-
                          encoding normalised, query sorted, fragment dropped) after user
                          info, the default port and tracking parameters (TRACKING_PARAMS,
                          TRACKING_PREFIXES) are removed; scheme and host lower-cased
    dedupe_key(url)       what identifies a deal across feeds and restarts: the canonical
                          URL without the difference between http and https, a leading
                          "www." and a trailing slash, so those variants of one deal's link
                          give one deal and one SMS
    entry_key(guid, link) a feed entry's identity: the dedupe key of its guid when that is an
                          http(s) URL (a stable permalink), else of its link, else "guid:..."
    redact_url(url)       the URL as shown to people: user info and secret-looking query
                          values (key, token, sig, password...) as ***
    redact_urls_in(text)  every http(s) URL in a text (an error, a command line) through it

Keys are stored (seen entries, deals): changing `dedupe_key` needs a migration that adds
the new form of the stored keys (see m007 in deals.memory.migrations).
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from w3lib.url import canonicalize_url

from deals.framework.dburl import redact

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
)  # fmt: skip
"""Query parameters (compared lower-case) that identify where a click came from, not what it shows."""

TRACKING_PREFIXES: tuple[str, ...] = ("utm_", "pk_", "mtm_", "ga_")
"""Query parameter prefixes dropped as tracking (Google Analytics utm_*, Matomo pk_*/mtm_*)."""

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _is_tracking(name: str) -> bool:
    name = name.lower()
    return name in TRACKING_PARAMS or name.startswith(TRACKING_PREFIXES)


def canonical_url(url: str) -> str:
    """The canonical form of an http(s) URL (see the module docstring); ValueError for anything else."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    host = parts.hostname.lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in URL {url!r}") from exc
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    pairs = [p for p in re.split(r"[&;]", parts.query) if p]
    kept = [p for p in pairs if not _is_tracking(unquote_plus(p.split("=", 1)[0]))]
    cleaned = urlunsplit(SplitResult(scheme, netloc, parts.path or "/", "&".join(kept), ""))
    return canonicalize_url(cleaned, keep_fragments=False)


def dedupe_key(url: str) -> str:
    """The key of the deal behind `url`: http/https, "www." and a trailing slash do not matter."""
    parts = urlsplit(canonical_url(url))
    host = parts.netloc.removeprefix("www.")
    path = parts.path.rstrip("/") or "/"
    return urlunsplit(SplitResult("https", host, path, parts.query, ""))


def entry_key(guid: str | None, link: str | None) -> str:
    """An entry's identity: the dedupe key of its guid when that is an http(s) URL, else of its link.

    A guid that is not a URL (OzBargain's "751576 at https://...") is used only when the
    entry has no usable link. ValueError when neither gives a key.
    """
    for candidate in (guid, link):
        if candidate and candidate.strip().lower().startswith(("http://", "https://")):
            try:
                return dedupe_key(candidate)
            except ValueError:
                continue
    if guid and guid.strip():
        return "guid:" + " ".join(guid.split())
    raise ValueError("entry has neither a guid nor an http(s) link")


SECRET_NAME = re.compile(r"(token|secret|password|passwd|api_?key|auth|credential|sid)$", re.I)
"""Setting and query parameter names whose values are secrets."""


def redact_url(value: str) -> str:
    """The URL with its user info and secret-looking query values (key, token, sig...) as ***."""
    try:
        parts = urlsplit(value)
    except ValueError:  # not a URL urllib can split (a typo in a setting): still no password shown
        return redact(value)
    if not parts.scheme or not parts.netloc:
        return value
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = urlencode([(k, "***" if SECRET_NAME.search(k) or k.lower() in ("key", "sig", "signature") else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)])  # fmt: skip
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>]+")


def redact_urls_in(text: str) -> str:
    """`text` (an error message, say) with every URL in it through `redact_url`."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


__all__ = ["SECRET_NAME", "TRACKING_PARAMS", "TRACKING_PREFIXES", "canonical_url", "dedupe_key", "entry_key", "redact_url", "redact_urls_in"]
