"""Authenticated access to the generated gRPC stubs: :class:`AuthStub` adds the API key to
every call, and :func:`call` turns a failed call into the SDK's typed error."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional

import grpc
import grpc.aio

from .errors import from_rpc_error

#: Deadline of a client call that does not wait, in seconds.
CALL_TIMEOUT = 30.0


class AuthStub:
    """Wraps a generated stub so every call carries the API key."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._stub, name)

        def invoke(request: Any, *, timeout: Optional[float] = None, metadata: Any = None) -> Awaitable[Any]:
            return method(request, timeout=timeout, metadata=self._metadata)  # type: ignore[no-any-return]

        return invoke


async def call(stub: Any, method: str, request: Any, timeout: float = CALL_TIMEOUT) -> Any:
    """Calls ``stub.method(request)``; a failure raises the typed :class:`StackShiftError`."""
    try:
        return await getattr(stub, method)(request, timeout=timeout)
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error) from None
