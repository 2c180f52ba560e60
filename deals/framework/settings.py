"""Every setting of `deals`: typed models with their defaults, in one place.

Sources, later ones winning:

1. the defaults below (the repository's `config.yaml` is rendered from them and a test
   keeps the two identical: `deals config --defaults > config.yaml`);
2. one YAML file: `--config PATH`, else `$DEALS_CONFIG`, else `$DEALS_HOME/config.yaml`
   when it exists;
3. environment variables `DEALS_<SECTION>__<KEY>` (values parsed as YAML, e.g.
   `DEALS_KNN__K=7`, `DEALS_FEEDS__URLS='[http://a, http://b]'`).

The file and the variables are read as YAML whose scalars all stay text (only `null`/`~`
and empty mean "not set"); the typed models below turn text into numbers and booleans.
So `+15551234567` stays a phone number and `22:00` a time of day, where plain YAML 1.1
would have read the integers 15551234567 and 1320. Phone numbers must be E.164 (checked
with `phonenumbers`, stored in E.164 form); feed URLs must be http(s); every `min`/`max`
pair must be in order; numbers must be finite.

Secrets (API keys, Twilio credentials) are never settings: they are read from their
usual environment variables by the code that needs them and never logged.
A bad value raises `ConfigError` naming the dotted key and the file or variable.
"""

from __future__ import annotations

import os
import re
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_serializer, model_validator

from deals.framework import paths
from deals.framework.dburl import redact, sqlite_path
from deals.framework.errors import ConfigError

ENV_PREFIX = "DEALS_"
CONFIG_ENV = "DEALS_CONFIG"


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors, values are validated, numbers finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def e164(value: str) -> str:
    """A phone number in E.164 form ('+15551234567'); ValueError for anything else."""
    import phonenumbers

    text = str(value).strip()
    if not text.startswith("+"):
        raise ValueError(f"{text!r} is not an E.164 phone number (+ country code and number, e.g. +15551234567)")
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{text!r} is not a phone number: {exc}") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError(f"{text!r} is not a possible phone number (wrong length for its country code)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def check_feed_url(value: str) -> str:
    """An absolute http(s) URL with a host; ValueError for anything else."""
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{text!r} is not an http(s) URL")
    return text


def _in_order(low: float, high: float, names: tuple[str, str]) -> None:
    if low > high:
        raise ValueError(f"{names[0]} ({low:g}) must not be above {names[1]} ({high:g})")


Phone = Annotated[str, AfterValidator(e164)]
FeedURL = Annotated[str, AfterValidator(check_feed_url)]


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level of the daemon and the CLI")
    json_logs: bool = Field(False, description="emit one JSON object per log line (for journald/log shippers)")


class EmbeddingSettings(Section):
    model: str = Field(
        "all-MiniLM-L6-v2",
        description="sentence-transformers model: 'all-MiniLM-L6-v2' (bundled, no download) or a local path",
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    batch_size: int = Field(64, ge=1, le=4096, description="texts encoded per batch")
    max_seq_length: int = Field(256, ge=16, le=512, description="word pieces kept per text when embedding")


class VectorSettings(Section):
    url: str | None = Field(None, description="Chroma server URL (e.g. http://localhost:8000); null = embedded store under DEALS_HOME")
    collection: str = Field("products", min_length=3, description="Chroma collection holding the priced catalogue")
    batch_size: int = Field(512, ge=1, le=5000, description="products written to the store per batch")
    auto_starter: bool = Field(True, description="build the bundled starter catalogue index when the index is empty")


class DataSettings(Section):
    min_price: float = Field(0.5, ge=0, description="curation: drop products cheaper than this (USD)")
    max_price: float = Field(10_000.0, gt=0, description="curation: drop products dearer than this (USD)")
    min_chars: int = Field(60, ge=0, description="curation: drop products whose cleaned text is shorter")
    max_tokens: int = Field(180, ge=8, description="curation: truncate texts to this many word pieces")
    seed: int = Field(42, description="seed of the deterministic train/validation/test split")
    validation_fraction: float = Field(0.1, ge=0, lt=1, description="share of products held out for validation")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="share of products held out for test")

    @model_validator(mode="after")
    def _check(self) -> DataSettings:
        if self.min_price >= self.max_price:
            raise ValueError("min_price must be below max_price")
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError("validation_fraction + test_fraction must be below 1")
        return self


