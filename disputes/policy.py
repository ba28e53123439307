"""The policy file: deadlines, service levels, calendar, option boxes, money, routing.

Everything an operator tunes without a release lives in one TOML file
(``OP_POLICY``; a default ships with the package). It is read once, checked
completely — a file that does not validate stops start-up with *every*
problem listed, each naming its key path — and then handed around as a
frozen :class:`Policy`, so no module parses configuration of its own.
The reading and checking is in :mod:`disputes.policy_reader`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from datetime import time
from functools import cache
from importlib import resources
from pathlib import Path

import tomli_w

from disputes.calendar import Calendar
from disputes.durations import Duration, parse_duration
from disputes.stage_options import Label, StageOptions

__all__ = [
    "PolicyError", "Policy", "Deadlines", "EvidencePolicy", "SlaPolicy", "ComplaintFeePolicy",
    "LiabilityPolicy", "RoutingPolicy", "NotificationPolicy", "SmtpPolicy", "WebhookPolicy",
    "Calendar", "Duration", "StageOptions",
    "load_policy", "policy_from_dict", "default_policy_dict", "dump_policy", "policy_to_dict", "parse_duration",
    "FLOWS", "ROUTING_MODES", "ROUTING_WEIGHTS", "RECIPIENTS", "CHANNELS", "LANGUAGES",
]

#: The negotiation flows a merchant may be rolled onto (SPEC §1, 灰度).
FLOWS: tuple[str, ...] = ("direct_refund", "negotiated_reject", "intercept_48h", "platform_judgment")
#: pull: agents claim the next ticket; push: the router assigns tickets to agents.
ROUTING_MODES: tuple[str, ...] = ("pull", "push")
#: The signals the router weighs when matching tickets to agents.
ROUTING_WEIGHTS: tuple[str, ...] = ("satisfaction", "qc", "load")
#: Who is notified of a change: the buyer (``user``) and the merchant.
RECIPIENTS: tuple[str, ...] = ("user", "merchant")
#: The channel adapters a notification can go through (`disputes.channels`).
CHANNELS: tuple[str, ...] = ("log", "smtp", "webhook")
#: The languages notifications (and every label) are written in.
LANGUAGES: tuple[str, ...] = ("zh", "en")


class PolicyError(Exception):
    """The policy file does not validate; ``problems`` lists every reason, each with its key path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"policy has {count} problem{'s' if count != 1 else ''}:\n{lines}")


@dataclass(frozen=True)
class Deadlines:
    """How long the floor waits for someone outside it before the scheduler acts."""

    merchant_response: Duration
    customer_confirmation: Duration
    interception: Duration
    evidence: Duration
    payment_voucher: Duration
    appeal: Duration


@dataclass(frozen=True)
class EvidencePolicy:
    """Evidence rounds are capped so a dispute cannot loop in stage 2 forever."""

    max_rounds: int


@dataclass(frozen=True)
class SlaPolicy:
    """Published service levels; ``warn_at`` are the percentages of a budget that raise warnings."""

    accept: Duration
    first_feedback: Duration
    resolve_simple: Duration
    resolve_complex: Duration
    warn_at: tuple[int, ...]

    def resolve_within(self, complexity: str | None) -> Duration:
        """The resolution promise for a ticket of this complexity (simple unless ``"complex"``)."""
        return self.resolve_complex if complexity == "complex" else self.resolve_simple


@dataclass(frozen=True)
class ComplaintFeePolicy:
    """Goodwill fees the platform may pay a buyer; money in minor units of ``currency``."""

    amounts: tuple[int, ...]
    monthly_budget: int
    currency: str
    approval_threshold: int


@dataclass(frozen=True)
class LiabilityPolicy:
    """How a shared ("both") liability splits the refund."""

    both_merchant_share_percent: int


@dataclass(frozen=True)
class RoutingPolicy:
    """How tickets reach agents: who claims, how long a claim holds, what the router weighs."""

    mode: str
    lease: Duration
    unassigned_fallback: Duration
    weights: dict[str, float]
    new_agent_floor: float


@dataclass(frozen=True)
class SmtpPolicy:
    """The mail relay email notifications are handed to (plain SMTP, no auth: a local relay)."""

    host: str = "localhost"
    port: int = 25
    sender: str = "disputes@localhost"
    timeout: Duration = Duration(10, "s")


@dataclass(frozen=True)
class WebhookPolicy:
    """Where the webhook channel POSTs each ``notify.*`` event body ("" = not configured)."""

    url: str = ""
    timeout: Duration = Duration(5, "s")


def _log_only() -> dict[str, tuple[str, ...]]:
    return {recipient: ("log",) for recipient in RECIPIENTS}


@dataclass(frozen=True)
class NotificationPolicy:
    """How buyers and merchants are told of changes. The default needs nothing external: log only."""

    channels: dict[str, tuple[str, ...]] = field(default_factory=_log_only)
    language: str = "zh"
    max_attempts: int = 5
    #: The satisfaction survey link sent after closing; ``{code}``, ``{ticket_id}``, ``{ref}`` are filled in.
    survey_url: str = "https://survey.example.com/disputes/{code}"
    smtp: SmtpPolicy = field(default_factory=SmtpPolicy)
    webhook: WebhookPolicy = field(default_factory=WebhookPolicy)


