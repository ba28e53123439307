"""The policy file: deadlines, service levels, calendar, option boxes, money, routing.

Everything an operator tunes without a release lives in one TOML file
(``OP_POLICY``; a default ships with the package). It is read once, checked
completely — a file that does not validate stops start-up with *every*
problem listed, each naming its key path — and then handed around as a
frozen :class:`Policy`, so no module parses configuration of its own.
The reading and checking is in :mod:`policy.reader`, loading and dumping
in :mod:`policy.loading`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policy.calendar import Calendar
from policy.durations import Duration
from policy.options import Label, StageOptions

#: The negotiation flows a merchant may be rolled onto (SPEC §1, 灰度).
FLOWS: tuple[str, ...] = ("direct_refund", "negotiated_reject", "intercept_48h", "platform_judgment")
#: pull: agents claim the next ticket; push: the router assigns tickets to agents.
ROUTING_MODES: tuple[str, ...] = ("pull", "push")
#: The signals the router weighs when matching tickets to agents.
ROUTING_WEIGHTS: tuple[str, ...] = ("satisfaction", "qc", "load")
#: Who is notified of a change: the buyer (``user``) and the merchant.
RECIPIENTS: tuple[str, ...] = ("user", "merchant")
#: The channel adapters a notification can go through (`workers.channels`).
CHANNELS: tuple[str, ...] = ("log", "smtp", "webhook")
#: The languages notifications (and every label) are written in.
LANGUAGES: tuple[str, ...] = ("zh", "en")
#: How the mail relay's connection is protected: not at all (a relay on this host), STARTTLS on a plain
#: connection, or TLS from the first byte (SMTPS); and the port each mode uses when the policy names none.
SMTP_TLS_PORTS: dict[str, int] = {"none": 25, "starttls": 587, "implicit": 465}


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
    """The mail relay email notifications are handed to. The default is a relay on this host (plain
    SMTP, no login); a relay across the network takes TLS (``tls``), verified against the system's
    trust store or ``ca_file``, and a login whose password comes from the environment variable named
    by ``password_env`` — never from the policy file, which ends up in repositories and terminals."""

    host: str = "localhost"
    port: int = 25
    sender: str = "disputes@localhost"
    timeout: Duration = Duration(10, "s")
    #: ``none``, ``starttls`` or ``implicit`` (`SMTP_TLS_PORTS`).
    tls: str = "none"
    #: The login ("" = none).
    username: str = ""
    #: The environment variable that holds the login's password ("" = no login).
    password_env: str = ""
    #: A PEM file of the certificate authorities that vouch for the relay ("" = the system's).
    ca_file: str = ""
    #: A login over plain SMTP sends the password in clear: refused unless this says it is meant.
    allow_plaintext_login: bool = False


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


#: ``intake.early_message_ttl`` when the policy does not say.
EARLY_MESSAGE_TTL = Duration(10, "m")


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
    #: How long a follow-up that arrived before its complaint is held before it is rejected (SPEC §4).
    early_message_ttl: Duration = EARLY_MESSAGE_TTL

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


