"""Unit tests of the pure parts: durations, occurrence suffixes, errors, JSON."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stackshift import (
    InvalidArgumentError,
    NonRetryableError,
    Occurrences,
    StepFailedError,
    is_non_retryable,
    parse_duration,
)
from stackshift import _json
from stackshift.errors import failure_from_error
from stackshift.run import Failure


def test_durations_parse_like_every_sdk() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration(" 500ms ") == timedelta(milliseconds=500)
    assert parse_duration("2w") == timedelta(days=14)
    assert parse_duration("1d12h") == timedelta(hours=36)
    for bad in ["", "soon", "10", "5x", "1h 30m", "-1s"]:
        with pytest.raises(InvalidArgumentError):
            parse_duration(bad)


def test_occurrence_suffixes() -> None:
    o = Occurrences()
    ids = [o.next(i) for i in ["download", "import-batch", "import-batch", "import-batch", "mark"]]
    assert ids == ["download", "import-batch", "import-batch#2", "import-batch#3", "mark"]
    p = Occurrences()
    assert [p.next(i) for i in ["a", "b", "a", "b", "a"]] == ["a", "b", "a#2", "b#2", "a#3"]


def test_explicit_id_colliding_with_a_suffix_is_refused() -> None:
    o = Occurrences()
    assert o.next("a#2") == "a#2"
    assert o.next("a") == "a"
    with pytest.raises(NonRetryableError):
        o.next("a")


def test_non_retryable_detection() -> None:
    assert is_non_retryable(NonRetryableError("declined"))
    try:
        try:
            raise NonRetryableError("declined")
        except NonRetryableError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert is_non_retryable(outer)
    assert not is_non_retryable(RuntimeError("plain"))
    replayed = StepFailedError("s", Failure(message="m", non_retryable=True))
    assert is_non_retryable(replayed)
    f = failure_from_error(NonRetryableError("declined", details={"reason": "card"}))
    assert (f.type, f.non_retryable, f.details) == ("NonRetryableError", True, {"reason": "card"})
    assert failure_from_error(ValueError("v")).type == "ValueError"


def test_json_round_trip() -> None:
    value = {"s": "ü€😀", "n": [1, 2.5, None, True]}
    assert _json.decode(_json.encode(value)) == value
    assert _json.encode("ü") == '"ü"'.encode()
    assert _json.decode(b"") is None
    with pytest.raises(InvalidArgumentError):
        _json.encode({"bad": object()})
    with pytest.raises(InvalidArgumentError):
        _json.encode(float("nan"))


def test_event_wait_output_decodes() -> None:
    from stackshift.events import event_from_wait_output

    event = event_from_wait_output(
        b'{"timedOut":false,"event":{"id":"e1","name":"payment.confirmed","correlationKey":"pay_1",'
        b'"payload":{"amount":5},"publishedAt":1700000000123}}'
    )
    assert event is not None
    assert (event.id, event.name, event.key, event.payload) == ("e1", "payment.confirmed", "pay_1", {"amount": 5})
    assert event.published_at is not None and int(event.published_at.timestamp() * 1000) == 1_700_000_000_123
    assert event_from_wait_output(b'{"timedOut":true}') is None
    no_key = event_from_wait_output(b'{"timedOut":false,"event":{"id":"e2","name":"n","payload":null,"publishedAt":1}}')
    assert no_key is not None and no_key.key is None and no_key.payload is None


def test_reserved_and_suffixed_ids_share_one_counter() -> None:
    import pytest

    from stackshift import NonRetryableError
    from stackshift.context import Step

    step = Step(None, None, {})  # type: ignore[arg-type]
    assert [step._effective_id(i) for i in ("nap", "work", "nap")] == ["nap", "work", "nap#2"]
    with pytest.raises(NonRetryableError, match="reserved"):
        step._effective_id("state:1")


def test_child_and_combined_wait_journal_outputs_decode() -> None:
    from stackshift import ChildFailedError
    from stackshift.children import outcomes_from_journal
    from stackshift.waits import all_from_journal, any_from_journal

    out = (
        b'{"children":[{"runId":"a","job":"j","status":"completed","result":{"n":2}},'
        b'{"runId":"b","job":"j","status":"cancelled","failure":{"message":"parent run p was cancelled",'
        b'"errorType":"ParentCancelled","nonRetryable":false}}]}'
    )
    ok, cancelled = outcomes_from_journal(out)
    assert ok.result_or_raise() == {"n": 2}
    assert cancelled.failure is not None and cancelled.failure.type == "ParentCancelled"
    with pytest.raises(ChildFailedError) as raised:
        cancelled.result_or_raise()
    assert raised.value.status == "cancelled" and raised.value.non_retryable
    assert str(raised.value) == "child run b (j) was cancelled: parent run p was cancelled"
    with pytest.raises(ValueError):
        outcomes_from_journal(b'{"children":[{"runId":"a","status":"lost"}]}')

    ev = b'{"timedOut":false,"event":{"id":"e1","name":"n","correlationKey":"k","payload":{"a":1},"publishedAt":1700000000000}}'
    got = any_from_journal(b'{"timedOut":false,"index":1,"output":' + ev + b"}")
    assert got.index == 1 and got.result is not None and got.result.event is not None
    assert got.result.event.key == "k" and got.result.event.payload == {"a": 1}
    assert any_from_journal(b'{"timedOut":true}').timed_out
    all_ = all_from_journal(b'{"timedOut":true,"outputs":[' + ev + b',null,null],"resolved":[true,true,false]}')
    assert all_.timed_out and all_.items[1] is not None and all_.items[1].kind == "sleep" and all_.items[2] is None
