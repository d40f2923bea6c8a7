"""The bounded protocol's response writer: a response head leaves with its first body write (one
send() for a small answer), and is never lost or reordered (HEAD answers, 100 Continue, close)."""

from __future__ import annotations

from pyreg.registry.http_protocol import _JOIN_MAX, _OneSendTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recorder:
    """Stands in for the socket transport: records each write() call as one send."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def make() -> tuple[Recorder, _OneSendTransport, list[str]]:
    sent, done = Recorder(), []
    return sent, _OneSendTransport(sent, lambda: done.append("done")), done  # type: ignore[arg-type]


def test_small_answer_is_one_write() -> None:
    sent, writer, done = make()
    writer.write(HEAD)
    assert sent.writes == []
    writer.write(b"{}")
    writer.response_done()
    assert sent.writes == [HEAD + b"{}"] and done == ["done"]


def test_head_answer_is_written_when_the_response_ends() -> None:
    sent, writer, done = make()
    writer.write(HEAD)
    writer.response_done()
    assert sent.writes == [HEAD] and done == ["done"]


def test_later_body_writes_pass_through_even_if_they_look_like_a_head() -> None:
    sent, writer, _ = make()
    writer.write(HEAD)
    writer.write(b"x")
    writer.write(b"HTTP/1.1 200 OK\r\n")  # body bytes, not a second head
    writer.response_done()
    assert sent.writes == [HEAD + b"x", b"HTTP/1.1 200 OK\r\n"]


def test_large_first_body_is_not_copied_into_the_head() -> None:
    sent, writer, _ = make()
    body = b"b" * (_JOIN_MAX + 1)
    writer.write(HEAD)
    writer.write(body)
    assert sent.writes == [HEAD, body]


def test_continue_and_close() -> None:
    sent, writer, _ = make()
    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert sent.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]  # the client waits for it: not held
    writer.write(HEAD)
    writer.close()  # keep-alive off, or an app that failed mid-answer: the head still goes first
    assert sent.writes[1:] == [HEAD] and sent.closed
    assert writer.is_closing()
