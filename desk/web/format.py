"""How the desk writes money, times and countdowns (Jinja filters; no Flask needed to test them)."""
from __future__ import annotations

import re
from datetime import datetime, timezone

from policy.calendar import local_time
from policy.options import money_label

#: Currencies whose minor unit is the major unit (as `policy.options` prints them).
ZERO_DECIMAL = frozenset({"JPY", "KRW", "VND", "CLP", "ISK"})
_DECIMAL = re.compile(r"^(\d{1,13})(?:\.(\d{1,2}))?$")


def money(amount: object, currency: str | None, lang: str = "en") -> str:
    """``1234, "CNY"`` -> ``12.34 CNY`` (``12.34 元`` in Chinese); ``—`` when there is no amount."""
    if not isinstance(amount, int) or isinstance(amount, bool) or not currency:
        return "—"
    sign = "-" if amount < 0 else ""
    return sign + money_label(abs(amount), currency)[lang if lang in ("zh", "en") else "en"]


def parse_amount(text: str, currency: str) -> int:
    """An amount typed in major units (``12.34``) as integer minor units (``1234``); ValueError
    with the reason otherwise."""
    cleaned = text.strip().replace(",", "").replace(" ", "")
    match = _DECIMAL.match(cleaned)
    if match is None:
        raise ValueError(f"write an amount like 12.34 ({currency})")
    whole, cents = match.group(1), match.group(2)
    if currency in ZERO_DECIMAL:
        if cents is not None:
            raise ValueError(f"{currency} has no decimals")
        return int(whole)
    return int(whole) * 100 + int((cents or "0").ljust(2, "0"))


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 string (or datetime) as an aware datetime; None when absent or unreadable."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def when(value: object, zone: str) -> str:
    """A time in the policy calendar's zone, to the minute, saying its zone as the CLI does
    (``2026-11-24 20:31 +08:00``: `policy.calendar.local_time`)."""
    moment = parse_time(value)
    if moment is None:
        return "—"
    return local_time(moment, zone)


def span(seconds: float, lang: str = "en") -> str:
    """A duration, coarse as a person reads it: ``2d 3h``, ``4h 05m``, ``12m``, ``40s``."""
    seconds = int(abs(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = {"d": "天", "h": "小时", "m": "分", "s": "秒"} if lang == "zh" else {"d": "d", "h": "h", "m": "m", "s": "s"}
    if days:
        return f"{days}{units['d']} {hours}{units['h']}"
    if hours:
        return f"{hours}{units['h']} {minutes:02d}{units['m']}"
    if minutes:
        return f"{minutes}{units['m']}"
    return f"{secs}{units['s']}"


def countdown(value: object, now: datetime, lang: str = "en") -> str:
    """Time left until `value` (``in 4h 05m``), or how late it is (``overdue 12m``)."""
    due = parse_time(value)
    if due is None:
        return "—"
    left = (due - now).total_seconds()
    if lang == "zh":
        return f"剩余 {span(left, lang)}" if left >= 0 else f"已超时 {span(left, lang)}"
    return f"in {span(left, lang)}" if left >= 0 else f"overdue {span(left, lang)}"


def is_web_link(uri: object) -> bool:
    """Only http and https evidence links are clickable (no ``javascript:``, ``data:``, ``file:``)."""
    return isinstance(uri, str) and uri.lower().startswith(("http://", "https://"))
