"""SMTP's wire format (certkit.core.smtp.wire): lines, the DATA body, dot-stuffing, addresses, replies."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certkit.core.smtp.wire import (
    MAX_TEXT_LINE,
    TOO_LONG,
    BodyReader,
    LineBuffer,
    Path,
    Reply,
    Verb,
    check_domain,
    dot_stuff,
    enhanced_status,
    format_reply,
    parse_path,
)


def lines_of(buf: LineBuffer) -> list[object]:
    """Every line (or TOO_LONG) the buffer has complete now."""
    out: list[object] = []
    while (line := buf.next_line()) is not None:
        out.append(line)
    return out


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def read_body(chunks: list[bytes], max_size: int = 10_000) -> tuple[BodyReader, bytes | None]:
    """Feed ``chunks`` to a BodyReader; the bytes after the final dot (None when it did not end)."""
    body = BodyReader(max_size)
    rest: bytes | None = None
    for i, chunk in enumerate(chunks):
        rest = body.feed(chunk)
        if rest is not None:
            return body, rest + b"".join(chunks[i + 1:])
    return body, None


# --- LineBuffer -------------------------------------------------------------------------------------


def test_a_line_ends_at_crlf_or_at_a_bare_lf() -> None:
    buf = LineBuffer(100)
    buf.feed(b"EHLO a\r\nNOOP\nRSET")
    assert lines_of(buf) == [b"EHLO a", b"NOOP"]
    assert len(buf) == 4
    buf.feed(b"\r\n")
    assert lines_of(buf) == [b"RSET"]
    assert len(buf) == 0


def test_a_bare_cr_does_not_end_a_line() -> None:
    buf = LineBuffer(100)
    buf.feed(b"EHLO a\rMAIL FROM:<x@y>\r\n")
    assert lines_of(buf) == [b"EHLO a\rMAIL FROM:<x@y>"]


def test_crlf_only_mode_keeps_bare_lf_and_bare_cr_inside_the_line() -> None:
    buf = LineBuffer(100, crlf_only=True)
    buf.feed(b"a\nb\rc\r\n")
    assert lines_of(buf) == [b"a\nb\rc"]


def test_crlf_only_mode_finds_a_crlf_split_between_two_feeds() -> None:
    buf = LineBuffer(100, crlf_only=True)
    buf.feed(b"abc\r")
    assert buf.next_line() is None
    buf.feed(b"\nnext\r\n")
    assert lines_of(buf) == [b"abc", b"next"]


@pytest.mark.parametrize("crlf_only", [False, True])
def test_a_line_of_exactly_the_limit_is_accepted_one_octet_more_is_too_long(crlf_only: bool) -> None:
    buf = LineBuffer(10, crlf_only=crlf_only)
    buf.feed(b"12345678\r\n" + b"123456789\r\n" + b"ok\r\n")
    assert lines_of(buf) == [b"12345678", TOO_LONG, b"ok"]


def test_a_bare_lf_line_of_the_limit_counts_its_single_octet_ending() -> None:
    buf = LineBuffer(10)
    buf.feed(b"123456789\n" + b"1234567890\n")
    assert lines_of(buf) == [b"123456789", TOO_LONG]


def test_an_overlong_line_is_reported_before_its_end_arrives_and_only_once() -> None:
    buf = LineBuffer(10)
    buf.feed(b"x" * 10)
    assert buf.next_line() is TOO_LONG
    assert buf.next_line() is None
    assert len(buf) == 0  # nothing of the overlong line is held
    buf.feed(b"y" * 500)
    assert buf.next_line() is None
    assert len(buf) == 0
    buf.feed(b"zz\r\nNOOP\r\n")
    assert lines_of(buf) == [b"NOOP"]  # the next line is read from its start


def test_crlf_only_mode_keeps_a_trailing_cr_of_an_overlong_line_so_its_crlf_is_found() -> None:
    buf = LineBuffer(10, crlf_only=True)
    buf.feed(b"x" * 11 + b"\r")
    assert buf.next_line() is TOO_LONG
    assert len(buf) == 1
    buf.feed(b"\n.\r\n")
    assert lines_of(buf) == [b"."]


def test_crlf_only_mode_skips_bare_lf_inside_an_overlong_line() -> None:
    buf = LineBuffer(10, crlf_only=True)
    buf.feed(b"x" * 12 + b"\n.\nmore\r\nnext\r\n")
    assert lines_of(buf) == [TOO_LONG, b"next"]


def test_take_all_returns_everything_buffered_and_ends_the_skipping_of_an_overlong_line() -> None:
    buf = LineBuffer(10)
    buf.feed(b"x" * 12)
    assert buf.next_line() is TOO_LONG
    buf.feed(b"tail")
    assert buf.take_all() == b"tail"
    buf.feed(b"abc\r\nde")
    assert buf.take_all() == b"abc\r\nde"
    buf.feed(b"NOOP\r\n")
    assert lines_of(buf) == [b"NOOP"]


# Line contents that never hold a line ending: "\r" is always followed by "x" (so never CRLF, never last).
_CRLF_PIECES = st.sampled_from([b"a", b".", b"\x00", b" ", b"\n", b"\rx", b"\xff"])
_LF_PIECES = st.sampled_from([b"a", b".", b"\x00", b" ", b"\rx", b"\xff"])


def _expected(lines: list[bytes], endings: list[bytes], limit: int) -> list[object]:
    return [TOO_LONG if len(line) + len(end) > limit else line for line, end in zip(lines, endings, strict=True)]


@settings(max_examples=250, deadline=None)
@given(crlf_only=st.booleans(), data=st.data())
def test_lines_and_one_too_long_per_overlong_line_whatever_the_split(crlf_only: bool, data: st.DataObject) -> None:
    limit = 16
    pieces = _CRLF_PIECES if crlf_only else _LF_PIECES
    lines = data.draw(st.lists(st.lists(pieces, max_size=30).map(b"".join), max_size=12))
    endings = [b"\r\n" if crlf_only else data.draw(st.sampled_from([b"\r\n", b"\n"])) for _ in lines]
    stream = b"".join(line + end for line, end in zip(lines, endings, strict=True))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40))
    buf = LineBuffer(limit, crlf_only=crlf_only)
    got: list[object] = []
    for chunk in split_at(stream, cuts):
        buf.feed(chunk)
        got += lines_of(buf)
        assert len(buf) < limit  # never more than one line's worth held
    assert got == _expected(lines, endings, limit)
    assert len(buf) == 0


# --- BodyReader -------------------------------------------------------------------------------------


def test_the_body_ends_at_crlf_dot_crlf_and_the_start_counts_as_a_crlf() -> None:
    body, rest = read_body([b".\r\n"])
    assert (body.done, bytes(body.content), rest) == (True, b"", b"")
    body, rest = read_body([b"Subject: x\r\n\r\nhello\r\n.\r\n"])
    assert (bytes(body.content), rest) == (b"Subject: x\r\n\r\nhello\r\n", b"")


@pytest.mark.parametrize("smuggled", [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r\n. \r\n"],
                         ids=["LF.LF", "LF.CRLF", "CR.CRLF", "CRLF.LF", "CRLF.CR", "CRLF.SP-CRLF"])
def test_only_crlf_dot_crlf_ends_the_body(smuggled: bytes) -> None:
    stream = b"a" + smuggled + b"MAIL FROM:<evil@example.com>\r\n"
    for cut in range(len(stream) + 1):
        body, rest = read_body([stream[:cut], stream[cut:]])
        assert rest is None and not body.done, cut
    body, rest = read_body([stream, b".\r\nQUIT\r\n"])
    assert rest == b"QUIT\r\n"
    assert body.bare_newline == (smuggled not in (b"\r\n. \r\n",))


def test_an_overlong_line_followed_by_a_dot_does_not_end_the_body() -> None:
    stream = b"x" * MAX_TEXT_LINE + b".\r\nRCPT TO:<evil@example.com>\r\n"
    for cut in (0, 500, MAX_TEXT_LINE - 1, MAX_TEXT_LINE, MAX_TEXT_LINE + 1, len(stream)):
        body, rest = read_body([stream[:cut], stream[cut:]])
        assert rest is None and body.oversized, cut
    body, rest = read_body([stream, b".\r\n"])
    assert rest == b"" and body.oversized and bytes(body.content) == b""


def test_an_overlong_line_ending_in_cr_before_a_dot_does_not_end_the_body() -> None:
    stream = b"x" * (MAX_TEXT_LINE - 1) + b"\r" + b".\r\n"
    body, rest = read_body([stream[:MAX_TEXT_LINE], stream[MAX_TEXT_LINE:]])
    assert rest is None


def test_a_properly_ended_overlong_line_then_a_dot_ends_the_body() -> None:
    body, rest = read_body([b"x" * 2000 + b"\r\n.\r\nQUIT\r\n"])
    assert rest == b"QUIT\r\n" and body.oversized


def test_dot_unstuffing_removes_one_leading_dot() -> None:
    body, rest = read_body([b"..\r\n...\r\n..leading\r\n.x\r\nmid.dle\r\n.\r\n"])
    assert bytes(body.content) == b".\r\n..\r\n.leading\r\nx\r\nmid.dle\r\n"


def test_a_message_over_max_size_is_oversized_its_content_dropped_and_its_end_still_found() -> None:
    body, rest = read_body([b"0123456789\r\n" * 3, b".\r\nNOOP\r\n"], max_size=30)
    assert body.oversized and bytes(body.content) == b""
    assert rest == b"NOOP\r\n"


def test_a_message_of_exactly_max_size_is_kept() -> None:
    body, _ = read_body([b"0123456789\r\n" * 2 + b".\r\n"], max_size=24)
    assert not body.oversized and len(body.content) == 24


def test_the_bytes_after_the_final_dot_are_returned_for_pipelining() -> None:
    stream = b"hi\r\n.\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
    for cut in range(len(stream) + 1):
        body, rest = read_body([stream[:cut], stream[cut:]])
        assert rest == b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n", cut
        assert bytes(body.content) == b"hi\r\n"


# --- dot_stuff ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("message", "wire"), [
    (b"", b".\r\n"),
    (b"a", b"a\r\n.\r\n"),
    (b".\r\n", b"..\r\n.\r\n"),
    (b".hidden\nline\r\n", b"..hidden\r\nline\r\n.\r\n"),
    (b"a\rb", b"a\r\nb\r\n.\r\n"),
    (b"a\r\n\r\n", b"a\r\n\r\n.\r\n"),
    (b"\n.\n", b"\r\n..\r\n.\r\n"),
])
def test_dot_stuff(message: bytes, wire: bytes) -> None:
    assert dot_stuff(message) == wire


def normalised(message: bytes) -> bytes:
    """Every CRLF, bare CR and bare LF as CRLF, and a final CRLF (what the receiver must see)."""
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    return text if not text or text.endswith(b"\r\n") else text + b"\r\n"


_TRICKY = st.lists(st.sampled_from([b".", b"..", b"\r", b"\n", b"\r\n", b"a", b" ", b"\x00", b"\xff"]),
                   max_size=60).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(message=st.one_of(_TRICKY, st.binary(max_size=300)), data=st.data())
def test_body_reader_of_dot_stuff_gives_the_message_back(message: bytes, data: st.DataObject) -> None:
    wire = dot_stuff(message)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=10))
    body, rest = read_body([*split_at(wire, cuts), b"QUIT\r\n"])
    assert rest == b"QUIT\r\n"
    assert bytes(body.content) == normalised(message)
    assert not body.oversized and not body.bare_newline


# --- parse_path -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("argument", "keyword", "path"), [
    ("FROM:<a@contoso.test>", "FROM", Path("a@contoso.test")),
    ("from:<a@contoso.test>", "FROM", Path("a@contoso.test")),
    ("FROM: <a@contoso.test>", "FROM", Path("a@contoso.test")),
    ("FROM:<>", "FROM", Path("")),
    ("FROM:<> SIZE=0", "FROM", Path("", ("SIZE=0",))),
    ("FROM:<a@contoso.test> SIZE=1024 BODY=8BITMIME", "FROM", Path("a@contoso.test", ("SIZE=1024", "BODY=8BITMIME"))),
    ('TO:<"john doe"@contoso.test>', "TO", Path('"john doe"@contoso.test')),
    ('TO:<"a@b"@contoso.test>', "TO", Path('"a@b"@contoso.test')),
    ("TO:<first.last+tag@sub.contoso.test>", "TO", Path("first.last+tag@sub.contoso.test")),
    ("TO:<用户@例子.测试>", "TO", Path("用户@例子.测试")),
    ("TO:<postmaster@[192.0.2.1]>", "TO", Path("postmaster@[192.0.2.1]")),
])
def test_valid_paths(argument: str, keyword: str, path: Path) -> None:
    assert parse_path(argument, keyword) == path


def test_path_domain_and_parameters() -> None:
    p = parse_path("FROM:<Probe@Contoso.TEST.> size=99 SMTPUTF8", "FROM")
    assert isinstance(p, Path)
    assert p.domain == "contoso.test"
    assert (p.parameter("SIZE"), p.parameter("smtputf8"), p.parameter("BODY")) == ("99", "", None)
    assert Path("").domain == ""


@pytest.mark.parametrize(("argument", "keyword", "why"), [
    ("TO:<>", "TO", "the recipient must not be empty"),
    ("FROM:<a\x00@contoso.test>", "FROM", "the address contains control characters"),
    ("FROM:<a@contoso.test>\r\nRCPT TO:<b@x.test>", "FROM", "the address contains control characters"),
    ("TO:<a\r@contoso.test>", "TO", "the address contains control characters"),
    ("TO:<a\n@contoso.test>", "TO", "the address contains control characters"),
    ("TO:<a\x1b[31m@contoso.test>", "TO", "the address contains control characters"),
    ("TO:<a@contoso.test\x7f>", "TO", "the address contains control characters"),
    ("TO:<a@contoso.test> SIZE=1\tX", "TO", "the address contains control characters"),
    ("FROM:a@contoso.test", "FROM", "expected FROM:<address>"),
    ("FROM:<a@contoso.test", "FROM", "expected FROM:<address>"),
    ("FROM:<<a@contoso.test>>", "FROM", "expected FROM:<address>"),
    ("TO:<a@contoso.test>", "FROM", "expected FROM:<address>"),
    ("FROM:<a@contoso.test>", "TO", "expected TO:<address>"),
    ("TO:<@relay.test:a@contoso.test>", "TO", "the local part of the address is not valid"),
    ("TO:<contoso.test>", "TO", "the address is not local@domain"),
    ("TO:<@contoso.test>", "TO", "the address is not local@domain"),
    ("TO:<a..b@contoso.test>", "TO", "the local part of the address is not valid"),
    ("TO:<" + "a" * 65 + "@contoso.test>", "TO", "the address is not local@domain"),
    ("TO:<a@-contoso.test>", "TO", "the domain of the address: it is not a valid domain name"),
    ("TO:<a@>", "TO", "the domain of the address: it is empty"),
])
def test_invalid_paths(argument: str, keyword: str, why: str) -> None:
    assert parse_path(argument, keyword) == why


@pytest.mark.parametrize("control", ["\x85", "\x9b"], ids=["NEL", "CSI"])
def test_c1_control_characters_are_refused_in_addresses_and_domains(control: str) -> None:
    assert isinstance(parse_path(f"TO:<a{control}b@contoso.test>", "TO"), str)
    assert check_domain(f"con{control}toso.test") is not None


# --- check_domain ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mx.contoso.test", "mx.contoso.test.", "localhost", "xn--bcher-kva.example",
                                  "bücher.example", "a-b.example", "[192.0.2.1]", "[IPv6:2001:db8::1]",
                                  "a" * 63 + ".example"])
def test_usable_domains(name: str) -> None:
    assert check_domain(name) is None


@pytest.mark.parametrize(("name", "why"), [
    ("", "it is empty"),
    ("mx\x00.test", "it contains control characters"),
    ("mx.test\r\n250 forged", "it contains control characters"),
    ("mx.test\n", "it contains control characters"),
    ("[192.0.2.1", "it is not a valid address literal"),
    ("[IPv6:zz::1]", "it is not a valid address literal"),
    ("-mx.test", "it is not a valid domain name"),
    ("mx-.test", "it is not a valid domain name"),
    ("mx..test", "it is not a valid domain name"),
    (".", "it is not a valid domain name"),
    ("mx test", "it is not a valid domain name"),
    ("mx_1.test", "it is not a valid domain name"),
    ("a" * 64 + ".example", "it is not a valid domain name"),
    (".".join(["abcdefghij"] * 24), "it is not a valid domain name"),
])
def test_unusable_domains(name: str, why: str) -> None:
    assert check_domain(name) == why


# --- replies --------------------------------------------------------------------------------------


def test_format_reply_single_and_multi_line() -> None:
    assert format_reply(250, "2.1.0 Ok") == b"250 2.1.0 Ok\r\n"
    assert format_reply(250, "mx.lab.test", "PIPELINING", "STARTTLS") == \
        b"250-mx.lab.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
    assert format_reply(221) == b"221\r\n"
    assert format_reply(250, "first", "") == b"250-first\r\n250\r\n"


@pytest.mark.parametrize("text", ["x\r\n250 forged", "x\n250 forged", "x\r250 forged", "x\x00\x1b[2J"])
def test_a_text_from_the_peer_cannot_add_a_reply_line(text: str) -> None:
    wire = format_reply(501, f"5.5.4 Invalid domain name {text}")
    assert wire.count(b"\r\n") == 1 and wire.endswith(b"\r\n")
    assert b"\n" not in wire[:-2] and b"\r" not in wire[:-2] and b"\x00" not in wire and b"\x1b" not in wire
    assert wire.startswith(b"501 5.5.4 Invalid domain name x\\")


def test_escaped_texts_keep_every_line_of_a_multiline_reply() -> None:
    wire = format_reply(250, "mx\r\n250 AUTH PLAIN", "STARTTLS")
    assert wire == b"250-mx\\r\\n250 AUTH PLAIN\r\n250 STARTTLS\r\n"


@pytest.mark.parametrize("code", [0, 199, 600, 1000])
def test_format_reply_refuses_codes_outside_2xx_to_5xx(code: int) -> None:
    with pytest.raises(ValueError, match="is not an SMTP reply code"):
        format_reply(code, "x")


def test_reply_of_reads_the_enhanced_status_of_the_first_line() -> None:
    r = Reply.of(454, "4.7.5 Certificate validation failure", command=Verb.MAIL)
    assert r == Reply(454, "4.7.5", ("4.7.5 Certificate validation failure",), Verb.MAIL)
    assert (r.transient, r.permanent, r.positive) == (True, False, False)
    assert r.text == "454 4.7.5 Certificate validation failure"
    assert r.wire() == b"454 4.7.5 Certificate validation failure\r\n"
    assert Reply.of(250) == Reply(250, None, ("",))
    assert Reply.of(250).text == "250"
    multi = Reply.of(250, "mx.lab.test", "", "STARTTLS")
    assert multi.enhanced is None
    assert multi.wire_lines() == ["250-mx.lab.test", "250-", "250 STARTTLS"]
    assert multi.text == "250 mx.lab.test STARTTLS"
    assert Reply.of(354, "go").positive and Reply.of(554, "no").permanent


@pytest.mark.parametrize(("code", "text", "status"), [
    (250, "2.1.0 Ok", "2.1.0"),
    (454, "4.7.5 Certificate validation failure", "4.7.5"),
    (421, "4.7.1 mx.lab.test Error", "4.7.1"),
    (550, "5.7.1", "5.7.1"),
    (250, "2.1.0\tOk", "2.1.0"),
    (250, "5.0.0 odd", None),          # the class must agree with the code
    (454, "2.0.0 odd", None),
    (250, "2.1.0Ok", None),            # no separator after the status
    (250, "2.1000.0 Ok", None),        # at most three digits
    (250, " 2.1.0 Ok", None),          # not at the start
    (250, "Ok 2.1.0", None),
    (354, "3.0.0 go", None),           # RFC 3463 has classes 2, 4 and 5 only
])
def test_enhanced_status(code: int, text: str, status: str | None) -> None:
    assert enhanced_status(code, text) == status
