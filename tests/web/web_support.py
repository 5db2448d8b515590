"""Helpers of the console tests (imported by name: test folders have no __init__.py)."""

from __future__ import annotations

import re
from typing import Any

import httpx

BASE = "https://limen.test"
ADMIN = ("admin", "correct-horse-9")


def csrf_of(html: str, action: str | None = None) -> str:
    """The CSRF token inside the form posting to ``action`` (any form's when None): a
    form whose own hidden field is missing or empty must fail here, as in a browser."""
    if action is not None:
        start = html.find(f'action="{action}"')
        assert start >= 0, f"no form posting to {action}"
        html = html[start : html.index("</form>", start)]
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert found is not None, html[:2000]
    return found.group(1)


async def log_in(client: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    form = await client.get("/console/login")
    return await client.post(
        "/console/login",
        data={"csrf_token": csrf_of(form.text), "username": user, "password": password},
    )


async def post_form(
    client: httpx.AsyncClient, page: str, action: str, data: dict[str, Any], **kw: Any
) -> httpx.Response:
    """GET ``page``, take its CSRF token, POST ``data`` to ``action`` like a browser."""
    html = (await client.get(page)).text
    return await client.post(action, data={"csrf_token": csrf_of(html, action), **data}, **kw)
