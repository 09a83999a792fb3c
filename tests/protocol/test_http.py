"""HTTP/1.1 request heads, WebSocket handshakes and responses as bytes: no sockets."""

from __future__ import annotations

import base64
import hashlib

import pytest

from transport.errors import HttpError
from transport.http import MAX_TARGET_BYTES, Request, find_head_end, parse_head, response, websocket_accept

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def head(request_line: str | bytes = b"GET / HTTP/1.1", *headers: str | bytes) -> bytes:
    """A request head: the request line, ``headers`` (one line each), the blank line."""
    lines = [line.encode("latin-1") if isinstance(line, str) else line for line in (request_line, *headers)]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def refused(data: bytes, **limits: int) -> HttpError:
    """The HttpError ``parse_head`` raises for ``data``."""
    with pytest.raises(HttpError) as info:
        parse_head(data, **limits)
    return info.value


def upgrade(*extra: str, request_line: str = "GET /app/app-key?protocol=7 HTTP/1.1", key: str | None = RFC_KEY,
            version: str | None = "13", connection: str | None = "Upgrade") -> Request:
    """A parsed WebSocket upgrade request; ``None`` leaves a header out."""
    headers = ["Host: 127.0.0.1", "Upgrade: websocket"]
    if connection is not None:
        headers.append(f"Connection: {connection}")
    if key is not None:
        headers.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        headers.append(f"Sec-WebSocket-Version: {version}")
    return parse_head(head(request_line, *headers, *extra))


def handshake_error(request: Request) -> HttpError:
    with pytest.raises(HttpError) as info:
        websocket_accept(request)
    return info.value


# --- the request line ------------------------------------------------------------------


def test_a_simple_get_is_parsed_into_method_path_query_and_version():
    request = parse_head(head("GET /apps/1/channels?filter_by_prefix=presence- HTTP/1.1", "Host: x"))
    assert (request.method, request.path, request.query, request.version) == (
        "GET", "/apps/1/channels", "filter_by_prefix=presence-", "HTTP/1.1")
    assert request.target == "/apps/1/channels?filter_by_prefix=presence-"
    assert request.content_length == 0


def test_a_target_without_a_query_has_an_empty_query_and_the_query_keeps_later_question_marks():
    assert parse_head(head("GET /health HTTP/1.1")).query == ""
    request = parse_head(head("GET /a?b=1?c HTTP/1.1"))
    assert (request.path, request.query) == ("/a", "b=1?c")


def test_any_token_is_a_method_the_router_decides_what_it_serves():
    assert parse_head(head("DELETE /x HTTP/1.1")).method == "DELETE"
    assert parse_head(head("M-SEARCH /x HTTP/1.1")).method == "M-SEARCH"


@pytest.mark.parametrize(
    "line",
    [
        b"GET /",  # no version
        b"GET",
        b"GET  / HTTP/1.1",  # two spaces
        b"GET / HTTP/1.1 ",  # trailing space
        b" GET / HTTP/1.1",
        b"GET\t/\tHTTP/1.1",
        b"GET / HTTP/1.1 extra",
        b"G(T / HTTP/1.1",  # not a token
        b"GET x HTTP/1.1",
        b"GET /a b HTTP/1.1",
        b"GET /\x00 HTTP/1.1",  # NUL in the target
        b"GET /a\x00b HTTP/1.1",
        b"GET /\x01 HTTP/1.1",  # other controls
        b"GET /\x7f HTTP/1.1",
        b"GET /caf\xc3\xa9 HTTP/1.1",  # raw non-ASCII: targets are percent-encoded
        b"GET\x00/ HTTP/1.1",
        b"GET / HTTP/1.1\x00",
        b"GET / HTTX/1.1",
        b"GET / HTTP/11",
        b"GET / http/1.1",
        b"GET / HTTP/1.1\nHost: x",  # a bare LF is not a line end
    ],
)
def test_malformed_request_lines_are_400(line):
    assert refused(head(line)).status == 400


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/3.0"])
def test_a_well_formed_version_we_do_not_speak_is_505(version):
    assert refused(head(b"GET / " + version)).status == 505


