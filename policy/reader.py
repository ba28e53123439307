"""Reading a parsed policy file into a :class:`~policy.Policy`, finding every problem.

An operator fixing a policy file should see all of its mistakes at once, not
one per restart, so nothing here raises until the end: each reader records a
problem under its key path (``deadlines.evidence: …``) and returns ``None``,
and :func:`read_policy` raises one :class:`PolicyError` with the lot.
"""

from __future__ import annotations

import math
import re
from datetime import date, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from policy.calendar import Calendar
from policy.durations import Duration, parse_duration
from policy.model import (
    CHANNELS, EARLY_MESSAGE_TTL, FLOWS, LANGUAGES, RECIPIENTS, ROUTING_MODES, ROUTING_WEIGHTS, SMTP_TLS_PORTS,
    ComplaintFeePolicy, Deadlines, EvidencePolicy, LiabilityPolicy, NotificationPolicy, Policy, PolicyError,
    RoutingPolicy, SlaPolicy, SmtpPolicy, WebhookPolicy,
)
from policy.options import STAGES, Code, Label, StageOptions, money_label
from policy.options_reader import build_stage_options, check_label
from policy.notifications import format_fields  # the templates' own placeholder check

__all__ = ["read_policy"]

#: Sections a policy file must have, and those that default when left out.
REQUIRED_SECTIONS = ("deadlines", "evidence", "sla", "calendar", "codes", "options", "complaint_fee", "routing")
OPTIONAL_SECTIONS = ("liability", "rollout", "intake", "notifications")
_CODE = re.compile(r"[a-z][a-z0-9_]*")
_CURRENCY = re.compile(r"[A-Z]{3}")
_Table = dict[str, object]


