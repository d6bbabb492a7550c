"""Log into the admin over real HTTP through its login form, as a browser does (CSRF included)."""

from __future__ import annotations

import requests


def admin_login(base: str, username: str, password: str) -> tuple[requests.Session, requests.Response]:
    """The session (logged in when the answer redirected to /admin/) and the login form's answer."""
    session = requests.Session()
    session.get(base + "/admin/login/", timeout=10)
    response = session.post(
        base + "/admin/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        headers={"Referer": base + "/admin/login/"},
        timeout=10,
    )
    return session, response
