"""The sandbox payment provider, exercised over real HTTP like a gateway client would."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from django.core.management import CommandError, call_command

from orders.provider.sandbox import SandboxProvider

API_KEY = "sk_test_a"
PAYMENT = {"amount": "12.50", "currency": "EUR", "source": "tok_ok", "reference": "order-1"}


class FakeClock:
    """Arrival times the test sets explicitly, so rate-limit assertions never race."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Client:
    def __init__(self, base_url: str, api_key: str | None = API_KEY) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.session = requests.Session()

    def _headers(self, idempotency_key: str | None, api_key: str | None) -> dict[str, str]:
        headers = {}
        key = api_key or self.api_key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def post(
        self,
        path: str,
        body: Any = None,
        key: str | None = None,
        api_key: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        return self.session.post(
            self.base_url + path,
            json=body,
            headers=self._headers(key, api_key) | kwargs.pop("headers", {}),
            timeout=10,
            **kwargs,
        )

    def pay(self, key: str | None = None, **fields: Any) -> requests.Response:
        return self.post("/v1/payments", PAYMENT | fields, key=key)

    def get(self, path: str, api_key: str | None = None, **kwargs: Any) -> requests.Response:
        headers = self._headers(None, api_key) | kwargs.pop("headers", {})
        return self.session.get(self.base_url + path, headers=headers, timeout=10, **kwargs)

    def stats(self) -> dict[str, Any]:
        return requests.get(self.base_url + "/v1/stats", timeout=10).json()


@pytest.fixture
def make_provider() -> Iterator[Callable[..., SandboxProvider]]:
    started: list[SandboxProvider] = []

    def make(**kwargs: Any) -> SandboxProvider:
        provider = SandboxProvider(**kwargs).start()
        started.append(provider)
        return provider

    yield make
    for provider in started:
        provider.stop()


@pytest.fixture
def provider(make_provider: Callable[..., SandboxProvider]) -> SandboxProvider:
    # Functional tests send bursts, so no limit (it has its own tests below); the frozen clock
    # keeps max_requests_in_any_1s exact however slow the machine is.
    return make_provider(rate_limit=0, clock=FakeClock())


@pytest.fixture
def client(provider: SandboxProvider) -> Iterator[Client]:
    client = Client(provider.url)
    yield client
    client.session.close()


# --- authorize ----------------------------------------------------------------------------------


def test_authorize_ok(client: Client) -> None:
    response = client.pay(key="k1", amount="12.5")
    assert response.status_code == 201
    body = response.json()
    assert body["id"].startswith("pay_")
    assert body["status"] == "authorized"
    assert body["amount"] == "12.50"
    assert body["currency"] == "EUR"
    assert client.stats()["payments"] == 1


def test_declined_is_final_and_replayed(client: Client) -> None:
    first = client.pay(key="k1", source="tok_declined")
    again = client.pay(key="k1", source="tok_declined")
    assert first.status_code == again.status_code == 402
    assert first.json() == again.json() == {"error": {"code": "card_declined", **_msg(first)}}
    assert again.headers["Idempotent-Replayed"] == "true"
    stats = client.stats()
    assert (stats["payments"], stats["declined"]) == (0, 1)


def _msg(response: requests.Response) -> dict[str, str]:
    message = response.json()["error"].get("message")
    return {"message": message} if message else {}


def test_flaky_fails_twice_per_idempotency_key_then_succeeds(client: Client) -> None:
    codes = [client.pay(key="flaky-1", source="tok_flaky") for _ in range(3)]
    assert [r.status_code for r in codes] == [503, 503, 201]
    assert codes[0].json()["error"]["code"] == "unavailable"
    replay = client.pay(key="flaky-1", source="tok_flaky")
    assert replay.status_code == 201
    assert replay.json()["id"] == codes[2].json()["id"]
    # A fresh key starts its own count; capture and refund of a flaky payment behave normally.
    assert client.pay(key="flaky-2", source="tok_flaky").status_code == 503
    payment_id = codes[2].json()["id"]
    assert client.post(f"/v1/payments/{payment_id}/capture", key="c").status_code == 200
    assert client.post(f"/v1/payments/{payment_id}/refund", key="r").status_code == 200
    stats = client.stats()
    assert (stats["payments"], stats["unavailable_503"], stats["requests"]) == (1, 3, 7)


def test_flaky_without_key_counts_per_reference(client: Client) -> None:
    codes = [client.pay(source="tok_flaky", reference="order-9").status_code for _ in range(3)]
    assert codes == [503, 503, 201]
    assert client.pay(source="tok_flaky", reference="order-10").status_code == 503


def test_slow_token_answers_after_two_seconds_and_concurrent_twins_create_one_payment(
    client: Client,
) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=5) as pool:
        futures = [
            pool.submit(Client(client.base_url).pay, key="slow-1", source="tok_slow")
            for _ in range(5)
        ]
        responses = [future.result() for future in futures]
    assert time.monotonic() - started >= 2.0
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    stats = client.stats()
    assert (stats["payments"], stats["idempotent_replays"]) == (1, 4)


