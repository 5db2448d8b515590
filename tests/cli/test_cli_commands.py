"""The ``limen`` command groups: round trips through the store, --json everywhere,
CSV import checked row by row, pairing approval from the command line."""

from __future__ import annotations

import datetime as dt
import json
import re
import stat
from collections.abc import Callable
from pathlib import Path

from typer.testing import Result

from limen.config import load_settings
from limen.store import open_store
from limen.store.db import head_revision

Limen = Callable[..., Result]
HEADER = (
    "setside_username,setside_password,icp,icpside_username,icpside_password,clientid,description"
)


def setup_icp(limen: Limen, name: str = "mv5000") -> None:
    limen(
        "icp",
        "add",
        name,
        "--address",
        "100.100.100.71",
        "--hash",
        "16a78df75f29020a19fb5fd14bfac940",
    )


def test_icp_round_trip_with_json(limen: Limen) -> None:
    added = json.loads(
        limen(
            "icp",
            "add",
            "mv5000",
            "--address",
            "100.100.100.71",
            "--transport",
            "tls",
            "--port",
            "5061",
            "--json",
        ).stdout
    )
    assert (added["name"], added["port"], added["transport"]) == ("mv5000", 5061, "tls")
    assert added["serves_configs"] is False
    serving = json.loads(limen("icp", "edit", "mv5000", "--serves-configs", "--json").stdout)
    assert serving["serves_configs"] is True
    back = json.loads(limen("icp", "edit", "mv5000", "--proxies-configs", "--json").stdout)
    assert back["serves_configs"] is False
    listed = json.loads(limen("icp", "list", "--json").stdout)
    assert [i["guid"] for i in listed] == [added["guid"]]
    edited = json.loads(limen("icp", "edit", "mv5000", "--description", "lab PBX", "--json").stdout)
    assert edited["description"] == "lab PBX" and edited["port"] == 5061
    shown = json.loads(limen("icp", "show", added["guid"], "--json").stdout)
    assert shown.pop("link") is None  # no limen serve: no live link state
    assert shown == edited
    assert "mv5000" in limen("icp", "list").stdout
    gone = json.loads(limen("icp", "remove", "mv5000", "--json").stdout)
    assert gone == {"deleted": added["guid"], "devices_deleted": 0}
    assert json.loads(limen("icp", "list", "--json").stdout) == []


def test_icp_tls_trust_and_ping_options(limen: Limen) -> None:
    pin = ":".join(["AB"] * 32)
    added = json.loads(
        limen(
            "icp",
            "add",
            "pbx",
            "--address",
            "pbx.example.test",
            "--transport",
            "tls",
            "--tls-pin",
            pin,
            "--tls-server-name",
            "sip.example.test",
            "--options-interval",
            "5",
            "--json",
        ).stdout
    )
    assert (added["tls_pin_sha256"], added["tls_server_name"]) == (pin, "sip.example.test")
    assert added["tls_verify"] is True and added["options_interval"] == 5
    edited = json.loads(
        limen("icp", "edit", "pbx", "--no-tls-verify", "--tls-ca", "/etc/ca.pem", "--json").stdout
    )
    assert edited["tls_verify"] is False and edited["tls_ca_file"] == "/etc/ca.pem"
    bad = limen("icp", "edit", "pbx", "--tls-pin", "not-a-pin", code=1)
    assert "SHA-256" in bad.stdout + bad.stderr
    assert "link: unknown (limen serve is not running)" in limen("icp", "show", "pbx").stdout


def test_errors_exit_1_with_a_reason(limen: Limen) -> None:
    setup_icp(limen)
    r = limen("icp", "add", "mv5000", "--address", "10.0.0.1", "--json", code=1)
    assert "already exists" in json.loads(r.stdout)["error"]
    r = limen("icp", "add", "other", "--address", "bad host", code=1)
    assert "address" in r.stderr
    r = limen("device", "show", "nobody", "--json", code=1)
    assert json.loads(r.stdout) == {"error": "no device 'nobody'"}
    limen("device", "add", "7000", "--icp", "mv5000", "--password", "pw")
    r = limen("icp", "remove", "mv5000", code=1)
    assert "confirm" in r.stderr
    r = limen("icp", "remove", "mv5000", "--with-devices", "--json")
    assert json.loads(r.stdout)["devices_deleted"] == 1


