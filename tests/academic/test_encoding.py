import pytest
from django.utils import translation

from academic.encoding import (
    CRLF,
    LF,
    MIXED_NEWLINES,
    EncodingProblem,
    decode_bytes,
    detect_newline,
    encode_text,
)

CHINESE = "本文提出了一种基于注意力机制的方法，见式~\\eqref{eq:loss}。\n% 注释\n"


def _round_trip(data):
    decoded = decode_bytes(data)
    return decoded, encode_text(decoded.text, decoded)


def test_it_reads_plain_utf8():
    decoded, written = _round_trip(CHINESE.encode("utf-8"))

    assert decoded.encoding == "utf-8"
    assert decoded.bom is False
    assert decoded.newline == LF
    assert decoded.text == CHINESE
    assert written == CHINESE.encode("utf-8")


def test_it_keeps_a_utf8_byte_order_mark():
    data = b"\xef\xbb\xbf" + CHINESE.encode("utf-8")

    decoded, written = _round_trip(data)

    assert decoded.encoding == "utf-8"
    assert decoded.bom is True
    assert not decoded.text.startswith("\ufeff")
    assert written == data


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_it_reads_utf16_and_utf32_by_their_mark(encoding):
    marks = {
        "utf-16-le": b"\xff\xfe",
        "utf-16-be": b"\xfe\xff",
        "utf-32-le": b"\xff\xfe\x00\x00",
    }
    data = marks[encoding] + CHINESE.encode(encoding)

    decoded, written = _round_trip(data)

    assert decoded.encoding == encoding
    assert decoded.text == CHINESE
    assert written == data


@pytest.mark.parametrize("encoding", ["gbk", "gb18030"])
def test_it_reads_and_writes_back_gbk_chinese(encoding):
    data = CHINESE.encode(encoding)

    decoded, written = _round_trip(data)

    assert decoded.encoding == "gb18030"
    assert decoded.text == CHINESE
    assert written == data


def test_it_reads_a_gbk_thesis_chapter_with_crlf(shared_dir):
    chapter = (shared_dir / "papers/thuthesis/data/chap02.tex").read_text("utf-8")
    data = chapter.replace("\n", "\r\n").encode("gbk")

    decoded, written = _round_trip(data)

    assert decoded.encoding == "gb18030"
    assert decoded.newline == CRLF
    assert decoded.text == chapter
    assert written == data


def test_it_restores_crlf_in_edited_text():
    data = b"line one\r\nline two\r\n"
    decoded = decode_bytes(data)

    edited = decoded.text.replace("two", "2")

    assert encode_text(edited, decoded) == b"line one\r\nline 2\r\n"
    assert encode_text(edited + "three\r\n", decoded).endswith(b"\r\nthree\r\n")


def test_it_leaves_mixed_line_endings_as_they_are():
    data = b"a\r\nb\nc\rd"

    decoded, written = _round_trip(data)

    assert decoded.newline is MIXED_NEWLINES
    assert decoded.text == "a\r\nb\nc\rd"
    assert written == data


def test_it_detects_newline_styles():
    assert detect_newline("") == LF
    assert detect_newline("a\nb") == LF
    assert detect_newline("a\r\nb\r\n") == CRLF
    assert detect_newline("a\rb") == "\r"
    assert detect_newline("a\r\nb\n") is MIXED_NEWLINES


def test_it_falls_back_to_the_detector_for_other_encodings():
    text = "Les résultats montrent une amélioration nette : « très » efficace.\n" * 5
    data = text.encode("cp1252")

    decoded, written = _round_trip(data)

    # Which single-byte code page the detector names may vary; what matters is
    # that the accented words read right and the bytes come back unchanged.
    assert decoded.encoding not in ("utf-8", "gb18030")
    assert "résultats" in decoded.text
    assert written == data


def test_it_refuses_bytes_no_encoding_fits():
    data = bytes(range(256)) * 4

    with pytest.raises(EncodingProblem) as caught:
        decode_bytes(data)

    with translation.override("en"):
        assert "encoding" in str(caught.value.message)
    with translation.override("zh-hans"):
        assert "编码" in str(caught.value.message)


def test_it_writes_utf8_when_asked():
    data = CHINESE.replace("\n", "\r\n").encode("gbk")
    decoded = decode_bytes(data)

    written = encode_text(decoded.text, decoded, as_utf8=True)

    assert written == CHINESE.replace("\n", "\r\n").encode("utf-8")


def test_it_refuses_text_the_original_encoding_cannot_hold():
    decoded = decode_bytes("café au lait, très bien\n".encode("cp1252") * 5)

    with pytest.raises(EncodingProblem):
        encode_text(decoded.text + "注意", decoded)
