"""Framing: every stored byte is checksummed, damage is found and stepped over, never decoded."""

from __future__ import annotations

import io
import os
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codi_queue.errors import CorruptRecord
from codi_queue.queue import frame


def _frames(*payloads: bytes) -> bytes:
    return b"".join(frame.encode_frame(p) for p in payloads)


def test_round_trip_through_serializer_protocol() -> None:
    buf = io.BytesIO()
    ser = frame.FrameSerializer()
    ser.info = {"ops": 7}
    ser.dump(b"record-bytes", buf)
    ser.dump({"head": [0, 1, 2], "size": 1}, buf)
    buf.seek(0)
    assert frame.load(buf) == b"record-bytes"
    assert frame.load(buf) == {"head": [0, 1, 2], "size": 1}
    (first, _meta) = list(frame.scan(buf.getvalue()))
    assert isinstance(first, frame.Frame) and first.seq == 7


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
    head = frame.HEADER.pack(frame.MAGIC, frame.KIND_RECORD, b"\x00\x00\x00", frame.MAX_PAYLOAD + 1, 0, 0)
    (item,) = list(frame.scan(head + b"x" * 20))
    assert isinstance(item, frame.Damage)


# pickle.dumps({"head": [0, 0, 0]}), as bytes: what a hostile writer could drop into a spool.
PICKLED = b"\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x04head\x94]\x94(K\x00K\x00K\x00es."


def test_load_refuses_pickle_bytes() -> None:
    with pytest.raises(CorruptRecord):
        frame.load(io.BytesIO(PICKLED))
    assert not any(isinstance(i, frame.Frame) for i in frame.scan(PICKLED))


@settings(max_examples=int(os.environ.get("CODI_FUZZ_EXAMPLES", "200")), deadline=None)
@given(st.binary(max_size=300))
def test_stuffing_round_trips_and_keeps_0xff_out_of_every_payload(payload: bytes) -> None:
    data = frame.encode_frame(payload, frame.KIND_RECORD, seq=3, nops=1)
    assert b"\xff" not in data[frame.HEADER.size :]
    assert frame.decode_frame(data) == (frame.KIND_RECORD, payload)


def _smuggling_carrier(inner: bytes) -> bytes:
    """A msgpack-ish payload whose text field carries ``inner`` verbatim, between two real frames."""
    return b"\x93\x01\xcb" + b"\x00" * 8 + b"\x91\xda" + len(inner).to_bytes(2, "big") + inner


@pytest.mark.parametrize("version", [1, 2])
def test_a_frame_smuggled_inside_a_payload_is_never_decoded_after_damage(version: int) -> None:
    # The attacker's frame: CRC-valid, in either format, carried inside a text field.
    evil_payload = b"EVIL-OPERATION"
    if version == 2:
        evil = frame.encode_frame(evil_payload, frame.KIND_RECORD, seq=1, nops=1)
    else:
        head = struct.pack("<2sBBI", b"CQ", 1, frame.KIND_RECORD, len(evil_payload))
        evil = head + struct.pack("<I", zlib.crc32(evil_payload, zlib.crc32(head))) + evil_payload
    carrier = frame.encode_frame(_smuggling_carrier(b"xx" + evil + b"yy"), frame.KIND_RECORD, seq=1, nops=1)
    data = bytearray(frame.encode_frame(b"first", seq=0, nops=1) + carrier + frame.encode_frame(b"last", seq=2, nops=1))
    start = len(frame.encode_frame(b"first", seq=0, nops=1))
    for offset in range(frame.HEADER.size):  # damage anywhere in the carrier's header
        damaged = bytearray(data)
        damaged[start + offset] ^= 0x5A
        payloads = [i.payload for i in frame.scan(bytes(damaged)) if isinstance(i, frame.Frame)]
        assert evil_payload not in payloads, offset
        assert payloads == [b"first", b"last"]


def test_version_1_frames_still_read_and_resync_among_themselves() -> None:
    def v1(payload: bytes) -> bytes:
        head = struct.pack("<2sBBI", b"CQ", 1, frame.KIND_RECORD, len(payload))
        return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload

    data = bytearray(v1(b"one") + v1(b"two") + v1(b"three") + frame.encode_frame(b"four", seq=0, nops=1))
    data[len(v1(b"one")) + 13] ^= 1  # inside "two"
    items = list(frame.scan(bytes(data), legacy=True))
    assert [i.payload for i in items if isinstance(i, frame.Frame)] == [b"one", b"three", b"four"]
    assert frame.load(io.BytesIO(v1(b"one"))) == b"one"


def test_record_ops_reads_the_count_from_either_encoding() -> None:
    import msgspec

    from codi_queue.schemas.envelope import Record

    for n in (0, 1, 127, 128, 70_000):
        packed = msgspec.msgpack.encode(Record(n, 1.0, []))
        assert frame.record_ops(packed, frame.KIND_RECORD) == n
        assert frame.record_ops(msgspec.json.encode(Record(n, 1.0, [])), frame.KIND_JSON_RECORD) == n
    assert frame.record_ops(b"garbage", frame.KIND_JSON_RECORD) == 0


def test_unstuffing_from_a_chunk_equals_the_two_replaces_it_took_before() -> None:
    """Payloads are unstuffed straight from the mapped chunk in one copy; on any bytes (leads
    followed by anything, at either end, in a mapping or not) that equals the earlier
    ``replace(FE 01, FF).replace(FE 00, FE)``, and undoes stuffing exactly."""
    import mmap
    import random

    def before(data: bytes) -> bytes:
        return data.replace(b"\xfe\x01", b"\xff").replace(b"\xfe\x00", b"\xfe")

    rng = random.Random(3)
    for _ in range(20000):
        data = bytes(rng.choice([0, 1, 0xFE, 0xFF, 0x41]) for _ in range(rng.randint(0, 14)))
        pad = bytes(rng.randint(0, 3) * [0xFE])
        buf = pad + data + pad
        assert frame._unstuffed(buf, len(pad), len(pad) + len(data)) == before(data)
        assert frame._unstuff(frame._stuff(data)) == data
    big = frame._stuff(bytes(rng.randrange(256) for _ in range(1 << 16)))
    with mmap.mmap(-1, len(big)) as mapped:  # a mapping, as chunks are read: it must close after
        mapped.write(big)
        assert frame._unstuffed(mapped, 0, len(big)) == before(big)
