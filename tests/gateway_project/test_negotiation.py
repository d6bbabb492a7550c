"""Every API view answers in its own format whatever the client's Accept header says."""

from __future__ import annotations

import requests

from tests.gateway import Gateway
from tests.standin import image_bytes

PNG = image_bytes("png", (64, 64))


def test_an_edit_answers_json_even_to_a_client_that_accepts_only_html(gateway: Gateway) -> None:
    response = gateway.edit(
        files=[("image", ("p.png", PNG, "image/png"))], data={"prompt": "add a hat"}, headers={"Accept": "text/html"}
    )

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["data"][0]["b64_json"]


def test_an_error_answers_json_to_a_client_that_accepts_only_xml(gateway: Gateway) -> None:
    response = gateway.edit(files=[("image", ("p.png", PNG, "image/png"))], headers={"Accept": "application/xml"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "missing_required_parameter"


def test_the_docs_page_is_still_html(gateway: Gateway) -> None:
    response = requests.get(gateway.url + "/docs", headers={"Accept": "text/html"}, timeout=10)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
