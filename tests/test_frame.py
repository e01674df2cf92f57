"""Framing: every stored byte is checksummed, damage is found and stepped over, never decoded."""

from __future__ import annotations

import io

import pytest

from codi_queue.errors import CorruptRecord
from codi_queue.queue import frame


def _frames(*payloads: bytes) -> bytes:
    return b"".join(frame.encode_frame(p) for p in payloads)


def test_round_trip_through_serializer_protocol() -> None:
    buf = io.BytesIO()
    frame.dump(b"record-bytes", buf)
    frame.dump({"head": [0, 1, 2], "size": 1}, buf)
    buf.seek(0)
    assert frame.load(buf) == b"record-bytes"
    assert frame.load(buf) == {"head": [0, 1, 2], "size": 1}


def test_every_single_bit_flip_is_detected() -> None:
    data = frame.encode_frame(b"hello, durable world")
    for i in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[i] ^= 1 << bit
            with pytest.raises(CorruptRecord):
                frame.decode_frame(bytes(damaged))


def test_truncation_at_every_byte_of_last_record_keeps_the_others() -> None:
    good = [b"a" * 10, b"b" * 300, b"c" * 7]
    data = _frames(*good)
    last_start = len(data) - len(frame.encode_frame(good[-1]))
    for cut in range(last_start, len(data)):
        items = list(frame.scan(data[:cut]))
        intact = [i.payload for i in items if isinstance(i, frame.Frame)]
        assert intact == good[:2]
        damage = [i for i in items if isinstance(i, frame.Damage)]
        assert len(damage) == (1 if cut > last_start else 0)


def test_scan_resynchronises_after_a_flipped_bit() -> None:
    payloads = [bytes([65 + i]) * 50 for i in range(5)]
    data = bytearray(_frames(*payloads))
    second = len(frame.encode_frame(payloads[0]))
    data[second + frame.HEADER.size + 10] ^= 0x40  # inside record 2's payload
    items = list(frame.scan(bytes(data)))
    intact = [i.payload for i in items if isinstance(i, frame.Frame)]
    assert intact == [payloads[0], *payloads[2:]]
    (damage,) = [i for i in items if isinstance(i, frame.Damage)]
    assert damage.start == second and damage.reason == "checksum mismatch"


def test_implausible_length_is_damage_not_an_allocation() -> None:
    head = frame.HEADER.pack(frame.MAGIC, 1, frame.KIND_RECORD, frame.MAX_PAYLOAD + 1, 0)
    (item,) = list(frame.scan(head + b"x" * 20))
    assert isinstance(item, frame.Damage)


# pickle.dumps({"head": [0, 0, 0]}), as bytes: what a hostile writer could drop into a spool.
PICKLED = b"\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x04head\x94]\x94(K\x00K\x00K\x00es."


def test_load_refuses_pickle_bytes() -> None:
    with pytest.raises(CorruptRecord):
        frame.load(io.BytesIO(PICKLED))
    assert not any(isinstance(i, frame.Frame) for i in frame.scan(PICKLED))