def test_an_empty_head_is_400():
    assert refused(b"\r\n\r\n").status == 400
    assert refused(b"").status == 400


def test_a_target_over_the_limit_is_414_and_one_at_the_limit_is_accepted():
    at_limit = "/" + "a" * (MAX_TARGET_BYTES - 1)
    assert parse_head(head(f"GET {at_limit} HTTP/1.1"), max_head_bytes=1 << 20).path == at_limit
    error = refused(head(f"GET {at_limit}a HTTP/1.1"), max_head_bytes=1 << 20)
    assert error.status == 414


# --- keep-alive --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("HTTP/1.1", None, True),
        ("HTTP/1.1", "close", False),
        ("HTTP/1.1", "Close", False),
        ("HTTP/1.1", "keep-alive, close", False),
        ("HTTP/1.1", "keep-alive", True),
        ("HTTP/1.1", "Upgrade", True),
        ("HTTP/1.0", None, False),
        ("HTTP/1.0", "keep-alive", True),
        ("HTTP/1.0", "Keep-Alive", True),
        ("HTTP/1.0", "close", False),
    ],
)
def test_keep_alive_is_the_default_of_http_1_1_and_opt_in_for_http_1_0(version, connection, keep_alive):
    headers = [f"Connection: {connection}"] if connection else []
    assert parse_head(head(f"GET / {version}", "Host: x", *headers)).keep_alive is keep_alive


# --- headers -----------------------------------------------------------------------------


def test_header_names_are_lower_cased_and_values_trimmed_of_spaces_and_tabs():
    request = parse_head(head(b"GET / HTTP/1.1", b"HoSt:   example.com \t", b"X-Custom-Thing:\tv  a  l"))
    assert request.headers == (("host", "example.com"), ("x-custom-thing", "v  a  l"))
    assert request.header("host") == "example.com"
    assert request.header("Host") is None  # lookups use the lower-case name
    assert request.header("absent") is None


def test_repeated_headers_are_kept_in_order_and_joined_with_commas():
    request = parse_head(head(b"GET / HTTP/1.1", b"Accept: a", b"Other: x", b"accept: b"))
    assert request.header("accept") == "a,b"
    assert [value for name, value in request.headers if name == "accept"] == ["a", "b"]


def test_tokens_are_lower_cased_and_split_on_commas_across_repeated_headers():
    request = parse_head(head(b"GET / HTTP/1.1", b"Connection: keep-alive, Upgrade", b"Connection: TE"))
    assert request.tokens("connection") == {"keep-alive", "upgrade", "te"}
    assert request.tokens("absent") == set()


def test_an_empty_value_and_obs_text_are_accepted():
    request = parse_head(head(b"GET / HTTP/1.1", b"X-Empty:", b"X-Latin: caf\xe9"))
    assert request.header("x-empty") == ""
    assert request.header("x-latin") == "caf\xe9"  # latin-1, as RFC 9110 5.5 describes obs-text


def test_wants_upgrade_looks_for_the_websocket_token_case_insensitively():
    assert parse_head(head(b"GET / HTTP/1.1", b"Upgrade: WebSocket")).wants_upgrade
    assert parse_head(head(b"GET / HTTP/1.1", b"Upgrade: h2c, websocket")).wants_upgrade
    assert not parse_head(head(b"GET / HTTP/1.1", b"Upgrade: h2c")).wants_upgrade
    assert not parse_head(head(b"GET / HTTP/1.1")).wants_upgrade


@pytest.mark.parametrize(
    "line",
    [
        b"X-Bad: a\x00b",  # NUL
        b"X-Bad: \x00",
        b"X-Bad: a\x01b",
        b"X-Bad: a\x1bb",  # ESC
        b"X-Bad: a\x7fb",  # DEL
        b"X-Bad: a\rb",  # a bare CR inside a value
        b"X-Bad: a\x0bb",
    ],
)
def test_control_characters_in_a_header_value_are_400(line):
    assert refused(head(b"GET / HTTP/1.1", b"Host: x", line)).status == 400