# --- idempotency ----------------------------------------------------------------------------------


def test_idempotent_replay_returns_first_response_without_new_payment(client: Client) -> None:
    first = client.pay(key="same")
    second = client.post(
        "/v1/payments",
        data='{"reference": "order-1", "source": "tok_ok", "currency": "EUR", "amount": "12.50"}',
        headers={"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": "same"},
    )
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert "Idempotent-Replayed" not in first.headers
    stats = client.stats()
    assert (stats["payments"], stats["idempotent_replays"]) == (1, 1)


def test_same_key_with_different_body_is_422(client: Client) -> None:
    assert client.pay(key="k").status_code == 201
    reused = client.pay(key="k", amount="99.00")
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert client.stats()["payments"] == 1


def test_idempotency_is_scoped_per_api_key_and_endpoint(client: Client) -> None:
    mine = client.pay(key="shared")
    theirs = client.post("/v1/payments", PAYMENT, key="shared", api_key="sk_test_b")
    assert mine.json()["id"] != theirs.json()["id"]
    payment_id = mine.json()["id"]
    # The same key on capture and refund names two different operations.
    assert client.post(f"/v1/payments/{payment_id}/capture", key="op").status_code == 200
    assert client.post(f"/v1/payments/{payment_id}/refund", key="op").status_code == 200
    assert client.stats()["payments"] == 2


def test_validation_errors_are_not_stored_under_the_key(client: Client) -> None:
    assert client.pay(key="fix-me", amount="-1").status_code == 400
    assert client.pay(key="fix-me").status_code == 201


def test_post_without_idempotency_key_is_not_deduplicated(client: Client) -> None:
    first, second = client.pay(), client.pay()
    assert first.json()["id"] != second.json()["id"]
    assert client.stats()["payments"] == 2


# --- capture / refund -----------------------------------------------------------------------------


def test_capture_then_refund_and_invalid_states(client: Client) -> None:
    payment_id = client.pay(key="p").json()["id"]
    capture = client.post(f"/v1/payments/{payment_id}/capture", key="cap-1")
    assert capture.status_code == 200
    assert capture.json()["status"] == "captured"
    assert client.post(f"/v1/payments/{payment_id}/capture", key="cap-1").status_code == 200
    twice = client.post(f"/v1/payments/{payment_id}/capture", key="cap-2")
    assert twice.status_code == 409
    assert twice.json()["error"]["code"] == "invalid_state"

    refund = client.post(f"/v1/payments/{payment_id}/refund", key="ref-1")
    assert refund.status_code == 200
    assert refund.json()["status"] == "refunded"
    assert client.post(f"/v1/payments/{payment_id}/refund", key="ref-1").status_code == 200
    assert client.post(f"/v1/payments/{payment_id}/refund", key="ref-2").status_code == 409
    assert client.post(f"/v1/payments/{payment_id}/capture", key="cap-3").status_code == 409

    fetched = client.get(f"/v1/payments/{payment_id}").json()
    assert (fetched["status"], fetched["captured"]) == ("refunded", True)
    stats = client.stats()
    assert (stats["captures"], stats["refunds"]) == (1, 1)


