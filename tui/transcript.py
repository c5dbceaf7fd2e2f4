"""Transcript segments and their export formats: plain text, SubRip, WebVTT, JSON.

Exporters take segments in any order with any whitespace; they sort them by start,
drop the empty ones, make every end at least its start and keep line breaks inside a
cue from ending it early. Timestamps have at least two hour digits and as many as
needed (``123:04:05,678``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    text: str

    def shifted(self, offset_s: float) -> Segment:
        return Segment(self.start_s + offset_s, self.end_s + offset_s, self.text)


def format_timestamp(seconds: float, decimal: str = ",") -> str:
    """``HH:MM:SS,mmm`` (SRT) or, with decimal='.', ``HH:MM:SS.mmm`` (WebVTT)."""
    if not math.isfinite(seconds) or seconds < 0:
        seconds = 0.0
    total_ms = int(round(seconds * 1000))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def clean_segments(segments: Iterable[Segment]) -> list[Segment]:
    """Sorted by start, text stripped, empty ones dropped, end >= start, no NaN."""
    out = []
    for seg in segments:
        text = "\n".join(line.strip() for line in seg.text.strip().splitlines() if line.strip())
        if not text:
            continue
        start = seg.start_s if math.isfinite(seg.start_s) and seg.start_s > 0 else 0.0
        end = seg.end_s if math.isfinite(seg.end_s) else start
        out.append(Segment(start, max(start, end), text))
    out.sort(key=lambda s: (s.start_s, s.end_s))
    return out


def to_txt(segments: Iterable[Segment], *, timestamps: bool = False) -> str:
    """One line per segment (optionally prefixed with ``[HH:MM:SS.mmm]``)."""
    lines = []
    for seg in clean_segments(segments):
        text = " ".join(seg.text.splitlines())
        lines.append(f"[{format_timestamp(seg.start_s, '.')}] {text}" if timestamps else text)
    return "\n".join(lines) + "\n" if lines else ""


def to_srt(segments: Iterable[Segment]) -> str:
    blocks = []
    for number, seg in enumerate(clean_segments(segments), start=1):
        blocks.append(
            f"{number}\n{format_timestamp(seg.start_s)} --> {format_timestamp(seg.end_s)}\n"
            f"{seg.text}\n"
        )
    return "\n".join(blocks)


def escape_vtt(text: str) -> str:
    """Cue text escaping: '&', '<' and '>' (which also rules out a stray '-->')."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(segments: Iterable[Segment]) -> str:
    blocks = ["WEBVTT\n"]
    for seg in clean_segments(segments):
        blocks.append(
            f"{format_timestamp(seg.start_s, '.')} --> {format_timestamp(seg.end_s, '.')}\n"
            f"{escape_vtt(seg.text)}\n"
        )
    return "\n".join(blocks)


def to_json(segments: Iterable[Segment], meta: Mapping[str, Any] | None = None) -> str:
    """``{"meta": {...}, "text": "...", "segments": [{"start", "end", "text"}, ...]}``."""
    segs = clean_segments(segments)
    doc = {
        "meta": dict(meta or {}),
        "text": " ".join(" ".join(s.text.splitlines()) for s in segs),
        "segments": [
            {"start": round(s.start_s, 3), "end": round(s.end_s, 3), "text": s.text} for s in segs
        ],
    }
    return json.dumps(doc, ensure_ascii=False, indent=2, default=str) + "\n"


def segments_from_json(text: str) -> list[Segment]:
    """Inverse of to_json (the meta is ignored)."""
    doc = json.loads(text)
    return [Segment(float(s["start"]), float(s["end"]), str(s["text"])) for s in doc["segments"]]


EXPORTERS = {"txt": to_txt, "srt": to_srt, "vtt": to_vtt, "json": to_json}


def export(segments: Iterable[Segment], fmt: str, meta: Mapping[str, Any] | None = None) -> str:
    """Export by format name ('txt', 'srt', 'vtt', 'json')."""
    fmt = fmt.lower().lstrip(".")
    if fmt == "json":
        return to_json(segments, meta)
    try:
        return EXPORTERS[fmt](segments)  # type: ignore[operator]
    except KeyError:
        raise ValueError(f"unknown transcript format: {fmt!r} (txt, srt, vtt, json)") from None


def merge_live_segments(
    committed: Iterable[Segment], update: Iterable[Segment], *, tolerance_s: float = 0.05
) -> list[Segment]:
    """Fold a newer transcription of the tail of a recording into what is already there.

    Live transcription re-transcribes the open phrase as it grows, then the finished
    phrase once more. `update` holds segments with absolute times covering a span that
    starts at its first segment; every committed segment that starts in that span (or
    less than `tolerance_s` before it) is replaced, the earlier ones are kept.
    """
    kept = clean_segments(committed)
    new = clean_segments(update)
    if not new:
        return kept
    span_start = new[0].start_s
    kept = [s for s in kept if s.start_s < span_start - tolerance_s]
    return kept + new