@pytest.mark.parametrize(
    "lines",
    [
        (b"X-Folded: a", b" b"),  # obs-fold (RFC 9112 5.2: a server may reject it with 400)
        (b"X-Folded: a", b"\tb"),
        (b" Host: x",),  # whitespace before the first header is a fold too
        (b"Host : x",),  # whitespace between name and colon (RFC 9112 5.1: must be 400)
        (b"Host\t: x",),
        (b"No colon here",),
        (b": no name",),
        (b"X(Bad): x",),  # not a token
        (b"X-\x00: x",),
        (b"X-Caf\xe9: x",),
        (b"X-Bad\x00Name: x",),
    ],
)
def test_malformed_header_lines_are_400(lines):
    assert refused(head(b"GET / HTTP/1.1", *lines)).status == 400


def test_more_headers_than_the_limit_are_431_and_the_limit_itself_is_accepted():
    lines = [f"X-{i}: v" for i in range(10)]
    assert len(parse_head(head("GET / HTTP/1.1", *lines), max_headers=10).headers) == 10
    assert refused(head("GET / HTTP/1.1", *lines, "X-11: v"), max_headers=10).status == 431


def test_two_thousand_headers_are_431_by_default():
    lines = [f"a{i}:b" for i in range(2000)]
    assert refused(head("GET / HTTP/1.1", *lines), max_head_bytes=1 << 20).status == 431
    assert refused(head("GET / HTTP/1.1", *lines)).status == 431


def test_a_head_over_the_byte_limit_is_431_and_one_at_the_limit_is_accepted():
    base = head("GET / HTTP/1.1", "X-Big: ")
    fits = head("GET / HTTP/1.1", "X-Big: " + "a" * (1000 - len(base)))
    assert len(fits) == 1000
    assert parse_head(fits, max_head_bytes=1000).header("x-big") == "a" * (1000 - len(base))
    assert refused(head("GET / HTTP/1.1", "X-Big: " + "a" * (1001 - len(base))), max_head_bytes=1000).status == 431


def test_a_100_kb_header_is_431_by_default():
    assert refused(head("GET / HTTP/1.1", "X-Big: " + "a" * 100_000)).status == 431


# --- Content-Length and Transfer-Encoding ---------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "length"),
    [
        ((), 0),
        ((b"Content-Length: 0",), 0),
        ((b"Content-Length: 5",), 5),
        ((b"content-length: 123",), 123),
        ((b"Content-Length:  5  ",), 5),  # optional whitespace around the value is not part of it
        ((b"Content-Length: 005",), 5),
        ((b"Content-Length: 5", b"Content-Length: 5"), 5),  # equal duplicates: RFC 9110 8.6 allows them
        ((b"Content-Length: 5, 5",), 5),
        ((b"Content-Length: 5,5", b"Content-Length: 5"), 5),
    ],
)
def test_valid_content_lengths(lines, length):
    assert parse_head(head(b"POST /apps/1/events HTTP/1.1", *lines)).content_length == length


@pytest.mark.parametrize(
    "lines",
    [
        (b"Content-Length: abc",),
        (b"Content-Length: -5",),
        (b"Content-Length: +5",),
        (b"Content-Length: 5_0",),
        (b"Content-Length: 5.0",),
        (b"Content-Length: 0x10",),
        (b"Content-Length: 1e3",),
        (b"Content-Length: 5 5",),
        (b"Content-Length:",),
        (b"Content-Length: ,",),
        (b"Content-Length: 5,",),
        (b"Content-Length: \xb2",),  # latin-1 superscript two: str.isdigit() says yes
        (b"Content-Length: \xef\xbc\x95",),  # a fullwidth 5 in UTF-8
        (b"Content-Length: 9999999999999999",),  # 16 digits: more than any body we take
        (b"Content-Length: 5", b"Content-Length: 6"),  # conflicting duplicates (request smuggling)
        (b"Content-Length: 5, 6",),
    ],
)
def test_invalid_or_conflicting_content_lengths_are_400(lines):
    error = refused(head(b"POST /apps/1/events HTTP/1.1", *lines))
    assert error.status == 400
    assert "content-length" in error.message.lower()