class _Reader:
    """Collects problems while reading: each reader records what is wrong and returns None."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def table(self, value: object, path: str, required: tuple[str, ...],
              optional: tuple[str, ...] = ()) -> _Table | None:
        """A table with these keys: missing and unknown keys are problems."""
        if not isinstance(value, dict):
            self.problem(path or "policy", f"must be a table, not {value!r}")
            return None
        for key in required:
            if key not in value:
                self.problem(f"{path}.{key}" if path else key, "missing")
        known = required + optional
        for key in value:
            if key not in known:
                where = f"{path}.{key}" if path else str(key)
                self.problem(where, f"unknown key (expected one of {', '.join(known)})")
        return value

    def section(self, top: _Table, name: str, required: tuple[str, ...],
                optional: tuple[str, ...] = ()) -> _Table | None:
        """A top-level section; an absent one was already reported (or is optional)."""
        return self.table(top[name], name, required, optional) if name in top else None

    def durations(self, table: _Table | None, path: str, names: tuple[str, ...]) -> dict[str, Duration] | None:
        """Every named duration of ``table``, or None when any is missing or bad."""
        if table is None:
            return None
        found = {name: self.duration(table[name], f"{path}.{name}") for name in names if name in table}
        if len(found) != len(names) or any(value is None for value in found.values()):
            return None
        return {name: value for name, value in found.items() if value is not None}

    def duration(self, value: object, path: str) -> Duration | None:
        try:
            return parse_duration(value)  # type: ignore[arg-type]
        except ValueError as exc:
            self.problem(path, str(exc))
            return None

    def integer(self, value: object, path: str, low: int | None = None, high: int | None = None) -> int | None:
        """A whole number (never a bool or float: money is counted in minor units)."""
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(path, f"must be a whole number, not {value!r}")
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.problem(path, f"must be {bounds}, not {value}")
            return None
        return value

    def number(self, value: object, path: str, low: float, high: float | None = None) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.problem(path, f"must be a number, not {value!r}")
            return None
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.problem(path, f"must be {bounds}, not {value}")
            return None
        return float(value)

    def integers(self, value: object, path: str, low: int, high: int | None = None) -> tuple[int, ...] | None:
        """A non-empty list of distinct whole numbers in range."""
        if not isinstance(value, list) or not value:
            self.problem(path, f"must be a non-empty list, not {value!r}")
            return None
        items = [self.integer(item, f"{path}[{i}]", low, high) for i, item in enumerate(value)]
        if any(item is None for item in items):
            return None
        if len(set(items)) != len(items):
            self.problem(path, f"lists a value twice: {value!r}")
            return None
        return tuple(item for item in items if item is not None)

    def dates(self, value: object, path: str) -> frozenset[date] | None:
        """Dates as TOML dates (2026-01-01) or ISO strings ("2026-01-01")."""
        if not isinstance(value, list):
            self.problem(path, f"must be a list of dates, not {value!r}")
            return None
        days: set[date] = set()
        for i, item in enumerate(value):
            if isinstance(item, date) and not hasattr(item, "hour"):
                days.add(item)
                continue
            try:
                days.add(date.fromisoformat(item))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                self.problem(f"{path}[{i}]", f"{item!r} is not an ISO date (YYYY-MM-DD)")
        return frozenset(days)

    def clock(self, value: object, path: str) -> time | None:
        """A local time as a TOML time (09:00:00) or a string ("09:00")."""
        try:
            clock = value if isinstance(value, time) else time.fromisoformat(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            clock = None
        if clock is None or clock.tzinfo is not None:  # the zone is calendar.zone's business
            self.problem(path, f"{value!r} is not a local time of day (HH:MM)")
            return None
        return clock


_DEADLINES = tuple(Deadlines.__dataclass_fields__)
_SLA = ("accept", "first_feedback", "resolve_simple", "resolve_complex")
_FEE = ("amounts", "monthly_budget", "currency", "approval_threshold")
_ROUTING = ("mode", "lease", "unassigned_fallback", "weights", "new_agent_floor")
_NOTIFY = ("language", "max_attempts", "survey_url", "channels", "smtp", "webhook")
_SMTP = ("host", "port", "from", "timeout", "tls", "username", "password_env", "ca_file", "allow_plaintext_login")
#: The name of an environment variable (``password_env``).
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: The placeholders a survey link may use.
_SURVEY_FIELDS = frozenset({"code", "ticket_id", "ref"})
#: Network timeouts stay well inside the workers' time limit (TimeLimit: 120 s per message).
_TIMEOUT_RANGE = (1, 60)


def read_policy(data: object) -> Policy:
    """Build a :class:`Policy` from parsed TOML, or raise :class:`PolicyError` with every problem."""
    r = _Reader()
    top = r.table(data, "", REQUIRED_SECTIONS, OPTIONAL_SECTIONS) or {}
    deadlines = r.durations(r.section(top, "deadlines", _DEADLINES), "deadlines", _DEADLINES)
    evidence = r.section(top, "evidence", ("max_rounds",))
    rounds = r.integer(evidence["max_rounds"], "evidence.max_rounds", 1) if _has(evidence, "max_rounds") else None
    sla = _sla(r, r.section(top, "sla", _SLA + ("warn_at",)))
    calendar = _calendar(r, r.section(top, "calendar", ("zone", "working_days", "hours"),
                                      ("holidays", "extra_working_days")))
    codes = _codes(r, top["codes"]) if "codes" in top else None
    fee = _complaint_fee(r, r.section(top, "complaint_fee", _FEE))
    options = _options(r, r.section(top, "options", STAGES), codes, fee)
    liability = _liability(r, r.table(top.get("liability", {"both_merchant_share_percent": 50}),
                                      "liability", ("both_merchant_share_percent",)))
    rollout = _rollout(r, r.table(top.get("rollout", {}), "rollout", (), FLOWS))
    routing = _routing(r, r.section(top, "routing", _ROUTING))
    intake = r.table(top.get("intake", {}), "intake", (), ("secrets", "early_message_ttl"))
    secrets = _intake(r, intake)
    early_ttl = _early_message_ttl(r, intake)
    notifications = _notifications(r, r.table(top.get("notifications", {}), "notifications", (), _NOTIFY))
    if r.problems:
        raise PolicyError(r.problems)
    # No problems means every section was read; the assert tells the type checker so.
    assert deadlines and rounds and sla and calendar and codes is not None and fee and liability and routing
    assert notifications
    return Policy(Deadlines(**deadlines), EvidencePolicy(rounds), sla, calendar, codes, options, fee,
                  liability, rollout, routing, secrets, notifications, early_ttl or EARLY_MESSAGE_TTL)


def _has(table: _Table | None, key: str) -> bool:
    return table is not None and key in table


def _sla(r: _Reader, table: _Table | None) -> SlaPolicy | None:
    found = r.durations(table, "sla", _SLA)
    warn = r.integers(table["warn_at"], "sla.warn_at", 1, 99) if _has(table, "warn_at") else None  # type: ignore[index]
    if warn is not None and list(warn) != sorted(warn):
        r.problem("sla.warn_at", f"must be in ascending order, not {list(warn)}")
        return None
    return SlaPolicy(warn_at=warn, **found) if found and warn else None


def _calendar(r: _Reader, table: _Table | None) -> Calendar | None:
    if table is None:
        return None
    before = len(r.problems)
    zone = table.get("zone")
    try:
        ZoneInfo(zone)  # type: ignore[arg-type]
    except (ZoneInfoNotFoundError, TypeError, ValueError):
        r.problem("calendar.zone", f"{zone!r} is not a known IANA time zone (e.g. Asia/Shanghai)")
    days = r.integers(table["working_days"], "calendar.working_days", 1, 7) if "working_days" in table else None
    hours = table.get("hours")
    start = end = None
    if not (isinstance(hours, list) and len(hours) == 2):
        r.problem("calendar.hours", f"must be [start, end], e.g. [\"09:00\", \"18:00\"], not {hours!r}")
    else:
        start, end = r.clock(hours[0], "calendar.hours[0]"), r.clock(hours[1], "calendar.hours[1]")
        if start is not None and end is not None and not start < end:
            r.problem("calendar.hours", f"must start before they end ({start} >= {end})")
    holidays = r.dates(table.get("holidays", []), "calendar.holidays") or frozenset()
    extra = r.dates(table.get("extra_working_days", []), "calendar.extra_working_days") or frozenset()
    for day in sorted(holidays & extra):
        r.problem("calendar.extra_working_days", f"{day} is also listed as a holiday")
    if len(r.problems) > before or not days or start is None or end is None:
        return None
    return Calendar(str(zone), days, (start, end), holidays, extra)


def _codes(r: _Reader, value: object) -> dict[str, dict[str, Label]] | None:
    """Every code list by name; a list with a problem is kept empty so the options
    naming it are skipped instead of reporting the same mistake again. None when
    there is no usable ``[codes]`` table at all."""
    if not isinstance(value, dict):
        r.problem("codes", f"must be a table of code lists, not {value!r}")
        return None
    lists: dict[str, dict[str, Label]] = {}
    for name, entries in value.items():
        path = f"codes.{name}"
        lists[name] = {}
        if not isinstance(entries, dict) or not entries:
            r.problem(path, "must be a non-empty table of code = { zh = \"…\", en = \"…\" }")
            continue
        before = len(r.problems)
        good: dict[str, Label] = {}
        for code, label in entries.items():
            if not (isinstance(code, str) and _CODE.fullmatch(code)):
                r.problem(f"{path}.{code}", "a code must be lower_snake_case (a-z, 0-9, _)")
            checked = check_label(label, f"{path}.{code}", r.problems)
            if checked is not None:
                good[code] = checked
        if len(r.problems) == before:
            lists[name] = good
    return lists


def _complaint_fee(r: _Reader, table: _Table | None) -> ComplaintFeePolicy | None:
    if table is None:
        return None
    amounts = r.integers(table["amounts"], "complaint_fee.amounts", 0) if "amounts" in table else None
    budget, threshold = (
        r.integer(table[key], f"complaint_fee.{key}", 0) if key in table else None
        for key in ("monthly_budget", "approval_threshold")
    )
    currency = table.get("currency")
    if "currency" in table and not (isinstance(currency, str) and _CURRENCY.fullmatch(currency)):
        r.problem("complaint_fee.currency", f"{currency!r} is not an ISO 4217 code (e.g. CNY)")
        return None
    if amounts is None or budget is None or threshold is None or not isinstance(currency, str):
        return None
    return ComplaintFeePolicy(amounts, budget, currency, threshold)


def _options(r: _Reader, table: _Table | None, codes: dict[str, dict[str, Label]] | None,
             fee: ComplaintFeePolicy | None) -> dict[str, StageOptions]:
    if table is None:
        return {}
    fee_choices: dict[Code, Label] | None = None
    if fee is not None:
        fee_choices = {amount: money_label(amount, fee.currency) for amount in fee.amounts}
    built = {stage: build_stage_options(stage, table[stage], codes, fee_choices, r.problems)
             for stage in STAGES if stage in table}
    return {stage: options for stage, options in built.items() if options is not None}


def _liability(r: _Reader, table: _Table | None) -> LiabilityPolicy | None:
    if not _has(table, "both_merchant_share_percent"):
        return None
    share = r.integer(table["both_merchant_share_percent"],  # type: ignore[index]
                      "liability.both_merchant_share_percent", 0, 100)
    return LiabilityPolicy(share) if share is not None else None


def _rollout(r: _Reader, table: _Table | None) -> dict[str, int]:
    """Per-flow merchant percentages; a flow left out is fully rolled out (100)."""
    rollout = {flow: 100 for flow in FLOWS}
    for flow in FLOWS:
        if _has(table, flow):
            percent = r.integer(table[flow], f"rollout.{flow}", 0, 100)  # type: ignore[index]
            rollout[flow] = percent if percent is not None else 100
    return rollout


def _routing(r: _Reader, table: _Table | None) -> RoutingPolicy | None:
    if table is None:
        return None
    mode = table.get("mode")
    if "mode" in table and mode not in ROUTING_MODES:
        r.problem("routing.mode", f"{mode!r} is not a routing mode ({' or '.join(ROUTING_MODES)})")
    found = r.durations(table, "routing", ("lease", "unassigned_fallback"))
    floor = (r.number(table["new_agent_floor"], "routing.new_agent_floor", 0.0, 1.0)
             if "new_agent_floor" in table else None)
    weights_table = r.table(table["weights"], "routing.weights", ROUTING_WEIGHTS) if "weights" in table else None
    weights = {name: r.number(weights_table[name], f"routing.weights.{name}", 0.0)
               for name in ROUTING_WEIGHTS if _has(weights_table, name)}
    good = {name: w for name, w in weights.items() if w is not None}
    if len(good) == len(ROUTING_WEIGHTS) and not sum(good.values()) > 0:
        r.problem("routing.weights", "at least one weight must be above 0")
        return None
    if mode not in ROUTING_MODES or floor is None or found is None or len(good) != len(ROUTING_WEIGHTS):
        return None
    return RoutingPolicy(str(mode), found["lease"], found["unassigned_fallback"], good, floor)


def _intake(r: _Reader, table: _Table | None) -> dict[str, str]:
    secrets = table.get("secrets", {}) if table is not None else {}
    if not isinstance(secrets, dict):
        r.problem("intake.secrets", f"must be a table of source = \"secret\", not {secrets!r}")
        return {}
    good: dict[str, str] = {}
    for source, secret in secrets.items():
        if isinstance(source, str) and isinstance(secret, str) and secret:
            good[source] = secret
        else:
            r.problem(f"intake.secrets.{source}", "must be a non-empty string")
    return good


def _early_message_ttl(r: _Reader, table: _Table | None) -> Duration | None:
    """``intake.early_message_ttl``: elapsed time (a hold waits for a message, not for people)."""
    if table is None or "early_message_ttl" not in table:
        return None
    ttl = r.duration(table["early_message_ttl"], "intake.early_message_ttl")
    if ttl is not None and (ttl.unit == "wd" or ttl.seconds() <= 0):
        r.problem("intake.early_message_ttl", f"must be a positive elapsed time such as 10m, not {ttl}")
        return None
    return ttl


def _notifications(r: _Reader, table: _Table | None) -> NotificationPolicy | None:
    """``[notifications]``: optional; what is left out keeps the default (log only, Chinese)."""
    if table is None:
        return None
    before, default = len(r.problems), NotificationPolicy()
    language = table.get("language", default.language)
    if not (isinstance(language, str) and language in LANGUAGES):
        r.problem("notifications.language", f"{language!r} is not a language ({' or '.join(LANGUAGES)})")
    attempts = (r.integer(table["max_attempts"], "notifications.max_attempts", 1, 20)
                if "max_attempts" in table else default.max_attempts)
    survey_url = _survey_url(r, table.get("survey_url", default.survey_url))
    channels = _channels(r, table.get("channels", {}))
    smtp = _smtp(r, r.table(table.get("smtp", {}), "notifications.smtp", (), _SMTP))
    webhook = _webhook(r, r.table(table.get("webhook", {}), "notifications.webhook", (), ("url", "timeout")))
    used = {channel for chosen in (channels or {}).values() for channel in chosen}
    if "webhook" in used and webhook is not None and not webhook.url:
        r.problem("notifications.webhook.url", "required when a recipient's channels include \"webhook\"")
    if len(r.problems) > before or attempts is None or channels is None or smtp is None or webhook is None:
        return None
    return NotificationPolicy(channels, str(language), attempts, str(survey_url), smtp, webhook)


def _survey_url(r: _Reader, value: object) -> str | None:
    path = "notifications.survey_url"
    if not (isinstance(value, str) and re.match(r"https?://[^\s/]+", value)) or any(c.isspace() for c in value):
        r.problem(path, f"must be an http(s) link without spaces, not {value!r}")
        return None
    fields = format_fields(value)
    if fields is None or not fields <= _SURVEY_FIELDS:
        r.problem(path, f"may only use the placeholders {{{'}, {'.join(sorted(_SURVEY_FIELDS))}}}, "
                        f"and braces must pair: {value!r}")
        return None
    return value


def _channels(r: _Reader, value: object) -> dict[str, tuple[str, ...]] | None:
    """Per recipient, the channels that reach it; a recipient left out gets the log only."""
    table = r.table(value, "notifications.channels", (), RECIPIENTS)
    if table is None:
        return None
    found: dict[str, tuple[str, ...]] = {}
    for recipient in RECIPIENTS:
        chosen = table.get(recipient, ["log"])
        path = f"notifications.channels.{recipient}"
        if not (isinstance(chosen, list) and all(isinstance(c, str) and c in CHANNELS for c in chosen)):
            r.problem(path, f"must be a list of channels from {', '.join(CHANNELS)}, not {chosen!r}")
        elif len(set(chosen)) != len(chosen):
            r.problem(path, f"lists a channel twice: {chosen!r}")
        else:
            found[recipient] = tuple(chosen)
    return found if len(found) == len(RECIPIENTS) else None


def _timeout(r: _Reader, value: object, path: str) -> Duration | None:
    duration = r.duration(value, path)
    low, high = _TIMEOUT_RANGE
    if duration is not None and (duration.unit == "wd" or not low <= duration.seconds() <= high):
        r.problem(path, f"must be between {low}s and {high}s, not {duration}")
        return None
    return duration


def _smtp(r: _Reader, table: _Table | None) -> SmtpPolicy | None:
    if table is None:
        return None
    before, default = len(r.problems), SmtpPolicy()
    host, sender = table.get("host", default.host), table.get("from", default.sender)
    if not (isinstance(host, str) and re.fullmatch(r"[A-Za-z0-9.:\[\]_-]+", host)):
        r.problem("notifications.smtp.host", f"must be a host name or address, not {host!r}")
    if not (isinstance(sender, str) and re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", sender)):
        r.problem("notifications.smtp.from", f"must be an email address, not {sender!r}")
    tls = table.get("tls", default.tls)
    if not (isinstance(tls, str) and tls in SMTP_TLS_PORTS):
        r.problem("notifications.smtp.tls", f"must be one of {', '.join(SMTP_TLS_PORTS)}, not {tls!r}")
    port = (r.integer(table["port"], "notifications.smtp.port", 1, 65535) if "port" in table
            else SMTP_TLS_PORTS.get(str(tls), default.port))
    timeout = _timeout(r, table["timeout"], "notifications.smtp.timeout") if "timeout" in table else default.timeout
    username, password_env, ca_file, plaintext = _smtp_login(r, table, str(tls))
    if len(r.problems) > before or port is None or timeout is None:
        return None
    return SmtpPolicy(str(host), port, str(sender), timeout, str(tls), username, password_env, ca_file, plaintext)


def _smtp_login(r: _Reader, table: _Table, tls: str) -> tuple[str, str, str, bool]:
    """``username``, ``password_env``, ``ca_file``, ``allow_plaintext_login``: a login names where its
    password is (an environment variable, never the password itself), and goes over TLS unless the
    policy says a clear one is meant; a CA file only means something with TLS."""
    path = "notifications.smtp"
    username, password_env = table.get("username", ""), table.get("password_env", "")
    ca_file, plaintext = table.get("ca_file", ""), table.get("allow_plaintext_login", False)
    good_username = isinstance(username, str) and len(username) <= 256 and username.isprintable()
    if not good_username:
        r.problem(f"{path}.username", f"must be a login name on one line (or \"\" for none), not {username!r}")
    if not (isinstance(password_env, str) and (password_env == "" or _ENV_NAME.fullmatch(password_env))):
        r.problem(f"{path}.password_env", f"must name an environment variable (such as OP_SMTP_PASSWORD), "
                                          f"not {password_env!r}")
    elif username and not password_env:
        r.problem(f"{path}.password_env", "required with a username: the environment variable that holds the "
                                          "password (the password itself never goes in the policy file)")
    elif password_env and not username and good_username:
        r.problem(f"{path}.username", f"required with password_env ({password_env}): the login name")
    if not isinstance(plaintext, bool):
        r.problem(f"{path}.allow_plaintext_login", f"must be true or false, not {plaintext!r}")
    if username and tls == "none" and plaintext is not True:
        r.problem(f"{path}.tls", "a login over plain SMTP sends the password in clear: set tls = \"starttls\" or "
                                 "\"implicit\" (or allow_plaintext_login = true for a relay on this host)")
    if not (isinstance(ca_file, str) and ca_file.isprintable()):
        r.problem(f"{path}.ca_file", f"must be the path of a PEM file (or \"\" for the system's), not {ca_file!r}")
    elif ca_file and tls == "none":
        r.problem(f"{path}.ca_file", "verifies the relay's certificate, which only TLS shows: set tls too")
    return str(username), str(password_env), str(ca_file), plaintext is True


def _webhook(r: _Reader, table: _Table | None) -> WebhookPolicy | None:
    if table is None:
        return None
    default = WebhookPolicy()
    url = table.get("url", default.url)
    if not (isinstance(url, str) and (url == "" or re.fullmatch(r"https?://[^\s/]+\S*", url))):
        r.problem("notifications.webhook.url", f"must be an http(s) URL (or \"\" for none), not {url!r}")
        return None
    timeout = _timeout(r, table["timeout"], "notifications.webhook.timeout") if "timeout" in table else default.timeout
    return WebhookPolicy(url, timeout) if timeout is not None else None