def test_every_setting_device_show_lists_can_be_set(limen: Limen) -> None:
    """Issue 11: each per-device option `device show` lists has a flag on add and edit;
    '' returns it to the global option; show explains every field."""
    setup_icp(limen)
    flags = {
        "--options-hb": ("Always", "options_hb", "Always"),
        "--heartbeat-interval": ("45", "heartbeat_interval", 45),
        "--prack-support": ("off", "prack_support", False),
        "--set-side-rtp-security": ("Prefer", "set_side_rtp_security", "Prefer"),
        "--setside-codec": ("G.711 only", "setside_codec", "G.711 only"),
        "--rtpframesize": ("20", "rtpframesize", "20"),
        "--challenge-methods": ("INVITE", "challenge_methods", ["INVITE"]),
        "--max-calls": ("8", "max_calls", 8),  # call admission (issue 10)
        "--max-call-attempts": ("30", "max_call_attempts", 30),
    }
    args = [a for flag, (text, _f, _v) in flags.items() for a in (flag, text)]
    added = json.loads(limen("device", "add", "7100", "--icp", "mv5000", *args, "--json").stdout)
    assert {field: added[field] for _t, field, _v in flags.values()} == {
        field: value for _t, field, value in flags.values()
    }
    shown = json.loads(limen("device", "show", "7100", "--json").stdout)
    settable = {field for _t, field, _v in flags.values()}
    identity = {"guid", "icp_guid", "setside_username", "icpside_username", "icp", "clientid"}
    assert set(shown) - identity - {"description"} == settable
    reset = [a for flag in flags for a in (flag, "")]
    edited = json.loads(limen("device", "edit", "7100", *reset, "--json").stdout)
    assert all(edited[field] is None for field in settable)
    text = limen("device", "show", "7100").stdout
    assert "global option" in text and "Only behind NAT" in text
    assert "Require (figure 11: plain RTP offers are refused with 488)" in text
    r = limen("device", "edit", "7100", "--setside-codec", "G.999", code=1)
    assert "setside_codec" in r.stderr


def test_device_add_generates_a_password_once_and_hides_it_after(limen: Limen) -> None:
    setup_icp(limen)
    added = json.loads(
        limen(
            "device", "add", "7000", "--icp", "mv5000", "--mac", "00:08:5d:43:30:b8", "--json"
        ).stdout
    )
    assert re.fullmatch(r"[A-Za-z0-9]{16}", added["setside_password"])
    shown = json.loads(limen("device", "show", "00085D4330B8", "--json").stdout)
    assert "setside_password" not in shown and shown["clientid"] == "00085D4330B8"
    edited = json.loads(
        limen(
            "device", "edit", "7000", "--mac", "", "--challenge-methods", "INVITE", "--json"
        ).stdout
    )
    assert edited["clientid"] is None and edited["challenge_methods"] == ["INVITE"]