@pytest.mark.parametrize(
    "lines",
    [
        (b"Transfer-Encoding: chunked",),
        (b"Transfer-Encoding: gzip, chunked",),
        (b"transfer-encoding: identity",),
        (b"Transfer-Encoding: chunked", b"Content-Length: 5"),
    ],
)
def test_any_transfer_encoding_is_501(lines):
    assert refused(head(b"POST /apps/1/events HTTP/1.1", *lines)).status == 501


# --- find_head_end -------------------------------------------------------------------------


def test_find_head_end_points_just_past_the_blank_line_and_finds_it_across_reads():
    data = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY"
    assert find_head_end(data) == len(data) - 4
    assert find_head_end(data[:-5]) == -1
    # Resuming a scan where the last read ended still finds a terminator split across reads.
    first = data.index(b"\r\n\r\n") + 2
    assert find_head_end(data, first) == len(data) - 4


# --- websocket_accept ----------------------------------------------------------------------


def test_the_rfc_6455_example_key_gets_the_rfc_accept_value():
    answer = websocket_accept(upgrade())
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert answer.endswith(b"\r\n\r\n")
    lines = answer[:-4].split(b"\r\n")[1:]
    headers = {name.lower(): value for name, _, value in (line.partition(b": ") for line in lines)}
    assert headers == {b"upgrade": b"websocket", b"connection": b"Upgrade", b"sec-websocket-accept": RFC_ACCEPT.encode()}


def test_any_valid_key_gets_the_sha1_of_key_and_guid():
    key = base64.b64encode(bytes(range(16))).decode()
    expected = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    assert b"Sec-WebSocket-Accept: " + expected + b"\r\n" in websocket_accept(upgrade(key=key))


@pytest.mark.parametrize("connection", ["upgrade", "keep-alive, Upgrade", "Upgrade, keep-alive"])
def test_connection_upgrade_may_be_one_token_among_others_in_any_case(connection):
    # Firefox sends "Connection: keep-alive, Upgrade".
    assert websocket_accept(upgrade(connection=connection)).startswith(b"HTTP/1.1 101 ")


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(lambda: upgrade(request_line="POST /app/app-key HTTP/1.1"), id="not-GET"),
        pytest.param(lambda: upgrade(request_line="GET /app/app-key HTTP/1.0"), id="HTTP/1.0"),
        pytest.param(lambda: upgrade(connection=None), id="no-Connection"),
        pytest.param(lambda: upgrade(connection="keep-alive"), id="Connection-without-upgrade"),
        pytest.param(lambda: upgrade(key=None), id="no-key"),
        pytest.param(lambda: upgrade(key=""), id="empty-key"),
        pytest.param(lambda: upgrade(key="not base64!"), id="not-base64"),
        pytest.param(lambda: upgrade(key=base64.b64encode(b"x" * 15).decode()), id="15-byte-key"),
        pytest.param(lambda: upgrade(key=base64.b64encode(b"x" * 17).decode()), id="17-byte-key"),
        pytest.param(lambda: upgrade(key=RFC_KEY.rstrip("=")), id="unpadded-key"),
        pytest.param(lambda: upgrade(key="dGhlIHNhbXBsZSBub25jZQ==\xe9"), id="latin-1-key"),
        pytest.param(lambda: upgrade(f"Sec-WebSocket-Key: {RFC_KEY}"), id="two-keys"),
    ],
)
def test_malformed_upgrades_are_400(request_):
    error = handshake_error(request_())
    assert error.status == 400
    assert error.headers == ()


