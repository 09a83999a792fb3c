"""WebSocket framing: frames built as bytes, bytes fed to the decoder. No sockets."""

from __future__ import annotations

import os
import struct

import pytest

from tests.wsclient import frame_bytes
from transport.errors import ProtocolError
from transport.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameDecoder,
    Message,
    close_frame,
    encode_frame,
    parse_close_payload,
    text_frame,
)

# --- encoding ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x81\x00"),
        (1, b"\x81\x01"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f" + struct.pack("!Q", 65536)),
    ],
)
def test_encode_frame_uses_the_shortest_length_encoding(size, header):
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    frame = encode_frame(OP_TEXT, payload)
    assert frame[: len(header)] == header
    assert frame[len(header) :] == payload
    assert len(frame) == len(header) + size


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_encoded_frames_decode_back_to_the_same_payload(size):
    payload = os.urandom(size)
    decoder = FrameDecoder(1 << 20, require_mask=False)
    assert decoder.feed(encode_frame(OP_BINARY, payload)) == [Message(OP_BINARY, payload)]


def test_server_frames_are_final_unmasked_and_keep_the_opcode():
    frame = encode_frame(OP_PONG, b"hi")
    assert frame[0] == 0x80 | OP_PONG
    assert not frame[1] & 0x80


def test_text_frame_encodes_str_as_utf8_and_passes_bytes_unchanged():
    assert text_frame("é") == b"\x81\x02" + "é".encode("utf-8")
    assert text_frame(b"\xc3\xa9") == b"\x81\x02\xc3\xa9"


def test_close_frame_carries_the_code_and_a_truncated_reason():
    frame = close_frame(4200, "bye")
    assert frame == b"\x88\x05" + struct.pack("!H", 4200) + b"bye"
    long = close_frame(4100, "x" * 500)
    assert long[1] == 125  # control frames stay <= 125 bytes
    assert parse_close_payload(long[2:]) == (4100, "x" * 123)


def test_parse_close_payload_handles_an_empty_payload():
    assert parse_close_payload(b"") == (None, "")
    assert parse_close_payload(struct.pack("!H", 1000)) == (1000, "")


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4000, 4999])
def test_parse_close_payload_accepts_every_code_an_endpoint_may_send(code):
    assert parse_close_payload(struct.pack("!H", code) + "bye é".encode()) == (code, "bye é")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_parse_close_payload_refuses_reserved_and_unassigned_codes_with_1002(code):
    # RFC 6455 7.4.1: 1005/1006/1015 are never sent on the wire; 7.4.2: < 1000 is unused.
    with pytest.raises(ProtocolError) as info:
        parse_close_payload(struct.pack("!H", code))
    assert info.value.code == 1002
    assert info.value.fatal


def test_parse_close_payload_refuses_a_one_byte_payload_with_1002():
    with pytest.raises(ProtocolError) as info:
        parse_close_payload(b"\x03")
    assert info.value.code == 1002


@pytest.mark.parametrize("reason", [b"\xff", b"\xc3", b"ok\xed\xa0\x80", b"\xc0\xaf"])
def test_parse_close_payload_refuses_a_reason_that_is_not_utf8_with_1007(reason):
    # Truncated sequences, an encoded surrogate and an overlong form are all invalid UTF-8.
    with pytest.raises(ProtocolError) as info:
        parse_close_payload(struct.pack("!H", 1000) + reason)
    assert info.value.code == 1007


# --- decoding ----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 1000, 65535, 65536, 70000])
def test_masked_frames_are_unmasked(size):
    payload = os.urandom(size)
    assert FrameDecoder().feed(frame_bytes(OP_BINARY, payload)) == [Message(OP_BINARY, payload)]


def test_text_message_decodes_utf8():
    [message] = FrameDecoder().feed(frame_bytes(OP_TEXT, "héllo ✓".encode()))
    assert message.opcode == OP_TEXT
    assert message.text == "héllo ✓"


@pytest.mark.parametrize("size", [0, 10, 125, 126, 300])
def test_a_frame_fed_byte_by_byte_completes_only_on_its_last_byte(size):
    data = frame_bytes(OP_TEXT, b"a" * size)
    decoder = FrameDecoder()
    for i in range(len(data) - 1):
        assert decoder.feed(data[i : i + 1]) == []
    assert decoder.feed(data[-1:]) == [Message(OP_TEXT, b"a" * size)]


def test_a_large_frame_split_at_every_header_boundary_decodes():
    payload = os.urandom(70000)
    data = frame_bytes(OP_BINARY, payload)
    decoder = FrameDecoder()
    # 1 byte, the rest of the 10-byte length header, the mask, then the payload in pieces.
    cuts = [1, 2, 10, 14, 1000, 50000, len(data)]
    out: list[Message] = []
    start = 0
    for cut in cuts:
        out += decoder.feed(data[start:cut])
        start = cut
    assert out == [Message(OP_BINARY, payload)]


def test_several_frames_in_one_feed_come_out_in_order():
    data = frame_bytes(OP_TEXT, b"one") + frame_bytes(OP_PING, b"p") + frame_bytes(OP_TEXT, b"two")
    assert FrameDecoder().feed(data) == [Message(OP_TEXT, b"one"), Message(OP_PING, b"p"), Message(OP_TEXT, b"two")]


def test_a_frame_and_the_start_of_the_next_keep_the_remainder():
    first, second = frame_bytes(OP_TEXT, b"first"), frame_bytes(OP_TEXT, b"second")
    decoder = FrameDecoder()
    assert decoder.feed(first + second[:3]) == [Message(OP_TEXT, b"first")]
    assert decoder.feed(second[3:]) == [Message(OP_TEXT, b"second")]