def test_refund_voids_an_uncaptured_authorization(client: Client) -> None:
    payment_id = client.pay().json()["id"]
    void = client.post(f"/v1/payments/{payment_id}/refund")
    assert (void.status_code, void.json()["status"], void.json()["captured"]) == (
        200,
        "refunded",
        False,
    )
    assert client.post(f"/v1/payments/{payment_id}/capture").status_code == 409


def test_get_payment_and_not_found(client: Client) -> None:
    created = client.pay(reference="order-42").json()
    fetched = client.get(f"/v1/payments/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == created | {"reference": "order-42"}
    for response in (
        client.get("/v1/payments/pay_missing"),
        client.post("/v1/payments/pay_missing/capture", key="x"),
        client.post("/v1/payments/pay_missing/refund"),
        client.get("/v1/nothing-here"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert client.get("/v1/payments").status_code == 405


def test_get_payment_reports_status_and_amounts_through_capture_and_refund(
    client: Client,
) -> None:
    payment_id = client.pay(amount="30").json()["id"]

    def read() -> tuple[str, bool, str, str, str]:
        body = client.get(f"/v1/payments/{payment_id}").json()
        return (
            body["status"],
            body["captured"],
            body["amount"],
            body["amount_captured"],
            body["amount_refunded"],
        )

    assert read() == ("authorized", False, "30.00", "0.00", "0.00")
    client.post(f"/v1/payments/{payment_id}/capture")
    assert read() == ("captured", True, "30.00", "30.00", "0.00")
    client.post(f"/v1/payments/{payment_id}/refund")
    assert read() == ("refunded", True, "30.00", "30.00", "30.00")
    voided = client.pay().json()["id"]
    client.post(f"/v1/payments/{voided}/refund")
    body = client.get(f"/v1/payments/{voided}").json()
    assert (body["status"], body["amount_captured"], body["amount_refunded"]) == (
        "refunded",
        "0.00",
        "0.00",
    )


# --- auth and validation --------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", "Basic abc", "Token x"])
def test_missing_or_malformed_authorization_is_401(
    client: Client, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = requests.post(
        client.base_url + "/v1/payments", json=PAYMENT, headers=headers, timeout=10
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert client.stats()["requests"] == 1


def test_api_key_allow_list(make_provider: Callable[..., SandboxProvider]) -> None:
    provider = make_provider(api_keys={"sk_live_good"})
    assert Client(provider.url, "sk_live_good").pay().status_code == 201
    assert Client(provider.url, "sk_other").pay().status_code == 401
    assert Client(provider.url, "sk_other").get("/v1/payments/pay_x").status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        "[1, 2]",
        {"currency": "EUR", "source": "tok_ok", "reference": "o"},
        PAYMENT | {"amount": 12.5},
        PAYMENT | {"amount": "0"},
        PAYMENT | {"amount": "0.00"},
        PAYMENT | {"amount": "-1.00"},
        PAYMENT | {"amount": "abc"},
        PAYMENT | {"amount": "1.234"},
        PAYMENT | {"amount": "NaN"},
        PAYMENT | {"currency": "eur"},
        PAYMENT | {"source": "tok_unknown"},
        PAYMENT | {"source": "card_4242"},
        PAYMENT | {"reference": ""},
        {k: v for k, v in PAYMENT.items() if k != "reference"},
    ],
)
def test_invalid_requests_are_400(client: Client, body: Any) -> None:
    if isinstance(body, str):
        response = client.post("/v1/payments", data=body, key="bad")
    else:
        response = client.post("/v1/payments", body, key="bad")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert response.json()["error"]["message"]
    assert client.stats()["payments"] == 0


def test_integer_reference_is_accepted_and_stored(client: Client) -> None:
    created = client.pay(reference=17).json()
    assert client.get(f"/v1/payments/{created['id']}").json()["reference"] == 17


# --- rate limit -----------------------------------------------------------------------------------


def test_third_quick_request_is_429_with_integer_retry_after(
    make_provider: Callable[..., SandboxProvider],
) -> None:
    provider = make_provider()  # the real limit: 2 per rolling second per key
    client = Client(provider.url)
    responses = [client.get("/v1/payments/pay_unknown") for _ in range(3)]
    assert [r.status_code for r in responses] == [404, 404, 429]
    assert responses[2].headers["Retry-After"] == "1"
    assert responses[2].json()["error"]["code"] == "rate_limited"
    # Another key has its own budget; /v1/stats is never limited nor counted.
    other = Client(provider.url, "sk_test_b")
    assert [other.pay().status_code for _ in range(2)] == [201, 201]
    stats = [client.stats() for _ in range(5)][-1]
    assert (stats["requests"], stats["rejected_429"], stats["max_requests_in_any_1s"]) == (5, 1, 4)
    assert stats["per_key"] == {
        API_KEY: {"requests": 3, "rejected_429": 1},
        "sk_test_b": {"requests": 2, "rejected_429": 0},
    }


def test_rolling_window_counts_only_admitted_requests(
    make_provider: Callable[..., SandboxProvider],
) -> None:
    clock = FakeClock()
    provider = make_provider(rate_limit=2, window=1.0, clock=clock)
    client = Client(provider.url)

    def at(offset: float) -> int:
        clock.now = 1000.0 + offset
        return client.get("/v1/payments/pay_x").status_code

    assert [at(0.0), at(0.1), at(0.5), at(0.99)] == [404, 404, 429, 429]
    # 0.0 leaves the window at 1.0; the rejected arrivals at 0.5 and 0.99 take no slot.
    assert at(1.0) == 404
    assert at(1.05) == 429
    assert at(1.1) == 404
    stats = provider.stats()
    assert (stats["requests"], stats["rejected_429"]) == (7, 3)


def test_retry_after_rounds_up_to_whole_seconds(
    make_provider: Callable[..., SandboxProvider],
) -> None:
    clock = FakeClock()
    provider = make_provider(rate_limit=1, window=5.0, clock=clock)
    client = Client(provider.url)
    assert client.pay().status_code == 201
    clock.now += 0.5
    rejected = client.pay()
    assert (rejected.status_code, rejected.headers["Retry-After"]) == (429, "5")
    clock.now += 4.2
    assert client.pay().headers["Retry-After"] == "1"
    clock.now += 0.3
    assert client.pay().status_code == 201
    assert provider.stats()["payments"] == 2


def test_auth_failures_do_not_use_the_budget(make_provider: Callable[..., SandboxProvider]) -> None:
    provider = make_provider(rate_limit=2, window=60.0)
    assert [Client(provider.url, None).pay().status_code for _ in range(3)] == [401] * 3
    assert [Client(provider.url).pay().status_code for _ in range(3)] == [201, 201, 429]


# --- stats ----------------------------------------------------------------------------------------


def test_stats_are_exact(client: Client, provider: SandboxProvider) -> None:
    payment_id = client.pay(key="a").json()["id"]
    client.pay(key="a")  # replay
    client.pay(key="d", source="tok_declined")
    client.post(f"/v1/payments/{payment_id}/capture", key="c")
    client.post(f"/v1/payments/{payment_id}/capture", key="c")  # replay
    client.post(f"/v1/payments/{payment_id}/refund", key="r")
    client.post(f"/v1/payments/{payment_id}/capture", key="c2")  # 409
    client.pay(amount="nope")  # 400
    Client(client.base_url, None).pay()  # 401
    expected = {
        "requests": 9,
        "rejected_429": 0,
        "max_requests_in_any_1s": 8,
        "payments": 1,
        "captures": 1,
        "refunds": 1,
        "declined": 1,
        "unavailable_503": 0,
        "idempotent_replays": 2,
        "outage_refused": 0,
        "answers_dropped": 0,
        "per_key": {API_KEY: {"requests": 8, "rejected_429": 0}},
    }
    assert client.stats() == expected
    assert provider.stats() == expected


def test_max_requests_in_any_1s_counts_a_burst(
    make_provider: Callable[..., SandboxProvider],
) -> None:
    client = Client(make_provider(rate_limit=0).url)  # the real clock
    for _ in range(5):
        client.get("/v1/payments/pay_x")
    assert client.stats()["max_requests_in_any_1s"] == 5


def test_max_requests_in_any_1s_uses_half_open_windows(
    make_provider: Callable[..., SandboxProvider],
) -> None:
    clock = FakeClock()
    provider = make_provider(rate_limit=0, clock=clock)
    client = Client(provider.url)
    for offset in (0.0, 0.2, 0.9, 1.0, 1.1, 2.5):
        clock.now = 1000.0 + offset
        client.get("/v1/payments/pay_x")
    # [0.2, 1.2) holds 0.2, 0.9, 1.0, 1.1; [0.0, 1.0) excludes 1.0.
    assert provider.stats()["max_requests_in_any_1s"] == 4


def test_max_requests_in_any_1s_ignores_rejected_requests(
    make_provider: Callable[..., SandboxProvider],
) -> None:
    provider = make_provider(rate_limit=2, window=60.0)
    client = Client(provider.url)
    for _ in range(5):
        client.get("/v1/payments/pay_x")
    stats = provider.stats()
    assert (stats["max_requests_in_any_1s"], stats["rejected_429"]) == (2, 3)


def test_payments_lists_every_payment_with_its_reference_and_outcome(
    client: Client, provider: SandboxProvider
) -> None:
    assert provider.payments() == []
    captured = client.pay(key="a", reference="order-1").json()["id"]
    client.post(f"/v1/payments/{captured}/capture", key="a-cap")
    voided = client.pay(key="b", reference="order-2").json()["id"]
    client.post(f"/v1/payments/{voided}/refund", key="b-ref")
    refunded = client.pay(key="c", reference=3).json()["id"]
    client.post(f"/v1/payments/{refunded}/capture", key="c-cap")
    client.post(f"/v1/payments/{refunded}/refund", key="c-ref")
    assert client.pay(key="a", reference="order-1").json()["id"] == captured  # a replay
    client.pay(key="d", reference="order-4", source="tok_declined")
    pending = client.pay(key="e", reference="order-5").json()["id"]

    assert provider.payments() == [
        {
            "id": captured,
            "reference": "order-1",
            "status": "captured",
            "captured": True,
            "refunded": False,
        },
        {
            "id": voided,
            "reference": "order-2",
            "status": "refunded",
            "captured": False,
            "refunded": True,
        },
        {"id": refunded, "reference": 3, "status": "refunded", "captured": True, "refunded": True},
        {
            "id": pending,
            "reference": "order-5",
            "status": "authorized",
            "captured": False,
            "refunded": False,
        },
    ]
    # A snapshot: changing it changes nothing in the provider.
    provider.payments()[0]["status"] = "refunded"
    assert provider.payments()[0]["status"] == "captured"
    provider.reset()
    assert provider.payments() == []


def test_reset_clears_everything(client: Client, provider: SandboxProvider) -> None:
    payment_id = client.pay(key="a").json()["id"]
    provider.reset()
    assert client.get(f"/v1/payments/{payment_id}").status_code == 404
    assert client.pay(key="a").json()["id"] != payment_id
    assert client.stats()["requests"] == 2
    assert client.stats()["payments"] == 1


# --- server behaviour -----------------------------------------------------------------------------


def test_latency_delays_every_answer(make_provider: Callable[..., SandboxProvider]) -> None:
    provider = make_provider(rate_limit=0, latency=0.2)
    started = time.monotonic()
    assert Client(provider.url).pay().status_code == 201
    assert time.monotonic() - started >= 0.2


def test_stop_closes_the_server_and_keep_alive_connections() -> None:
    with SandboxProvider() as provider:
        client = Client(provider.url)
        assert client.get("/v1/payments/pay_x").status_code == 404
    with pytest.raises(requests.ConnectionError):
        client.get("/v1/payments/pay_x")


def test_quiet_by_default_and_one_line_per_request_when_verbose(
    make_provider: Callable[..., SandboxProvider], capsys: pytest.CaptureFixture[str]
) -> None:
    Client(make_provider().url).pay()
    assert capsys.readouterr().err == ""
    verbose = make_provider(verbose=True)
    Client(verbose.url).pay()
    Client(verbose.url).get("/v1/stats")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert '"POST /v1/payments HTTP/1.1" 201' in lines[0]


# --- faults: outage and lost answers ----------------------------------------------------------


def test_outage_drops_connections_without_effect_until_switched_off(
    client: Client, provider: SandboxProvider
) -> None:
    payment_id = client.pay().json()["id"]
    provider.set_outage(True)
    with pytest.raises(requests.ConnectionError):
        client.pay(key="during-outage")
    with pytest.raises(requests.ConnectionError):
        client.get(f"/v1/payments/{payment_id}")
    stats = client.stats()  # the operator endpoints keep answering
    assert (stats["requests"], stats["payments"], stats["outage_refused"]) == (1, 1, 2)
    assert client.get("/v1/sandbox/faults").json()["outage"] is True

    provider.set_outage(False)
    assert client.pay(key="during-outage").status_code == 201  # nothing was stored under the key
    assert client.stats()["payments"] == 2


def test_outage_in_503_mode_answers_unavailable(client: Client, provider: SandboxProvider) -> None:
    provider.set_outage(True, mode="503")
    response = client.pay(key="k")
    assert (response.status_code, response.json()["error"]["code"]) == (503, "unavailable")
    assert client.stats()["payments"] == 0
    with pytest.raises(ValueError, match="mode"):
        provider.set_outage(True, mode="hang")


def test_lost_answer_after_effect_captures_but_drops_the_connection(
    client: Client, provider: SandboxProvider
) -> None:
    first, second = client.pay().json()["id"], client.pay().json()["id"]
    provider.drop_answers_after_effect(path_regex=r"/capture$", count=1)

    with pytest.raises(requests.ConnectionError):
        client.post(f"/v1/payments/{first}/capture", key="capture-1")
    # The effect happened: the provider captured, and a retry under the key replays the answer.
    assert client.get(f"/v1/payments/{first}").json()["status"] == "captured"
    stats = client.stats()
    assert (stats["captures"], stats["answers_dropped"]) == (1, 1)
    retry = client.post(f"/v1/payments/{first}/capture", key="capture-1")
    assert (retry.status_code, retry.headers.get("Idempotent-Replayed")) == (200, "true")
    # count=1: the next capture is answered, and calls not matching the path never were dropped.
    assert client.post(f"/v1/payments/{second}/capture").status_code == 200
    assert client.stats()["captures"] == 2
    assert provider.faults()["drop_after_effect"] == []


def test_lost_answers_are_used_up_only_by_requests_that_took_effect(
    client: Client, provider: SandboxProvider
) -> None:
    provider.drop_answers_after_effect(path_regex="capture", count=2, method="post")
    assert client.post("/v1/payments/pay_missing/capture").status_code == 404
    payment_id = client.pay().json()["id"]
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            client.post(f"/v1/payments/{payment_id}/capture", key="same")
    assert client.post(f"/v1/payments/{payment_id}/capture", key="same").status_code == 200
    assert client.stats()["answers_dropped"] == 2
    with pytest.raises(ValueError, match="count"):
        provider.drop_answers_after_effect(path_regex="capture", count=0)


def test_faults_control_endpoint_switches_without_auth(
    client: Client, provider: SandboxProvider
) -> None:
    faults_url = client.base_url + "/v1/sandbox/faults"
    state = requests.post(faults_url, json={"outage": True, "mode": "503"}, timeout=10).json()
    assert state == {"outage": True, "mode": "503", "drop_after_effect": []}
    assert client.pay().status_code == 503
    state = requests.post(
        faults_url,
        json={"outage": False, "drop_after_effect": {"path": "/refund$", "count": 3}},
        timeout=10,
    ).json()
    assert state == {
        "outage": False,
        "mode": None,
        "drop_after_effect": [{"path": "/refund$", "count": 3, "method": None}],
    }
    assert client.pay().status_code == 201
    assert requests.get(faults_url, timeout=10).json() == provider.faults() == state
    cleared = requests.post(faults_url, json={"clear": True}, timeout=10).json()
    assert cleared == {"outage": False, "mode": None, "drop_after_effect": []}
    stats = client.stats()  # control calls are not provider requests; outage calls never arrived
    assert (stats["requests"], stats["outage_refused"]) == (1, 1)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"outage": "yes"},
        {"outage": True, "mode": "hang"},
        {"drop_after_effect": {"count": 1}},
        {"drop_after_effect": {"path": "(", "count": 1}},
        {"drop_after_effect": {"path": "capture", "count": 0}},
        {"drop_after_effect": {"path": "capture", "count": True}},
        {"surprise": 1},
    ],
)
def test_faults_control_endpoint_rejects_bad_bodies_and_changes_nothing(
    client: Client, provider: SandboxProvider, body: Any
) -> None:
    provider.set_outage(True, mode="503")
    response = requests.post(client.base_url + "/v1/sandbox/faults", json=body, timeout=10)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_request")
    assert provider.faults() == {"outage": True, "mode": "503", "drop_after_effect": []}


