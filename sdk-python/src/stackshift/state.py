"""The state store: durable JSON values by key with optional expiry, atomic counters,
compare-and-set, and locks with fencing tokens, scoped to the API key's namespace.

:class:`State` comes in two flavours with the same methods:

- ``stackshift.state``, outside runs: every call applies directly.
- ``ctx.state`` in a job handler: every call is **journaled** like a step, under the run's
  lease. Calls get the ids ``state:1``, ``state:2``, ... in the order the handler makes them;
  when an attempt is retried, the replayed handler gets the recorded results back (an
  increment is never applied twice, a read returns what it read the first time). So make state
  calls in a deterministic order, as with steps, and do not run two of them concurrently inside
  one run. Step ids starting with ``state:`` are reserved.

Refusals that depend on the stored state raise :class:`~stackshift.ConflictError` with a
``reason`` (``VERSION_MISMATCH``, ``NOT_AN_INTEGER``, ``COUNTER_OVERFLOW``, ``LOCK_NOT_HELD``);
inside a run, a lost lease raises :class:`~stackshift.AttemptInterruptedError` instead.

Example::

    key = f"imports:{import_id}:progress"
    await state.set(key, {"processed": 100, "total": 500})
    progress = await state.get(key)
    if progress["processed"] == progress["total"]:
        await state.delete(key)
    await state.set("webhooks:stripe:evt_123", {"processed": True}, ttl="7d")
    processed = await state.increment(f"imports:{import_id}:processed")
    lock = await state.lock(f"search-index:{customer_id}", ttl="30s", wait="5s")
    if lock is not None:
        async with lock:  # released on exit
            await rebuild(customer_id, fencing_token=lock.token)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Optional

import grpc
import grpc.aio
from google.protobuf import timestamp_pb2

from . import _json
from ._duration import DurationLike, to_proto, to_timedelta
from ._stub import CALL_TIMEOUT, call
from .errors import conflict_reason, from_rpc_error
from .v1 import state_pb2

if TYPE_CHECKING:
    from ._worker.lease import Lease

#: Extra seconds on top of a lock wait before the client gives up on the call.
_WAIT_SLACK = 10.0


@dataclass
class StateEntry:
    """A live key with its value (see :meth:`State.get_entry`)."""

    key: str
    #: The value (decoded JSON).
    value: Any
    #: Grows with every write; pass it as ``expected_version`` for compare-and-set.
    version: int
    #: When the key expires, if it does.
    expires_at: Optional[datetime]
    #: When the key was last written.
    updated_at: Optional[datetime]


@dataclass
class StateKey:
    """A live key in a listing (without its value)."""

    key: str
    version: int
    expires_at: Optional[datetime]
    updated_at: Optional[datetime]
    #: Size of its JSON value in bytes.
    value_size: int


@dataclass
class KeyPage:
    """One page of :meth:`State.list`."""

    #: The keys, in ascending byte order.
    keys: list[StateKey]
    #: Pass as ``page_token`` for the next page; ``None`` on the last page.
    next_page_token: Optional[str] = None


def _time(message: Any, name: str) -> Optional[datetime]:
    if not message.HasField(name):
        return None
    ts: timestamp_pb2.Timestamp = getattr(message, name)
    return ts.ToDatetime(tzinfo=timezone.utc)


class _Refused:
    """A state refusal carried through the worker write path as a value."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        self.error = error