class KnnSettings(Section):
    k: int = Field(10, ge=1, le=200, description="neighbours combined per estimate")
    weighting: Literal["softmax", "inverse", "uniform"] = Field(
        "softmax", description="neighbour weights: softmax of similarity, inverse distance, or equal"
    )
    temperature: float = Field(0.05, gt=0, description="softmax temperature over cosine similarity (lower = trust the closest more)")


class PricingSettings(Section):
    pricer: Literal["knn", "constant", "ridge", "local", "frontier", "specialist", "ensemble"] = Field(
        "ensemble", description="pricer the daemon and `deals price` use"
    )
    min_estimate: float = Field(0.5, gt=0, description="estimates are clamped to at least this (USD)")
    max_estimate: float = Field(10_000.0, gt=0, description="estimates are clamped to at most this (USD)")
    interval_level: float = Field(
        0.8, gt=0, le=0.9,
        description="coverage of the interval shown with every estimate (0.8 = 80%; at most 0.9: the distributions "
        "are measured from the 5% to the 95% quantile)",
    )  # fmt: skip

    @model_validator(mode="after")
    def _check(self) -> PricingSettings:
        _in_order(self.min_estimate, self.max_estimate, ("min_estimate", "max_estimate"))
        return self


class EvaluationSettings(Section):
    hit_abs: float = Field(40.0, ge=0, description="a hit: error within this many dollars ...")
    hit_rel: float = Field(0.2, ge=0, description="... or within this share of the true price")
    near_factor: float = Field(2.0, ge=1, description="'near' (plots): within this multiple of the hit thresholds")
    limit: int | None = Field(None, ge=1, description="default number of items evaluated (null = all)")


class FrontierSettings(Section):
    llm: LLMSettings | None = Field(None, description="provider/model for the frontier pricer; null = the shared `llm` section")
    k: int = Field(5, ge=0, le=50, description="similar catalogue products given to the LLM as context")
    max_tokens: int = Field(64, ge=8, le=4096, description="longest answer asked of the LLM")
    cache: bool = Field(True, description="reuse a stored estimate for the same description, model and prompt version")
    concurrency: int = Field(4, ge=1, le=64, description="LLM calls in flight at once per batch")


class SpecialistSettings(Section):
    adapter: str | None = Field(None, description="trained output directory (adapter); null = DEALS_HOME/models/specialist if present")
    base_url: str | None = Field(None, description="OpenAI-compatible server serving the adapter (e.g. vLLM); null = in-process")
    model: str = Field("pricer", description="model (LoRA module) name at that server")
    device: str = Field("auto", description="in-process device: 'auto', 'cpu', 'cuda' or 'cuda:N'")
    batch_size: int = Field(8, ge=1, le=256, description="descriptions priced per forward pass in-process")
    decoding: Literal["greedy", "expected"] = Field(
        "expected", description="greedy digits, or a probability-weighted average over numeric candidates"
    )
    timeout_s: float = Field(30.0, gt=0, description="per-request timeout for a remote server")