@dataclass(frozen=True)
class Policy:
    """The whole validated policy. Treat it as read-only; build a new one to change it."""

    deadlines: Deadlines
    evidence: EvidencePolicy
    sla: SlaPolicy
    calendar: Calendar
    codes: dict[str, dict[str, Label]]
    options: dict[str, StageOptions]
    complaint_fee: ComplaintFeePolicy
    liability: LiabilityPolicy
    rollout: dict[str, int]
    routing: RoutingPolicy
    intake_secrets: dict[str, str]
    notifications: NotificationPolicy = field(default_factory=NotificationPolicy)

    def options_for(self, stage: str) -> StageOptions:
        """The option boxes of ``stage``; :class:`KeyError` for a stage that does not exist."""
        return self.options[stage]

    def deadline(self, name: str) -> Duration:
        """A ``[deadlines]`` entry by name; :class:`KeyError` for an unknown one."""
        if name not in Deadlines.__dataclass_fields__:
            raise KeyError(name)
        value: Duration = getattr(self.deadlines, name)
        return value

    def label(self, code_list: str, code: str, lang: str = "en") -> str:
        """The label of ``code`` in ``[codes.<code_list>]``, or the code itself when unknown."""
        return self.codes.get(code_list, {}).get(code, {}).get(lang, code)


@cache
def _default_text() -> str:
    """The packaged default policy; read once, parsed afresh on every use."""
    return resources.files("disputes").joinpath("default_policy.toml").read_text(encoding="utf-8")


def default_policy_dict() -> dict[str, object]:
    """The parsed default policy as a fresh dict, safe to modify (tests override it)."""
    return tomllib.loads(_default_text())


def policy_from_dict(data: dict[str, object]) -> Policy:
    """Validate parsed TOML and build a :class:`Policy`; :class:`PolicyError` lists every problem."""
    from disputes.policy_reader import read_policy  # the reader builds the dataclasses above

    return read_policy(data)


def load_policy(path: str | os.PathLike[str] | None = None) -> Policy:
    """Load a policy file, or the packaged default when ``path`` is None."""
    if path is None:
        return policy_from_dict(default_policy_dict())
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([f"{os.fspath(path)}: cannot read the policy file ({exc})"]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError([f"{os.fspath(path)}: not valid TOML ({exc})"]) from exc
    return policy_from_dict(data)


#: Shown instead of an intake secret when the policy is printed.
REDACTED = "<redacted>"


def dump_policy(policy: Policy, *, reveal_secrets: bool = False) -> str:
    """The effective policy as TOML text (``disputes policy show``).

    Loading it back gives an equal :class:`Policy`, except that intake secrets
    are printed as ``<redacted>`` unless ``reveal_secrets`` — the output ends
    up in terminals and tickets, the secrets must not.
    """
    data = policy_to_dict(policy)
    if not reveal_secrets:
        data["intake"] = {"secrets": {source: REDACTED for source in policy.intake_secrets}}
    return tomli_w.dumps(data)


def _clock(value: time) -> str:
    return value.isoformat(timespec="minutes" if value.second == 0 and not value.microsecond else "auto")


def policy_to_dict(policy: Policy) -> dict[str, object]:
    """The policy in the shape of the TOML file (the inverse of :func:`policy_from_dict`)."""
    d, s, c, f, r = policy.deadlines, policy.sla, policy.calendar, policy.complaint_fee, policy.routing
    return {
        "deadlines": {name: str(getattr(d, name)) for name in Deadlines.__dataclass_fields__},
        "evidence": {"max_rounds": policy.evidence.max_rounds},
        "sla": {"accept": str(s.accept), "first_feedback": str(s.first_feedback),
                "resolve_simple": str(s.resolve_simple), "resolve_complex": str(s.resolve_complex),
                "warn_at": list(s.warn_at)},
        "calendar": {"zone": c.zone, "working_days": list(c.working_days),
                     "hours": [_clock(c.hours[0]), _clock(c.hours[1])],
                     "holidays": sorted(c.holidays), "extra_working_days": sorted(c.extra_working_days)},
        "codes": {name: {code: dict(label) for code, label in codes.items()}
                  for name, codes in policy.codes.items()},
        "options": {stage: _options_to_dict(options) for stage, options in policy.options.items()},
        "complaint_fee": {"amounts": list(f.amounts), "monthly_budget": f.monthly_budget,
                          "currency": f.currency, "approval_threshold": f.approval_threshold},
        "liability": {"both_merchant_share_percent": policy.liability.both_merchant_share_percent},
        "rollout": dict(policy.rollout),
        "routing": {"mode": r.mode, "lease": str(r.lease), "unassigned_fallback": str(r.unassigned_fallback),
                    "new_agent_floor": r.new_agent_floor, "weights": dict(r.weights)},
        "intake": {"secrets": dict(policy.intake_secrets)},
        "notifications": _notifications_to_dict(policy.notifications),
    }


def _notifications_to_dict(n: NotificationPolicy) -> dict[str, object]:
    return {"language": n.language, "max_attempts": n.max_attempts, "survey_url": n.survey_url,
            "channels": {recipient: list(channels) for recipient, channels in n.channels.items()},
            "smtp": {"host": n.smtp.host, "port": n.smtp.port, "from": n.smtp.sender, "timeout": str(n.smtp.timeout)},
            "webhook": {"url": n.webhook.url, "timeout": str(n.webhook.timeout)}}


def _options_to_dict(options: StageOptions) -> dict[str, object]:
    table: dict[str, object] = {}
    if options.qc_list is not None:
        table["qc_reasons"] = options.qc_list
    for name, option in options.actions.items():
        action: dict[str, object] = {"label": dict(option.label)}
        action.update({p: spec.code_list for p, spec in option.params.items() if spec.code_list})
        table[name] = action
    return table