class State:
    """Access to the state store (see the module docs for ``stackshift.state`` versus
    ``ctx.state``)."""

    def __init__(self, stub: Callable[[], Any], lease: Optional["Lease"] = None) -> None:
        self._stub = stub
        self._lease = lease
        self._calls = 0

    @property
    def is_journaled(self) -> bool:
        """True for a handler's ``ctx.state``, whose calls are journaled in the run."""
        return self._lease is not None

    async def _invoke(self, method: str, request: Any, wait: float = 0.0) -> Any:
        extra = wait + _WAIT_SLACK if wait > 0 else 0.0
        lease = self._lease
        if lease is None:
            return await call(self._stub(), method, request, timeout=CALL_TIMEOUT + extra)
        from ._worker.lease import GaveUp, Interrupted, Ok, write

        self._calls += 1
        request.run.CopyFrom(
            state_pb2.RunContext(run_id=lease.run_id, lease_token=lease.token, call_id=f"state:{self._calls}")
        )
        stub = self._stub()

        async def send(timeout: float) -> Any:
            try:
                return await getattr(stub, method)(request, timeout=timeout + extra)
            except grpc.aio.AioRpcError as error:
                # A refusal is an answer, not a lost lease (both are FAILED_PRECONDITION).
                if conflict_reason(error) is not None:
                    return _Refused(error)
                raise

        result = await write(lease, method, send)
        if isinstance(result, Ok):
            if isinstance(result.value, _Refused):
                raise from_rpc_error(result.value.error)
            return result.value
        if isinstance(result, Interrupted):
            raise result.error
        if isinstance(result, GaveUp):
            lease.interrupt(f"the server stayed unreachable until the lease expired ({result.error.details()})")
            raise lease.error()
        raise from_rpc_error(result.error)

    async def get(self, key: str) -> Any:
        """The value of ``key``; ``None`` when the key is absent or expired."""
        entry = await self.get_entry(key)
        return None if entry is None else entry.value

    async def get_entry(self, key: str) -> Optional[StateEntry]:
        """The entry of ``key`` (value, version, expiry); ``None`` when absent or expired."""
        response = await self._invoke("GetState", state_pb2.GetStateRequest(key=key))
        if not response.HasField("entry"):
            return None
        e = response.entry
        return StateEntry(
            key=e.key,
            value=_json.decode(e.value, f"the value of {key}"),
            version=e.version,
            expires_at=_time(e, "expires_at"),
            updated_at=_time(e, "updated_at"),
        )

    async def set(
        self,
        key: str,
        value: Any,
        *,
        ttl: Optional[DurationLike] = None,
        expires_at: Optional[datetime] = None,
        expected_version: Optional[int] = None,
    ) -> int:
        """Writes ``value`` (any JSON value) to ``key``; returns the key's new version.

        ``ttl`` (``"7d"``, a timedelta or seconds) or ``expires_at`` (an aware datetime; naive
        means UTC) make the key expire; without either it never expires (a set replaces an
        earlier expiry). ``expected_version`` makes it a compare-and-set (``0`` = only if
        absent): on a mismatch it raises :class:`~stackshift.ConflictError`
        (``VERSION_MISMATCH``) and writes nothing.
        """
        request = state_pb2.SetStateRequest(key=key, value=_json.encode(value, f"the value of {key}"))
        if ttl is not None and expires_at is not None:
            from .errors import InvalidArgumentError

            raise InvalidArgumentError("pass ttl or expires_at, not both")
        if ttl is not None:
            request.ttl.CopyFrom(to_proto(to_timedelta(ttl, "ttl")))
        if expires_at is not None:
            request.expires_at.FromDatetime(expires_at)
        if expected_version is not None:
            request.expected_version = expected_version
        response = await self._invoke("SetState", request)
        return int(response.version)

    async def delete(self, key: str, *, expected_version: Optional[int] = None) -> bool:
        """Deletes ``key``; returns whether a live key was deleted. With ``expected_version``,
        deletes only at that version (else :class:`~stackshift.ConflictError`)."""
        request = state_pb2.DeleteStateRequest(key=key)
        if expected_version is not None:
            request.expected_version = expected_version
        response = await self._invoke("DeleteState", request)
        return bool(response.deleted)

    async def increment(self, key: str, by: int = 1, *, ttl: Optional[DurationLike] = None) -> int:
        """Adds ``by`` (negative to subtract) to the integer counter at ``key`` atomically and
        returns the new value. An absent key counts from 0. ``ttl`` sets the key's expiry. A
        non-integer value raises :class:`~stackshift.ConflictError` (``NOT_AN_INTEGER``)."""
        request = state_pb2.IncrementStateRequest(key=key, by=by)
        if ttl is not None:
            request.ttl.CopyFrom(to_proto(to_timedelta(ttl, "ttl")))
        response = await self._invoke("IncrementState", request)
        return int(response.value)

    async def list(self, prefix: str = "", *, page_size: Optional[int] = None, page_token: Optional[str] = None) -> KeyPage:
        """One page of the live keys starting with ``prefix`` (``""`` for all), in byte order."""
        request = state_pb2.ListStateKeysRequest(prefix=prefix, page_size=page_size or 0, page_token=page_token or "")
        response = await self._invoke("ListStateKeys", request)
        return KeyPage(
            keys=[
                StateKey(
                    key=k.key,
                    version=k.version,
                    expires_at=_time(k, "expires_at"),
                    updated_at=_time(k, "updated_at"),
                    value_size=k.value_size,
                )
                for k in response.keys
            ],
            next_page_token=response.next_page_token or None,
        )

    async def lock(
        self,
        key: str,
        ttl: DurationLike,
        *,
        wait: Optional[DurationLike] = None,
        release_with_run: Optional[bool] = None,
    ) -> Optional["Lock"]:
        """Takes the lock ``key`` for ``ttl`` (at most 24 h) unless extended or released,
        waiting up to ``wait`` (at most 60 s) for a held lock to become free. Returns the
        :class:`Lock` with its fencing token, or ``None`` when it stayed busy.

        Inside a run the lock is by default released when the run completes, fails for good
        or is cancelled (``release_with_run``; outside a run it must stay unset).
        """
        wait_td = None if wait is None else to_timedelta(wait, "wait")
        request = state_pb2.AcquireLockRequest(
            key=key,
            release_with_run=self.is_journaled if release_with_run is None else release_with_run,
        )
        request.ttl.CopyFrom(to_proto(to_timedelta(ttl, "ttl")))
        if wait_td is not None:
            request.wait.CopyFrom(to_proto(wait_td))
        response = await self._invoke("AcquireLock", request, wait=0.0 if wait_td is None else wait_td.total_seconds())
        if not response.granted:
            return None
        return Lock(self, key, int(response.fencing_token), _time(response, "expires_at"))


    async def release_lock(self, key: str, token: int) -> None:
        """Releases the lock ``key`` held with fencing token ``token`` (e.g. a token kept from
        an earlier :meth:`lock`). Raises :class:`~stackshift.ConflictError` (``LOCK_NOT_HELD``)
        when the token no longer holds it."""
        await self._invoke("ReleaseLock", state_pb2.ReleaseLockRequest(key=key, fencing_token=token))


