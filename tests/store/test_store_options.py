"""Global options: figure 11 defaults, validation, persistence, overrides rows."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from limen.store import Invalid
from limen.store.options import GlobalOptions, canonical_option, parse_option_text
from limen.store.repository import Store
from limen.store.schemas import OverrideCreate


def test_defaults_are_the_seed_figure_11(store: Store) -> None:
    options = store.options.get()
    assert (options.sip_udp, options.sip_tcp, options.sip_tls) == (False, True, True)
    assert options.registration_mode == "Max Set-Side"
    assert options.setside_reg_expiry == 900
    assert options.setside_codec == "Unrestricted"
    assert options.rtpframesize == "Dynamic"
    assert options.set_side_rtp_security == "Require"
    assert options.icp_side_rtp_security == "Prefer"
    assert options.prack_support is True
    assert options.options_hb == "Only behind NAT"
    assert options.heartbeat_interval == 20
    assert options.challenge_methods == ["INVITE", "SUBSCRIBE"]
    assert (options.srtp_port_min, options.srtp_port_max) == (20000, 31000)


def test_set_persists_and_is_validated_as_a_whole(store: Store) -> None:
    store.options.set({"sip_udp": True, "heartbeat_interval": 180, "challenge_methods": "invite"})
    options = store.options.get()
    assert (options.sip_udp, options.heartbeat_interval, options.challenge_methods) == (
        True,
        180,
        ["INVITE"],
    )
    with pytest.raises(ValidationError, match="heartbeat_interval"):
        store.options.set({"heartbeat_interval": 181})
    with pytest.raises(ValidationError, match="srtp_port_min"):
        store.options.set({"srtp_port_min": 32000})
    with pytest.raises(Invalid) as info:
        store.options.set({"no_such_option": 1})
    assert info.value.field == "no_such_option"
    assert store.options.get().heartbeat_interval == 180


def test_old_option_names_still_work(store: Store) -> None:
    """Options renamed to MBG's device field names in issue 11: the old names are read
    from existing rows and accepted on input; a write moves the value to the new name."""
    from limen.store import models

    with store.engine.begin() as conn:
        conn.execute(
            models.GlobalOption.__table__.insert(),
            [
                {"name": "options_interval", "value": 45},
                {"name": "options_keepalive", "value": "Always"},
                {"name": "rtp_frame_size", "value": "30"},
                {"name": "codec_support", "value": "G.711 only"},
            ],
        )
    options = store.options.get()
    assert (
        options.heartbeat_interval,
        options.options_hb,
        options.rtpframesize,
        options.setside_codec,
    ) == (45, "Always", "30", "G.711 only")
    assert store.options.set({"options_interval": 60}).heartbeat_interval == 60
    with store.engine.connect() as conn:
        names = set(
            conn.scalars(
                models.GlobalOption.__table__.select().with_only_columns(
                    models.GlobalOption.__table__.c.name
                )
            )
        )
    assert "options_interval" not in names and "heartbeat_interval" in names
    assert store.options.reset(["options_keepalive"]).options_hb == "Only behind NAT"


def test_every_option_is_explained() -> None:
    schema = GlobalOptions.model_json_schema()["properties"]
    for name in GlobalOptions.names():
        assert len(schema[name]["description"]) > 20, name
        for choice in GlobalOptions.choices(name):
            assert choice in schema[name]["description"], (name, choice)


def test_reset_returns_to_default(store: Store) -> None:
    store.options.set({"setside_reg_expiry": 3600})
    assert store.options.reset(["setside_reg_expiry"]).setside_reg_expiry == 900


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("sip_udp", "on", True),
        ("sip_udp", "false", False),
        ("heartbeat_interval", "30", 30),
        ("options_interval", "30", 30),
        ("challenge_methods", "INVITE,SUBSCRIBE,REGISTER", ["INVITE", "SUBSCRIBE", "REGISTER"]),
        ("rtpframesize", "20", "20"),
        ("registration_mode", "Max ICP-Side", "Max ICP-Side"),
        (
            "allowed_uri_names",
            "limen.example.com,64.101.10.1",
            ["limen.example.com", "64.101.10.1"],
        ),
    ],
)
def test_command_line_values_become_typed(name: str, text: str, value: object) -> None:
    parsed = parse_option_text(name, text)
    options = GlobalOptions.model_validate({name: parsed})
    assert getattr(options, canonical_option(name)) == value


def test_overrides_rows_are_ordered_by_file_and_sort_order(store: Store) -> None:
    store.overrides.add(
        OverrideCreate(
            file="tug.ini",
            sort_order=50,
            section="proxy::sip_tls",
            parameter="secure_in::ssl::resign_add_subjectaltname",
            content="DNS=FQDN,DNS=Public IP address,IP=Public IP address",
        )
    )
    first = store.overrides.add(
        OverrideCreate(
            file="tug.ini",
            sort_order=10,
            section="proxy::aastra_xml_a5000",
            parameter="secure_in::ssl::use_cert",
            content="0",
        )
    )
    rows = store.overrides.list()
    assert [r.sort_order for r in rows] == [10, 50]
    store.overrides.remove(first.guid)
    assert [r.parameter for r in store.overrides.list("tug.ini")] == [
        "secure_in::ssl::resign_add_subjectaltname"
    ]
