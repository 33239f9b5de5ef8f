"""Fixtures of the unit tests: both clients over ``httpx.MockTransport``, and recorded sleeps."""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest

import ferrohsm.async_client
import ferrohsm.client
from ferrohsm import AsyncClient, Client, RetryPolicy

AnyClient = Client | AsyncClient
Handler = Callable[[httpx.Request], httpx.Response]
T = TypeVar("T")


@dataclass
class Mock:
    """A scripted server: answers in order (the last one repeats) and records the requests."""

    answers: list[httpx.Response | Handler]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        index = min(len(self.requests), len(self.answers)) - 1
        answer = self.answers[index]
        return answer if isinstance(answer, httpx.Response) else answer(request)

    def body(self, index: int = -1) -> Any:
        content = self.requests[index].content
        return json.loads(content) if content else None


def reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    headers = {"X-Request-Id": "req-1", **(headers or {})}
    if body is None:
        return httpx.Response(status, headers=headers)
    if isinstance(body, (bytes, str)):
        return httpx.Response(status, content=body, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def error_body(code: str, message: str = "m", request_id: str = "req-1") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": request_id}}


@dataclass
class Flavour:
    """Builds a Client or an AsyncClient over a mock, and runs either's calls the same way."""

    name: str

    def client(
        self,
        mock: Mock,
        token: ferrohsm.TokenSource = "tok",
        retry: RetryPolicy | None = None,
    ) -> AnyClient:
        transport = httpx.MockTransport(mock)
        if self.name == "sync":
            return Client("https://hsm.test", token, transport=transport, retry=retry)
        return AsyncClient("https://hsm.test", token, transport=transport, retry=retry)

    async def run(self, value: Awaitable[T] | T) -> T:
        """The result of a client call: awaited for an AsyncClient."""
        if inspect.isawaitable(value):
            return await value
        return value

    async def collect(self, items: Iterator[T] | AsyncIterator[T]) -> list[T]:
        if isinstance(items, AsyncIterator):
            return [item async for item in items]
        return list(items)

    async def with_approval(
        self,
        client: AnyClient,
        call: Callable[[AnyClient, str | None], Any],
        **options: Any,
    ) -> Any:
        """``client.with_approval`` around ``call(client, approval_id)``."""
        if isinstance(client, AsyncClient):
            async_client = client

            async def request(approval_id: str | None) -> Any:
                return await call(async_client, approval_id)

            return await async_client.with_approval(request, **options)
        sync_client = client
        return sync_client.with_approval(lambda aid: call(sync_client, aid), **options)

    async def close(self, client: AnyClient) -> None:
        if isinstance(client, AsyncClient):
            await client.aclose()
        else:
            client.close()


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return Flavour(str(request.param))


@dataclass
class Sleeps:
    """Every sleep the clients asked for, in seconds (none is actually slept)."""

    seconds: list[float] = field(default_factory=list)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    recorded = Sleeps()

    def sync_sleep(seconds: float) -> None:
        recorded.seconds.append(seconds)

    async def async_sleep(seconds: float) -> None:
        recorded.seconds.append(seconds)

    monkeypatch.setattr(ferrohsm.client, "_sleep", sync_sleep)
    monkeypatch.setattr(ferrohsm.async_client, "_sleep", async_sleep)
    return recorded