def test_reset_clears_the_faults(client: Client, provider: SandboxProvider) -> None:
    provider.set_outage(True)
    provider.drop_answers_after_effect(path_regex="capture")
    provider.reset()
    assert provider.faults() == {"outage": False, "mode": None, "drop_after_effect": []}
    assert client.pay().status_code == 201


def test_sandbox_faults_command_switches_a_running_sandbox(
    client: Client, provider: SandboxProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("sandbox_faults", "--url", provider.url, "outage", "on")
    with pytest.raises(requests.ConnectionError):
        client.pay()
    call_command("sandbox_faults", "--url", provider.url, "outage", "off")
    payment_id = client.pay().json()["id"]
    call_command("sandbox_faults", "--url", provider.url, "drop-after-effect", "--path", "capture")
    with pytest.raises(requests.ConnectionError):
        client.post(f"/v1/payments/{payment_id}/capture")
    assert client.stats()["captures"] == 1
    call_command("sandbox_faults", "--url", provider.url, "status")
    lines = capsys.readouterr().out.splitlines()
    assert '"outage": true' in lines[0]
    assert lines[-1] == '{"drop_after_effect": [], "mode": null, "outage": false}'


def test_sandbox_faults_command_reports_an_unreachable_sandbox_in_one_line() -> None:
    with SandboxProvider() as stopped:
        url = stopped.url
    with pytest.raises(CommandError, match="did not answer") as error:
        call_command("sandbox_faults", "--url", url, "clear")
    assert "\n" not in str(error.value)