@pytest.mark.parametrize("version", ["99", "8", "12", "13, 8", None])
def test_another_websocket_version_is_426_with_sec_websocket_version_13(version):
    error = handshake_error(upgrade(version=version))
    assert error.status == 426
    assert error.headers == (("Sec-WebSocket-Version", "13"),)


# --- response --------------------------------------------------------------------------------


def split_response(data: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head_, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head_.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b": ")
        assert name.lower() not in headers, f"header {name!r} twice"
        headers[name.lower()] = value
    return status, headers, body


def test_a_response_is_one_buffer_with_status_line_headers_and_body():
    data = response(200, b'{"ok":true}', "application/json")
    assert isinstance(data, bytes)
    status, headers, body = split_response(data)
    assert status == b"HTTP/1.1 200 OK"
    assert headers == {b"content-type": b"application/json", b"content-length": b"11"}
    assert body == b'{"ok":true}'


def test_content_length_counts_bytes_not_characters():
    _, headers, body = split_response(response(200, "Zoë ✓".encode()))
    assert headers[b"content-length"] == str(len("Zoë ✓".encode())).encode() == b"8"
    assert body == "Zoë ✓".encode()


def test_an_empty_error_body_still_says_content_length_0_so_keep_alive_clients_do_not_wait():
    _, headers, body = split_response(response(404))
    assert headers[b"content-length"] == b"0"
    assert body == b""


def test_204_has_no_content_length_or_type():
    status, headers, body = split_response(response(204))
    assert status == b"HTTP/1.1 204 No Content"
    assert headers == {}
    assert body == b""


def test_connection_close_is_said_only_when_asked():
    assert b"Connection: close\r\n" not in response(200, b"x")
    _, headers, _ = split_response(response(400, b"x", keep_alive=False))
    assert headers[b"connection"] == b"close"


def test_extra_headers_are_added_and_unknown_statuses_still_make_a_status_line():
    status, headers, _ = split_response(response(426, b"x", headers=(("Sec-WebSocket-Version", "13"),)))
    assert status == b"HTTP/1.1 426 Upgrade Required"
    assert headers[b"sec-websocket-version"] == b"13"
    assert split_response(response(599))[0] == b"HTTP/1.1 599 Unknown"


@pytest.mark.parametrize(("status", "reason"), [(408, b"Request Timeout"), (413, b"Content Too Large"),
                                               (414, b"URI Too Long"), (431, b"Request Header Fields Too Large"),
                                               (501, b"Not Implemented"), (503, b"Service Unavailable"),
                                               (505, b"HTTP Version Not Supported")])
def test_every_status_the_server_answers_has_its_reason_phrase(status, reason):
    assert split_response(response(status))[0] == b"HTTP/1.1 %d %s" % (status, reason)


def test_empty_lines_before_the_request_line_are_ignored():
    assert parse_head(b"\r\n\r\n" + head("GET /health HTTP/1.1", "Host: x")).path == "/health"


def test_an_absolute_form_target_is_taken_for_its_path_and_query():
    request = parse_head(head("GET http://node:6001/apps/1/channels?info=x HTTP/1.1", "Host: node"))
    assert (request.path, request.query) == ("/apps/1/channels", "info=x")
    assert parse_head(head("GET http://node HTTP/1.1")).path == "/"


def test_a_head_answer_has_the_get_headers_and_no_body():
    answer = response(200, b"OK", head_only=True)
    assert answer.endswith(b"\r\n\r\n") and b"Content-Length: 2" in answer and not answer.endswith(b"OK")


def test_a_kept_alive_http10_connection_is_said_to_be_kept_alive():
    assert b"Connection: keep-alive" in response(200, b"OK", http10=True)
    assert b"Connection: keep-alive" not in response(200, b"OK")
    assert b"Connection: close" in response(200, b"OK", keep_alive=False, http10=True)