def test_fragments_are_joined_into_one_message():
    data = (
        frame_bytes(OP_TEXT, b"Hel", fin=False)
        + frame_bytes(OP_CONT, b"lo, ", fin=False)
        + frame_bytes(OP_CONT, b"world")
    )
    assert FrameDecoder().feed(data) == [Message(OP_TEXT, b"Hello, world")]


def test_fragments_fed_one_at_a_time_complete_on_the_final_one():
    decoder = FrameDecoder()
    assert decoder.feed(frame_bytes(OP_BINARY, b"ab", fin=False)) == []
    assert decoder.feed(frame_bytes(OP_CONT, b"cd", fin=False)) == []
    assert decoder.feed(frame_bytes(OP_CONT, b"ef")) == [Message(OP_BINARY, b"abcdef")]


def test_control_frames_between_fragments_come_out_first_and_keep_the_message_whole():
    data = (
        frame_bytes(OP_TEXT, b"part1-", fin=False)
        + frame_bytes(OP_PING, b"ping")
        + frame_bytes(OP_CONT, b"part2-", fin=False)
        + frame_bytes(OP_PONG, b"")
        + frame_bytes(OP_CONT, b"end")
    )
    assert FrameDecoder().feed(data) == [
        Message(OP_PING, b"ping"),
        Message(OP_PONG, b""),
        Message(OP_TEXT, b"part1-part2-end"),
    ]


def test_a_utf8_character_split_across_fragments_is_valid_once_joined():
    encoded = "✓".encode()
    data = frame_bytes(OP_TEXT, encoded[:1], fin=False) + frame_bytes(OP_CONT, encoded[1:])
    [message] = FrameDecoder().feed(data)
    assert message.text == "✓"


def test_the_decoder_is_reusable_after_a_fragmented_message():
    decoder = FrameDecoder()
    decoder.feed(frame_bytes(OP_TEXT, b"a", fin=False) + frame_bytes(OP_CONT, b"b"))
    assert decoder.feed(frame_bytes(OP_TEXT, b"next")) == [Message(OP_TEXT, b"next")]


def test_close_frame_is_returned_with_its_payload():
    payload = struct.pack("!H", 1000) + b"bye"
    [message] = FrameDecoder().feed(frame_bytes(OP_CLOSE, payload))
    assert message.opcode == OP_CLOSE
    assert parse_close_payload(message.payload) == (1000, "bye")


# --- violations ----------------------------------------------------------------


def _error(data: bytes, decoder: FrameDecoder | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        (decoder or FrameDecoder()).feed(data)
    assert info.value.fatal
    return info.value


def test_unmasked_client_frames_are_rejected_with_1002():
    assert _error(frame_bytes(OP_TEXT, b"hi", mask=False)).code == 1002


def test_unmasked_frames_pass_when_masks_are_not_required():
    decoder = FrameDecoder(require_mask=False)
    assert decoder.feed(frame_bytes(OP_TEXT, b"hi", mask=False)) == [Message(OP_TEXT, b"hi")]


def test_a_too_big_frame_is_rejected_from_its_header_before_the_payload_arrives():
    decoder = FrameDecoder(max_message_bytes=1000)
    header = bytes((0x80 | OP_TEXT, 0x80 | 127)) + struct.pack("!Q", 10**9)
    error = _error(header, decoder)  # no payload, no mask yet: refused on the length alone
    assert error.code == 1009


def test_a_frame_at_the_size_limit_is_accepted_and_one_byte_more_is_not():
    assert FrameDecoder(max_message_bytes=1000).feed(frame_bytes(OP_TEXT, b"a" * 1000)) == [
        Message(OP_TEXT, b"a" * 1000)
    ]
    assert _error(frame_bytes(OP_TEXT, b"a" * 1001), FrameDecoder(max_message_bytes=1000)).code == 1009


def test_fragments_adding_up_past_the_limit_are_rejected():
    decoder = FrameDecoder(max_message_bytes=1000)
    assert decoder.feed(frame_bytes(OP_TEXT, b"a" * 600, fin=False)) == []
    assert _error(frame_bytes(OP_CONT, b"a" * 600), decoder).code == 1009


def test_invalid_utf8_text_raises_1007_when_read():
    [message] = FrameDecoder().feed(frame_bytes(OP_TEXT, b"\xff\xfe"))
    with pytest.raises(ProtocolError) as info:
        message.text
    assert info.value.code == 1007
    assert info.value.fatal


@pytest.mark.parametrize("rsv", [1, 2, 4])
def test_reserved_bits_without_an_extension_are_rejected(rsv):
    assert _error(frame_bytes(OP_TEXT, b"hi", rsv=rsv)).code == 1002


def test_a_fragmented_control_frame_is_rejected():
    assert _error(frame_bytes(OP_PING, b"p", fin=False)).code == 1002


def test_a_control_frame_over_125_bytes_is_rejected():
    assert _error(frame_bytes(OP_PING, b"p" * 126)).code == 1002


def test_a_continuation_without_a_start_is_rejected():
    assert _error(frame_bytes(OP_CONT, b"x")).code == 1002


def test_a_new_message_inside_a_fragmented_one_is_rejected():
    data = frame_bytes(OP_TEXT, b"a", fin=False) + frame_bytes(OP_TEXT, b"b")
    assert _error(data).code == 1002


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_unknown_opcodes_are_rejected(opcode):
    assert _error(frame_bytes(opcode, b"x")).code == 1002
