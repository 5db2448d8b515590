"""Edge security mechanisms shared by every listener (issue 10), sans-IO: bans of source
addresses after failed authentications or floods, and per-source rate limits. The policy
that uses them (what counts as a failure, which listener checks what) lives with each
listener: :mod:`limen.gateway.guard` for SIP, the API, the console and provisioning."""

from limen.security.bans import Ban, BanList, BanPolicy, BanReason, in_networks, parse_networks
from limen.security.ratelimit import RateLimiter

__all__ = [
    "Ban",
    "BanList",
    "BanPolicy",
    "BanReason",
    "RateLimiter",
    "in_networks",
    "parse_networks",
]