def test_export_then_import_elsewhere_is_identity(
    limen: Limen, tmp_path: Path, new_config: Callable[[str], Path]
) -> None:
    setup_icp(limen)
    limen(
        "device",
        "add",
        "7000",
        "--icp",
        "mv5000",
        "--password",
        'pass,with"quote',
        "--mac",
        "00085D4330B8",
        "--description",
        "reception",
    )
    limen(
        "device",
        "add",
        "7001",
        "--icp",
        "mv5000",
        "--password",
        "p2",
        "--icpside-username",
        "icp7001",
        "--icpside-password",
        "other",
    )
    limen("device", "add", "7002", "--icp", "mv5000")
    exported = tmp_path / "devices_mbg.csv"
    r = limen("device", "export", "--output", str(exported), "--json")
    assert json.loads(r.stdout) == {"file": str(exported), "exported": 3}
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    text = exported.read_text()
    assert text.splitlines()[0] == HEADER

    other = new_config("other")
    limen("icp", "add", "mv5000", "--address", "100.100.100.71", config_path=other)
    r = limen("device", "import", str(exported), "--json", config_path=other)
    assert json.loads(r.stdout) == {"imported": 3, "errors": []}
    again = limen("device", "export", config_path=other).stdout
    assert again == text
    first = json.loads(limen("device", "list", "--json").stdout)
    second = json.loads(limen("device", "list", "--json", config_path=other).stdout)
    strip = lambda rows: [{k: v for k, v in d.items() if "guid" not in k} for d in rows]  # noqa: E731
    assert strip(first) == strip(second)


def test_import_reports_every_bad_row_and_imports_nothing(limen: Limen, tmp_path: Path) -> None:
    setup_icp(limen)
    limen("device", "add", "7999", "--icp", "mv5000", "--password", "x")
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text(
        "\n".join(
            [
                HEADER,
                "7000,pw,mv5000,,,00085D4330B8,ok",  # 2 good
                "7001,pw,mv5000,,,not-a-mac,",  # 3 bad MAC
                "7002,pw,ghost,,,,",  # 4 unknown ICP
                "7000,pw,mv5000,,,,",  # 5 duplicate of line 2
                "7003,,mv5000,,,,",  # 6 missing password
                "7999,pw,mv5000,,,,",  # 7 already stored
                "7004,pw,mv5000,,,",  # 8 one field short
                "7005,pw,mv5000,,,,fine",  # 9 good
            ]
        )
        + "\n"
    )
    r = limen("device", "import", str(csv_file), code=1)
    lines = [int(n) for n in re.findall(r"bad\.csv:(\d+):", r.stderr)]
    assert lines == [3, 4, 5, 6, 7, 8]
    assert "clientid" in r.stderr and "no ICP 'ghost'" in r.stderr and "repeats line 2" in r.stderr
    assert "setside_password" in r.stderr and "already exists" in r.stderr
    assert "nothing imported" in r.stderr
    assert json.loads(limen("device", "list", "--json").stdout)[0]["setside_username"] == "7999"
    assert len(json.loads(limen("device", "list", "--json").stdout)) == 1

    r = limen("device", "import", str(csv_file), "--json", code=1)
    assert [e["line"] for e in json.loads(r.stdout)["errors"]] == [3, 4, 5, 6, 7, 8]

    r = limen("device", "import", str(csv_file), "--skip-invalid", "--json")
    assert json.loads(r.stdout)["imported"] == 2
    users = [d["setside_username"] for d in json.loads(limen("device", "list", "--json").stdout)]
    assert users == ["7000", "7005", "7999"]


def test_import_bad_header_names_line_1(limen: Limen, tmp_path: Path) -> None:
    csv_file = tmp_path / "header.csv"
    csv_file.write_text("user,password\n7000,pw\n")
    r = limen("device", "import", str(csv_file), "--json", code=1)
    errors = json.loads(r.stdout)["errors"]
    assert errors[0]["line"] == 1 and "missing column(s) setside_username" in errors[0]["error"]


def test_long_import_shows_progress_and_counts(limen: Limen, tmp_path: Path) -> None:
    setup_icp(limen)
    csv_file = tmp_path / "many.csv"
    rows = [HEADER] + [f"{10000 + i},pw{i},mv5000,,,," for i in range(1200)]
    csv_file.write_text("\n".join(rows) + "\n")
    r = limen("device", "import", str(csv_file))
    assert "imported 1200 device(s)" in r.stdout
    assert json.loads(limen("device", "list", "--json").stdout)[-1]["setside_username"] == "11199"


