"""The devices_mbg.csv reader and writer: line numbers, quoting, round trip."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from limen.store.devices_csv import COLUMNS, check_devices_csv, export_devices_csv
from limen.store.repository import Store
from limen.store.schemas import DeviceCreate, IcpCreate

HEADER = ",".join(COLUMNS)


def test_line_numbers_count_physical_lines_and_quoted_newlines(store: Store) -> None:
    store.icps.create(IcpCreate(name="mv5000", address="10.0.0.1"))
    text = "\n".join(
        [
            HEADER,
            "",
            '7000,"pass,word",mv5000,,,,"two',
            'lines"',
            "7001,pw,mv5000,,,zz,",
        ]
    )
    check = check_devices_csv(text, store)
    assert [(line, d.setside_username, d.setside_password) for line, d in check.rows] == [
        (3, "7000", "pass,word")
    ]
    assert check.rows[0][1].description == "two\nlines"
    assert [(e.line, e.message.split(":")[0]) for e in check.errors] == [(5, "clientid")]


def test_empty_file_and_missing_columns(store: Store) -> None:
    assert [str(e) for e in check_devices_csv("", store).errors] == [
        "line 1: empty file: expected a header row"
    ]
    errors = check_devices_csv("setside_username,icp,colour\n", store).errors
    assert "unknown column(s) colour" in errors[0].message
    assert "missing column(s) setside_password" in errors[0].message


usernames = st.from_regex(r"[A-Za-z0-9._~+*#-]{1,20}", fullmatch=True).filter(
    lambda u: not (len(u) == 12 and all(c in "0123456789abcdefABCDEF" for c in u))
)
passwords = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
    min_size=1,
    max_size=30,
).filter(lambda p: p == p.strip() and p)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(usernames, passwords, min_size=1, max_size=8))
def test_export_then_check_gives_the_same_devices(store: Store, devices: dict[str, str]) -> None:
    if not store.icps.list():
        store.icps.create(IcpCreate(name="mv5000", address="10.0.0.1"))
    for record in store.devices.list():
        store.devices.delete(record.guid)
    store.devices.create_many(
        DeviceCreate(setside_username=u, setside_password=p, icp="mv5000", description=p)
        for u, p in devices.items()
    )
    text = export_devices_csv(store.devices.all_credentials(), store.devices.list())
    for record in store.devices.list():
        store.devices.delete(record.guid)
    check = check_devices_csv(text, store)
    assert check.errors == []
    back = {d.setside_username: (d.setside_password, d.description) for _l, d in check.rows}
    assert back == {u: (p, p) for u, p in devices.items()}