class EnsembleSettings(Section):
    members: list[Literal["local", "knn", "ridge", "frontier", "specialist"]] = Field(
        default_factory=lambda: ["local", "frontier", "specialist"],
        description="pricers combined when available (local: the calibrated offline model)",
    )
    weights_file: str | None = Field(None, description="fitted blend; null = DEALS_HOME/models/ensemble.json")
    auto_fit: bool = Field(
        True, description="fit a configured member no fitted blend uses on first use (else it is not called)"
    )
    auto_fit_max_usd: float = Field(0.5, ge=0, description="most an automatic fit may spend on LLM members (USD)")
    auto_fit_max_items: int = Field(300, ge=20, description="most items each non-local member prices for an automatic fit")
    auto_fit_data: str | None = Field(None, description="priced file for automatic fits; null = the bundled validation split")


class FeedSettings(Section):
    urls: list[FeedURL] = Field(
        default_factory=lambda: [
            "https://www.dealnews.com/c142/Electronics/?rss=1",
            "https://www.dealnews.com/c39/Computers/?rss=1",
            "https://www.dealnews.com/c238/Automotive/?rss=1",
            "https://www.dealnews.com/f1912/Smart-Home/?rss=1",
            "https://www.dealnews.com/c196/Home-Garden/?rss=1",
        ],
        description="RSS/Atom feeds read every cycle",
    )
    timeout_s: float = Field(15.0, gt=0, description="per-request timeout")
    max_bytes: int = Field(5_000_000, ge=1024, description="feed bodies larger than this are refused")
    user_agent: str = Field("deals/0.1 (+https://github.com/deals/deals)", description="User-Agent sent to feeds and pages")
    max_entries_per_feed: int = Field(50, ge=1, description="newest entries taken from each feed per cycle")
    backoff_base_s: float = Field(300.0, ge=0, description="first wait after a failed fetch; doubles per consecutive failure")
    backoff_max_s: float = Field(21_600.0, ge=0, description="longest wait between retries of a failing feed")
    unhealthy_after: int = Field(3, ge=1, description="consecutive failures after which a feed is reported unhealthy")
    fetch_pages: bool = Field(False, description="also fetch each deal's page for more detail")
    page_timeout_s: float = Field(10.0, gt=0, description="per-page timeout")
    page_max_bytes: int = Field(2_000_000, ge=1024, description="pages larger than this are cut off")
    page_text_chars: int = Field(2000, ge=100, description="characters of a fetched page's text kept with the entry")
    page_concurrency: int = Field(4, ge=1, le=64, description="pages fetched at once")
    allow_private_addresses: bool = Field(
        False, description="allow page fetches and feed redirects to private/loopback addresses (a feed configured at one always may)"
    )

    @model_validator(mode="after")
    def _check(self) -> FeedSettings:
        _in_order(self.backoff_base_s, self.backoff_max_s, ("backoff_base_s", "backoff_max_s"))
        return self


class LLMSettings(Section):
    provider: Literal["none", "openai", "anthropic", "openai-compatible"] = Field(
        "none", description="LLM provider for the scanner (and the frontier pricer unless it sets its own)"
    )
    model: str = Field("gpt-4o-mini", description="model name at the provider")
    base_url: str | None = Field(None, description="API base URL (proxies, gateways, Ollama/vLLM, tests); null = provider default")
    api_key_env: str | None = Field(
        None, description="environment variable holding the key; null = OPENAI_API_KEY / ANTHROPIC_API_KEY"
    )
    timeout_s: float = Field(60.0, gt=0, description="per-call timeout")
    max_retries: int = Field(2, ge=0, le=10, description="retries of transient errors (timeouts, 429, 5xx)")


class ScannerSettings(Section):
    batch_size: int = Field(10, ge=1, le=100, description="feed entries sent to the LLM per structured-output call")
    min_price: float = Field(1.0, ge=0, description="deals cheaper than this are dropped")
    max_price: float = Field(10_000.0, gt=0, description="deals dearer than this are dropped")

    @model_validator(mode="after")
    def _check(self) -> ScannerSettings:
        _in_order(self.min_price, self.max_price, ("min_price", "max_price"))
        return self


