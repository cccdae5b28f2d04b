"""The pipe framing of workers.protocol: whole messages back, however the bytes arrive."""

from __future__ import annotations

import os
import threading

import pytest

from workers import protocol


@pytest.fixture
def pipe():
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


def test_bare_done_and_small_payloads_round_trip(pipe):
    read_fd, write_fd = pipe
    protocol.write_message(write_fd, protocol.frame(protocol.DONE))
    protocol.write_message(write_fd, protocol.frame(protocol.DONE, b"abc"))
    protocol.write_message(write_fd, protocol.frame(protocol.STEP))
    assert protocol.read_message(read_fd) == (protocol.DONE, b"")
    assert protocol.read_message(read_fd) == (protocol.DONE, b"abc")
    assert protocol.read_message(read_fd) == (protocol.STEP, b"")


def test_a_header_split_across_writes_is_reassembled(pipe):
    read_fd, write_fd = pipe
    message = protocol.frame(protocol.DONE, b"payload")
    results: list = []
    reader = threading.Thread(target=lambda: results.append(protocol.read_message(read_fd)))
    os.write(write_fd, message[:2])  # half a header: the reader must wait for the rest
    reader.start()
    os.write(write_fd, message[2:5])
    os.write(write_fd, message[5:])
    reader.join(timeout=10)
    assert results == [(protocol.DONE, b"payload")]


def test_a_payload_larger_than_the_pipe_buffer_arrives_whole(pipe):
    read_fd, write_fd = pipe
    payload = bytes(range(256)) * 4096  # 1 MiB: many partial writes and reads
    writer = threading.Thread(
        target=protocol.write_message, args=(write_fd, protocol.frame(protocol.CALL, payload))
    )
    writer.start()
    assert protocol.read_message(read_fd) == (protocol.CALL, payload)
    writer.join(timeout=10)


@pytest.mark.parametrize("written", [b"", b"k\x00"], ids=["nothing", "half a header"])
def test_a_closed_writer_is_end_of_file(pipe, written):
    read_fd, write_fd = pipe
    os.write(write_fd, written)
    os.close(write_fd)
    with pytest.raises(EOFError):
        protocol.read_message(read_fd)