class Lock:
    """A held lock: extend it while working, release it when done (also on leaving
    ``async with lock:``). Forgetting it does not release it: its TTL, or the end of the run it
    is tied to, does."""

    def __init__(self, state: State, key: str, token: int, expires_at: Optional[datetime]) -> None:
        self._state = state
        #: The lock's key.
        self.key = key
        #: The fencing token: larger than every token this lock had before. Pass it to the
        #: systems the lock protects so they can refuse a stale owner.
        self.token = token
        #: When the lock expires (as of the grant or the last extension).
        self.expires_at = expires_at

    async def extend(self, ttl: DurationLike) -> Optional[datetime]:
        """Gives the lock a new TTL counted from now. Raises :class:`~stackshift.ConflictError`
        (``LOCK_NOT_HELD``) when it expired or was taken by someone else meanwhile."""
        request = state_pb2.ExtendLockRequest(key=self.key, fencing_token=self.token)
        request.ttl.CopyFrom(to_proto(to_timedelta(ttl, "ttl")))
        response = await self._state._invoke("ExtendLock", request)
        self.expires_at = _time(response, "expires_at")
        return self.expires_at

    async def release(self) -> None:
        """Releases the lock. Raises :class:`~stackshift.ConflictError` (``LOCK_NOT_HELD``) when
        the token no longer holds it."""
        await self._state.release_lock(self.key, self.token)

    async def __aenter__(self) -> "Lock":
        return self

    async def __aexit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        await self.release()

    def __repr__(self) -> str:
        return f"Lock(key={self.key!r}, token={self.token})"