class PlannerSettings(Section):
    concurrency: int = Field(4, ge=1, le=64, description="scanner LLM batches, and pricing batches, run at once")
    min_discount_abs: float = Field(25.0, ge=0, description="an opportunity saves at least this many dollars ...")
    min_discount_rel: float = Field(0.3, ge=0, lt=1, description="... AND at least this share of what the product is worth")
    confidence: float = Field(
        0.5, gt=0, lt=1,
        description="alert only when the offer is a real deal with at least this probability under the estimate's distribution",
    )
    deal_depth: tuple[float, float] = Field(
        (0.4, 1.1), description="deals come at this range of fractions of a product's worth; a deeper 'saving' is judged an estimate error"
    )
    max_deals_per_cycle: int = Field(100, ge=1, description="new deals priced per cycle at most (the rest wait)")
    max_pricing_attempts: int = Field(3, ge=1, le=100, description="pricing attempts per deal before it is given up")
    price_within_days: float = Field(
        7.0, gt=0, le=3650, description="deals still unpriced this many days after they were seen are no longer priced (the offer is likely gone)"
    )

    @model_validator(mode="after")
    def _check(self) -> PlannerSettings:
        low, high = self.deal_depth
        if not 0 < low < high <= 2:
            raise ValueError("deal_depth must be two fractions with 0 < low < high <= 2")
        return self


_CLOCK = r"^\d\d:\d\d$"
MAX_REGEX_CHARS = 200


def check_regex(value: str | None) -> str | None:
    """A regular expression that compiles (case-insensitive matching); ValueError naming the problem."""
    import re

    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    if len(text) > MAX_REGEX_CHARS:
        raise ValueError(f"a regular expression of at most {MAX_REGEX_CHARS} characters, not {len(text)}")
    try:
        re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"{text!r} is not a regular expression: {exc}") from None
    return text


Regex = Annotated[str | None, AfterValidator(check_regex)]


class WatchRule(Section):
    """One watch of a recipient: what to match, and when it is worth a text (see deals.agents.watchlist)."""

    name: str = Field("", max_length=80, description="a label shown in lists and the dashboard (default: the keywords)")
    keywords: list[Annotated[str, Field(min_length=1, max_length=80)]] = Field(
        default_factory=list, description="words or phrases that must ALL appear in the deal's title or description (any case)"
    )
    regex: Regex = Field(None, description="a regular expression the title or description must match (any case)")
    max_price: float | None = Field(None, gt=0, description="only deals at or below this price (USD)")
    min_saving_abs: float | None = Field(None, ge=0, description="overrides planner.min_discount_abs for this watch")
    min_saving_rel: float | None = Field(None, ge=0, lt=1, description="overrides planner.min_discount_rel for this watch")
    feeds: list[FeedURL] = Field(default_factory=list, description="only deals from these feeds (empty: any feed)")
    target_price: float | None = Field(
        None, gt=0, description="a target-price watch: text when a matching product is at or below this, whatever the estimate says"
    )

    @model_validator(mode="after")
    def _check(self) -> WatchRule:
        if not self.keywords and not self.regex:
            raise ValueError("a watch needs keywords or a regex")
        return self


MAX_DAILY_CAP = 10_000  # alerts per local day: a cap above this is a typo, not a choice