def test_options_show_set_reset(limen: Limen) -> None:
    assert json.loads(limen("options", "show", "--json").stdout)["options_hb"] == "Only behind NAT"
    # The pre-issue-11 name is still accepted and answers under the current name.
    assert json.loads(limen("options", "set", "options_interval", "30", "--json").stdout) == {
        "heartbeat_interval": 30
    }
    assert json.loads(limen("options", "set", "sip_udp", "on", "--json").stdout) == {
        "sip_udp": True
    }
    r = limen("options", "set", "heartbeat_interval", "181", code=1)
    assert "heartbeat_interval" in r.stderr
    r = limen("options", "set", "nope", "1", "--json", code=1)
    assert "unknown option" in json.loads(r.stdout)["error"]
    assert json.loads(limen("options", "show", "heartbeat_interval", "--json").stdout) == {
        "heartbeat_interval": 30
    }
    limen("options", "reset", "heartbeat_interval")
    assert json.loads(limen("options", "show", "--json").stdout)["heartbeat_interval"] == 20
    table = limen("options", "show").stdout
    assert "Only behind NAT" in table and "403 Transport Not Allowed" in table


def test_overrides(limen: Limen) -> None:
    added = json.loads(
        limen("override", "add", "proxy::sip_tls", "secure_in::ssl::use_cert", "0", "--json").stdout
    )
    assert (added["file"], added["sort_order"]) == ("tug.ini", 50)
    assert len(json.loads(limen("override", "list", "--json").stdout)) == 1
    limen("override", "remove", added["guid"])
    assert json.loads(limen("override", "list", "--json").stdout) == []


def test_consumer_and_token_approval_from_the_cli(limen: Limen, config: Path) -> None:
    created = json.loads(limen("consumer", "add", "mv5000", "--mbg-defaults", "--json").stdout)
    assert re.fullmatch(r"[0-9a-f]{32}", created["shared_secret"])
    paths = [p["path"] for p in created["permissions"]]
    assert "/mbg/v1/devices/" in paths and "/managetoken/" in paths and len(paths) == 14
    shown = json.loads(limen("consumer", "show", "mv5000", "--json").stdout)
    assert "shared_secret" not in shown

    store = open_store(load_settings(config))
    try:
        store.tokens.create_temporary("mv5000", "t" * 30, "s", "oob", dt.timedelta(minutes=15))
    finally:
        store.close()
    pending = json.loads(limen("token", "list", "--status", "pending", "--json").stdout)
    assert [(t["consumer"], t["token"]) for t in pending] == [("mv5000", "t" * 30)]
    approved = json.loads(limen("token", "approve", "t" * 30, "--json").stdout)
    assert re.fullmatch(r"\d{6}", approved["verifier"])
    r = limen("token", "approve", "t" * 30, "--json", code=1)
    assert "already approved" in json.loads(r.stdout)["error"]
    limen("consumer", "edit", "mv5000", "--inactive")
    assert json.loads(limen("consumer", "list", "--json").stdout)[0]["active"] is False
    limen("consumer", "remove", "mv5000")
    assert json.loads(limen("token", "list", "--json").stdout) == []


def test_admins_tokens_and_db(limen: Limen) -> None:
    added = json.loads(limen("admin", "add", "alice", "--json").stdout)
    assert len(added["password"]) == 20
    token = json.loads(limen("admin", "token", "add", "alice", "ci", "--json").stdout)
    assert token["token"].startswith("lmn_")
    listed = json.loads(limen("admin", "token", "list", "--json").stdout)
    assert [(t["username"], t["name"]) for t in listed] == [("alice", "ci")]
    limen("admin", "token", "revoke", str(token["id"]))
    assert json.loads(limen("admin", "token", "list", "--json").stdout) == []
    current = json.loads(limen("db", "current", "--json").stdout)
    head = head_revision()
    assert current["current"] == current["head"] == head
    assert json.loads(limen("db", "upgrade", "--json").stdout) == {"from": head, "to": head}
