"""The policy: everything an operator tunes without a release, read from one TOML file.

The layer under `models/`: the `Policy` dataclasses (`policy.model`), reading
and checking a file (`policy.reader`, `policy.loading`), the stages' option
boxes (`policy.options`), durations and the working calendar, and the
notification templates. Nothing here touches the database or a broker.
"""
from __future__ import annotations

from policy.calendar import Calendar
from policy.durations import Duration, parse_duration
from policy.loading import (REDACTED, default_policy_dict, dump_policy, load_policy, policy_from_dict,
                            policy_to_dict)
from policy.model import (CHANNELS, FLOWS, LANGUAGES, RECIPIENTS, ROUTING_MODES, ROUTING_WEIGHTS, SMTP_TLS_PORTS,
                          ComplaintFeePolicy, Deadlines, EvidencePolicy, LiabilityPolicy, NotificationPolicy,
                          Policy, PolicyError, RoutingPolicy, SlaPolicy, SmtpPolicy, WebhookPolicy)
from policy.options import StageOptions

__all__ = [
    "PolicyError", "Policy", "Deadlines", "EvidencePolicy", "SlaPolicy", "ComplaintFeePolicy",
    "LiabilityPolicy", "RoutingPolicy", "NotificationPolicy", "SmtpPolicy", "WebhookPolicy",
    "Calendar", "Duration", "StageOptions",
    "load_policy", "policy_from_dict", "default_policy_dict", "dump_policy", "policy_to_dict", "parse_duration",
    "FLOWS", "ROUTING_MODES", "ROUTING_WEIGHTS", "RECIPIENTS", "CHANNELS", "LANGUAGES", "REDACTED", "SMTP_TLS_PORTS",
]
