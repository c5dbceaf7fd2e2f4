"""Transcript export formats (tui.transcript), parsed back."""

from __future__ import annotations

import json
import re

import pytest

from tui.transcript import (
    Segment,
    export,
    format_timestamp,
    merge_live_segments,
    segments_from_json,
    to_json,
    to_srt,
    to_txt,
    to_vtt,
)

SEGMENTS = [
    Segment(0.0, 1.5, " Hello there. "),
    Segment(1.5, 4.25, "Fish & chips <b>bold</b> --> arrows"),
    Segment(4.3, 4.3, ""),  # empty: dropped
    Segment(61.0, 3725.125, "A long one,\n\nover two lines."),
    Segment(360_000.5, 360_002.0, "Hour one hundred."),
]

SRT_TIME = r"(\d{2,}):(\d{2}):(\d{2}),(\d{3})"
VTT_TIME = r"(\d{2,}):(\d{2}):(\d{2})\.(\d{3})"


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


@pytest.mark.parametrize(
    ("seconds", "srt", "vtt"),
    [
        (0, "00:00:00,000", "00:00:00.000"),
        (1.5, "00:00:01,500", "00:00:01.500"),
        (59.9996, "00:01:00,000", "00:01:00.000"),
        (3725.125, "01:02:05,125", "01:02:05.125"),
        (360_000.5, "100:00:00,500", "100:00:00.500"),
        (-3, "00:00:00,000", "00:00:00.000"),
        (float("nan"), "00:00:00,000", "00:00:00.000"),
    ],
)
def test_timestamps(seconds: float, srt: str, vtt: str) -> None:
    assert format_timestamp(seconds) == srt
    assert format_timestamp(seconds, ".") == vtt


def _parse_cues(text: str, time_re: str) -> list[tuple[float, float, str]]:
    cue_re = re.compile(rf"^{time_re} --> {time_re}$")
    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.split("\n")
        while lines and not cue_re.match(lines[0]):
            lines.pop(0)  # the SRT counter, the WEBVTT header block
        if not lines:
            continue
        m = cue_re.match(lines[0])
        assert m is not None
        g = m.groups()
        cues.append((_seconds(*g[:4]), _seconds(*g[4:]), "\n".join(lines[1:])))
    return cues


def _check_times(cues: list[tuple[float, float, str]]) -> None:
    assert [c[0] for c in cues] == sorted(c[0] for c in cues)
    for start, end, text in cues:
        assert end >= start
        assert text.strip()


def test_srt() -> None:
    text = to_srt(SEGMENTS)
    blocks = text.strip().split("\n\n")
    assert [b.split("\n")[0] for b in blocks] == ["1", "2", "3", "4"]
    cues = _parse_cues(text, SRT_TIME)
    _check_times(cues)
    assert [(c[0], c[1]) for c in cues] == [
        (0.0, 1.5),
        (1.5, 4.25),
        (61.0, 3725.125),
        (360_000.5, 360_002.0),
    ]
    assert cues[0][2] == "Hello there."
    assert cues[2][2] == "A long one,\nover two lines."  # a blank line would end the cue
    assert "00:00:01,500 --> 00:00:04,250" in text


def test_vtt_escapes_cue_text() -> None:
    text = to_vtt(SEGMENTS)
    assert text.startswith("WEBVTT\n\n")
    cues = _parse_cues(text, VTT_TIME)
    _check_times(cues)
    assert len(cues) == 4
    assert cues[1][2] == "Fish &amp; chips &lt;b&gt;bold&lt;/b&gt; --&gt; arrows"
    assert text.count("-->") == 4  # only the timing lines
    assert "100:00:00.500 --> 100:00:02.000" in text


def test_txt() -> None:
    assert to_txt(SEGMENTS) == (
        "Hello there.\nFish & chips <b>bold</b> --> arrows\nA long one, over two lines.\n"
        "Hour one hundred.\n"
    )
    stamped = to_txt(SEGMENTS, timestamps=True).splitlines()
    assert stamped[0] == "[00:00:00.000] Hello there."
    assert stamped[-1].startswith("[100:00:00.500] ")
    assert to_txt([]) == ""


def test_json_round_trip() -> None:
    meta = {"model": "tiny.en", "source": "rec.wav", "language": "en"}
    text = to_json(SEGMENTS, meta)
    doc = json.loads(text)
    assert doc["meta"] == meta
    assert doc["text"].startswith("Hello there. Fish & chips")
    back = segments_from_json(text)
    assert len(back) == 4
    _check_times([(s.start_s, s.end_s, s.text) for s in back])
    assert back[1] == Segment(1.5, 4.25, "Fish & chips <b>bold</b> --> arrows")


def test_unsorted_and_backwards_segments_are_cleaned() -> None:
    messy = [Segment(5.0, 6.0, "second"), Segment(2.0, 1.0, "first"), Segment(-1.0, 0.5, "zero")]
    cues = _parse_cues(to_srt(messy), SRT_TIME)
    assert [c[2] for c in cues] == ["zero", "first", "second"]
    assert cues[0][:2] == (0.0, 0.5)
    assert cues[1][:2] == (2.0, 2.0)
    _check_times(cues)


def test_export_by_name() -> None:
    assert export(SEGMENTS, ".SRT") == to_srt(SEGMENTS)
    assert json.loads(export(SEGMENTS, "json", {"a": 1}))["meta"] == {"a": 1}
    with pytest.raises(ValueError, match="unknown transcript format"):
        export(SEGMENTS, "docx")


def test_merge_live_segments() -> None:
    committed = [Segment(0.0, 2.0, "first phrase"), Segment(3.0, 4.0, "partial guess")]
    # The phrase from 2.9 s was transcribed again, now complete.
    update = [Segment(2.9, 4.5, "second phrase"), Segment(4.5, 6.0, "and more")]
    merged = merge_live_segments(committed, update)
    assert [s.text for s in merged] == ["first phrase", "second phrase", "and more"]
    assert merge_live_segments(committed, []) == committed
    shifted = [s.shifted(10.0) for s in update]
    assert shifted[0].start_s == pytest.approx(12.9)