def clock_time(value: str) -> dtime:
    """'HH:MM' (00:00-23:59) as a time of day; ValueError otherwise."""
    match = re.fullmatch(r"(\d\d):(\d\d)", str(value).strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(f"{value!r} is not a time of day (HH:MM, 00:00-23:59)")
    return dtime(int(match[1]), int(match[2]))


def quiet_window(start: str | None, end: str | None) -> tuple[dtime, dtime] | None:
    """Quiet hours as (start, end) times of day (may span midnight); None when unset or empty
    (start == end). ValueError for a bad time or only one of the two."""
    if (start is None) != (end is None):
        raise ValueError("quiet_start and quiet_end must be set together")
    if start is None or end is None:
        return None
    window = (clock_time(start), clock_time(end))
    return window if window[0] != window[1] else None


class RecipientSettings(Section):
    """A recipient with rules of their own; one with no watches gets the general opportunities."""

    number: Phone = Field(description="phone number (E.164)")
    daily_cap: int | None = Field(None, ge=0, le=MAX_DAILY_CAP, description="alerts per local day for this recipient (default messenger.daily_cap)")
    quiet_start: str | None = Field(None, pattern=_CLOCK, description="this recipient's quiet hours start (HH:MM; default messenger's)")
    quiet_end: str | None = Field(None, pattern=_CLOCK, description="this recipient's quiet hours end (HH:MM)")
    watches: list[WatchRule] = Field(default_factory=list, description="what this recipient wants texted (empty: the general opportunities)")

    @model_validator(mode="after")
    def _check(self) -> RecipientSettings:
        quiet_window(self.quiet_start, self.quiet_end)
        return self


RECIPIENTS_EXAMPLE = """\
- number: "+15551234567"
  daily_cap: 5                  # null: messenger.daily_cap
  quiet_start: "22:00"          # both or neither; null: messenger's quiet hours
  quiet_end: "07:00"
  watches:
    - name: headphones
      keywords: [sony, headphones]  # all must appear (any case); or regex: "wh-1000xm[45]"
      max_price: 300
      min_saving_abs: 40        # override planner.min_discount_abs for this watch
      min_saving_rel: 0.25      # override planner.min_discount_rel
      feeds: []                 # only these feeds (empty: any)
    - keywords: [oled, tv]
      target_price: 800         # text at or below $800, whatever the estimate says"""


class MessengerSettings(Section):
    to: list[Phone] = Field(default_factory=list, description="recipient phone numbers (E.164, e.g. +15551234567)")
    recipients: list[RecipientSettings] = Field(
        default_factory=list,
        description="per-recipient rules: number, daily_cap, quiet_start/quiet_end and watches (also `deals watch` and the dashboard)",
        json_schema_extra={"example": RECIPIENTS_EXAMPLE},
    )
    from_number: Phone | None = Field(None, description="Twilio sender number (E.164); TWILIO_FROM_NUMBER overrides")
    base_url: str | None = Field(None, description="Twilio API base URL (proxies, tests); null = https://api.twilio.com")
    max_chars: int = Field(306, ge=70, le=1600, description="longest message sent (306 = two SMS segments, shown as one)")
    daily_cap: int = Field(10, ge=0, le=MAX_DAILY_CAP, description="alerts sent per local day at most")
    quiet_start: str | None = Field(None, pattern=_CLOCK, description="start of quiet hours (HH:MM), alerts wait until they end")
    quiet_end: str | None = Field(None, pattern=_CLOCK, description="end of quiet hours (HH:MM)")
    timezone: str = Field("UTC", description="IANA time zone for quiet hours and the daily cap")
    max_attempts: int = Field(4, ge=1, le=20, description="send attempts per alert on transient errors")
    retry_base_s: float = Field(1.0, ge=0, description="first retry wait; doubles per attempt")
    max_age_hours: float = Field(24.0, gt=0, description="alerts still unsent after this long are skipped as stale")
    timeout_s: float = Field(15.0, gt=0, description="HTTP timeout of Twilio API calls")

    @model_validator(mode="after")
    def _check(self) -> MessengerSettings:
        quiet_window(self.quiet_start, self.quiet_end)
        return self


class DashboardSettings(Section):
    host: str = Field("127.0.0.1", min_length=1, description="address the dashboard binds to; any other than loopback needs DEALS_DASHBOARD_TOKEN")
    port: int = Field(8484, ge=1, le=65535, description="TCP port of the dashboard")
    page_size: int = Field(50, ge=5, le=500, description="rows per page in the dashboard's lists")
    refresh_s: int = Field(30, ge=0, le=3600, description="seconds between live updates of lists (htmx polling; 0 = off)")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host headers accepted besides the bound address and localhost (a reverse proxy's public name)",
    )


def check_store_url(value: str | None) -> str | None:
    """A PostgreSQL URL, a SQLite URL or None; ValueError (naming no password) for anything else."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    shape = urlsplit(redact(text))  # read with its password out: libpq allows '?' or '#' in one
    scheme = shape.scheme.lower()
    if scheme in ("postgresql", "postgres"):
        if not shape.path.strip("/") and "dbname=" not in text:
            raise ValueError("a PostgreSQL URL names its database: postgresql://user@host:5432/deals")
        return text
    if scheme == "sqlite":
        sqlite_path(text)
        return text
    raise ValueError(f"{redact(text)!r} is not a store URL: postgresql://user@host:5432/deals, or sqlite:////path/to/deals.db")


class StoreSettings(Section):
    url: Annotated[str | None, AfterValidator(check_store_url)] = Field(
        None,
        description="postgresql://user@host:5432/deals (password in PGPASSWORD, or the URL in DEALS_STORE__URL) "
        "or sqlite:////path/deals.db; null = deals.db under DEALS_HOME",
    )
    exclusive: bool | None = Field(
        None,
        description="one daemon per store (a second exits 2, or waits with --wait); null = yes on SQLite, no on PostgreSQL",
    )
    worker_timeout_s: float = Field(
        60.0, ge=2, le=3600,
        description="a daemon silent this long is taken for dead and its claimed work returns to the pool (at once if its process on this host is gone)",
    )

    @field_serializer("url")
    def _hide_password(self, value: str | None) -> str | None:
        return redact(value) if value else value


class SchedulerSettings(Section):
    interval_minutes: float = Field(30.0, gt=0, le=10_080, description="minutes between cycles (at most a week)")
    jitter_s: int = Field(60, ge=0, le=86_400, description="random delay added to each cycle start")
    run_at_start: bool = Field(True, description="run a first cycle as soon as the daemon starts")


class Settings(Section):
    """All settings of `deals`."""

    logging: LoggingSettings = Field(default_factory=LoggingSettings, description="logging")
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings, description="text embeddings for the vector index")
    vectors: VectorSettings = Field(default_factory=VectorSettings, description="the vector store of priced products")
    data: DataSettings = Field(default_factory=DataSettings, description="product data curation and splits")
    knn: KnnSettings = Field(default_factory=KnnSettings, description="the kNN pricer")
    pricing: PricingSettings = Field(default_factory=PricingSettings, description="which pricer answers, and sane bounds")
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings, description="the evaluation harness")
    frontier: FrontierSettings = Field(default_factory=FrontierSettings, description="the frontier LLM pricer (RAG)")
    specialist: SpecialistSettings = Field(default_factory=SpecialistSettings, description="the fine-tuned specialist pricer")
    ensemble: EnsembleSettings = Field(default_factory=EnsembleSettings, description="the learned ensemble of pricers")
    feeds: FeedSettings = Field(default_factory=FeedSettings, description="the RSS reader")
    llm: LLMSettings = Field(default_factory=LLMSettings, description="the shared LLM client")
    scanner: ScannerSettings = Field(default_factory=ScannerSettings, description="the scanner (feed entries -> deals)")
    planner: PlannerSettings = Field(default_factory=PlannerSettings, description="the planner (what is an opportunity)")
    messenger: MessengerSettings = Field(default_factory=MessengerSettings, description="SMS alerts through Twilio")
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings, description="the daemon's schedule")
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings, description="the web dashboard (`deals dashboard`, `deals run --dashboard`)")
    store: StoreSettings = Field(default_factory=StoreSettings, description="the memory store (SQLite or PostgreSQL) and several daemons on it")


# --------------------------------------------------------------------------- loading


class _TextLoader(yaml.SafeLoader):
    """YAML whose scalars stay text, except null: the typed settings convert the rest."""


_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag == "tag:yaml.org,2002:null"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_text_yaml(text: str) -> Any:
    """Parse YAML keeping every scalar as a string (None for null/~/empty)."""
    return yaml.load(text, Loader=_TextLoader)  # noqa: S506 - a SafeLoader subclass


def config_file(explicit: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Path | None:
    """The YAML file to read: explicit path, `$DEALS_CONFIG`, or `$DEALS_HOME/config.yaml` if present."""
    environ = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    try:
        candidate = paths.home() / "config.yaml"
    except OSError as exc:
        raise ConfigError(str(exc)) from None
    return candidate if candidate.is_file() else None


def _env_overrides(environ: dict[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """Nested overrides from `DEALS_SECTION__KEY` variables, and which variable set each key."""
    data: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        keys = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        try:
            value = load_text_yaml(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{'.'.join(keys)}: cannot parse environment variable {name}: {exc}") from None
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{'.'.join(keys)}: environment variable {name} conflicts with another override")
        node[keys[-1]] = value
        origin[keys] = name
    return data, origin


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: Path, what: str = "config file", *, text_scalars: bool = False) -> dict[str, Any]:
    """The mapping in a YAML file; a `ConfigError` naming the file when it cannot be read, is invalid or not a mapping.

    `text_scalars`: keep every scalar as text (see the module docstring), as the settings do.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the {what} as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    try:
        loaded = load_text_yaml(text) if text_scalars else yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return loaded


def load_settings(
    config: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Settings from defaults, one YAML file and `DEALS_*__*` environment variables."""
    environ = dict(os.environ if environ is None else environ)
    path = config_file(config, environ)
    file_data = read_yaml(path, text_scalars=True) if path else {}
    env_data, env_origin = _env_overrides(environ)
    merged = _merge(file_data, env_data)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            source = next(
                (
                    f"environment variable {var}"
                    for keys, var in env_origin.items()
                    if loc[: len(keys)] == keys or (error["type"] == "extra_forbidden" and keys[: len(loc)] == loc)
                ),
                str(path) if path else "built-in defaults",
            )
            problems.append(f"{'.'.join(loc) or '(top level)'}: {error['msg']} (from {source})")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


# --------------------------------------------------------------------------- rendering


def render_defaults() -> str:
    """The default configuration as commented YAML (the repository's config.yaml)."""
    lines = [
        "# deals configuration: every setting with its default and what it means.",
        "# Rendered from deals/framework/settings.py by `deals config --defaults`; a test keeps them equal.",
        "# Override any key with DEALS_<SECTION>__<KEY> (e.g. DEALS_KNN__K=7); secrets come only from the",
        "# environment: OPENAI_API_KEY, ANTHROPIC_API_KEY, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN.",
    ]
    defaults = Settings()
    for name, field in Settings.model_fields.items():
        section: BaseModel = getattr(defaults, name)
        lines += ["", f"{name}:  # {field.description}"]
        for key, sub in type(section).model_fields.items():
            value = getattr(section, key)
            dumped = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
            dumped = dumped.removesuffix("\n...").removesuffix("...").strip()
            if isinstance(value, list) and value:
                lines.append(f"  {key}:  # {sub.description}")
                lines += [f"    - {yaml.safe_dump(item, default_flow_style=True).strip().removesuffix('...').strip()}" for item in value]
            else:
                lines.append(f"  {key}: {dumped}  # {sub.description}")
            example = (sub.json_schema_extra or {}).get("example") if isinstance(sub.json_schema_extra, dict) else None
            if example:
                lines += [f"  #   {line}" for line in str(example).splitlines()]
    return "\n".join(lines) + "\n"


__all__ = ["DashboardSettings", "RecipientSettings", "Settings", "WatchRule", "check_feed_url", "check_regex", "config_file", "e164", "load_settings", "load_text_yaml", "render_defaults"]
