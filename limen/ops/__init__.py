"""Operating Limen: what it listens on, start-up error messages, the firewall rule set
and ``limen doctor``'s checks (issue 11). Used by the CLI; nothing here runs in the
SIP hot path."""
