"""Reading the policy file and writing it back: `load_policy`, `dump_policy`.

A file is read once at start-up and checked completely by `policy.reader`;
`dump_policy` is its inverse for ``disputes policy show``.
"""
from __future__ import annotations

import os
import tomllib
from datetime import time
from functools import cache
from importlib import resources
from pathlib import Path

import tomli_w

from policy.model import Deadlines, NotificationPolicy, Policy, PolicyError, SmtpPolicy
from policy.options import StageOptions
from policy.reader import read_policy


@cache
def _default_text() -> str:
    """The packaged default policy; read once, parsed afresh on every use."""
    return resources.files("policy").joinpath("default_policy.toml").read_text(encoding="utf-8")


def default_policy_dict() -> dict[str, object]:
    """The parsed default policy as a fresh dict, safe to modify (tests override it)."""
    return tomllib.loads(_default_text())


def policy_from_dict(data: dict[str, object]) -> Policy:
    """Validate parsed TOML and build a :class:`Policy`; :class:`PolicyError` lists every problem."""
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
        data["intake"] = {"secrets": {source: REDACTED for source in policy.intake_secrets},
                          "early_message_ttl": str(policy.early_message_ttl)}
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
        "intake": {"secrets": dict(policy.intake_secrets), "early_message_ttl": str(policy.early_message_ttl)},
        "notifications": _notifications_to_dict(policy.notifications),
    }


def _notifications_to_dict(n: NotificationPolicy) -> dict[str, object]:
    return {"language": n.language, "max_attempts": n.max_attempts, "survey_url": n.survey_url,
            "channels": {recipient: list(channels) for recipient, channels in n.channels.items()},
            "smtp": _smtp_to_dict(n.smtp),
            "webhook": {"url": n.webhook.url, "timeout": str(n.webhook.timeout)}}


def _smtp_to_dict(s: SmtpPolicy) -> dict[str, object]:
    """The relay as written in the file: the login part only when there is one (no password there, ever:
    the policy names the environment variable that holds it)."""
    table: dict[str, object] = {"host": s.host, "port": s.port, "from": s.sender, "timeout": str(s.timeout),
                                "tls": s.tls}
    if s.username:
        table.update(username=s.username, password_env=s.password_env)
    if s.ca_file:
        table["ca_file"] = s.ca_file
    if s.allow_plaintext_login:
        table["allow_plaintext_login"] = True
    return table


def _options_to_dict(options: StageOptions) -> dict[str, object]:
    table: dict[str, object] = {}
    if options.qc_list is not None:
        table["qc_reasons"] = options.qc_list
    for name, option in options.actions.items():
        action: dict[str, object] = {"label": dict(option.label)}
        action.update({p: spec.code_list for p, spec in option.params.items() if spec.code_list})
        table[name] = action
    return table
