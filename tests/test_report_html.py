"""The pre-flight's reports: golden text and HTML (normalised), the HTML self-contained, and rendered by a
real headless Chromium (a screenshot that is not blank, the verdict in the DOM)."""

from __future__ import annotations

import datetime as dt
import re
import struct
import subprocess
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from certkit.checks.preflight import PreflightReport, preflight, render_html, render_text
from tests.pki import NOW, SERVER
from tests.test_preflight_world import check_golden, world
from tests.tools import require_tool


@pytest.fixture(scope="module")
def reports() -> Iterator[dict[str, PreflightReport]]:
    with world() as w:
        w.serve()
        out = {"ready": preflight("fabrikam.test", **w.kwargs())}  # type: ignore[arg-type]
        args = w.kwargs(w.leaf(eku=[SERVER], not_after=NOW + dt.timedelta(days=10)))
        args.update(smart_host="relay.contoso.test", anchors=[w.our_root.cert])
        out["not-ready"] = preflight("fabrikam.test", **args)  # type: ignore[arg-type]
        yield out


def test_golden_text(reports: dict[str, PreflightReport]) -> None:
    for name, report in reports.items():
        check_golden(f"preflight-{name}.txt", render_text(report))


def test_golden_html(reports: dict[str, PreflightReport]) -> None:
    for name, report in reports.items():
        check_golden(f"preflight-{name}.html", render_html(report))


class _Refs(HTMLParser):
    """Collects every tag and every attribute that could load something."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "action") and value:
                self.refs.append(value)
            if name.startswith("on"):
                self.refs.append(f"{name}=")


def test_html_is_self_contained(reports: dict[str, PreflightReport]) -> None:
    html = render_html(reports["not-ready"])
    parser = _Refs()
    parser.feed(html)
    assert not parser.refs
    assert not parser.tags & {"script", "link", "img", "iframe", "object", "embed"}
    assert "url(" not in html and "@import" not in html
    # Findings are escaped, not markup.
    assert "<CN=" not in html


def test_html_has_verdict_directions_and_chains(reports: dict[str, PreflightReport]) -> None:
    html = render_html(reports["not-ready"])
    assert html.index('id="verdict"') < html.index("We &rarr; them") < html.index("Them &rarr; us")
    assert "NOT READY" in html
    assert "route.smart-host" in html and "eku.no-client-auth" in html
    assert "451 4.4.0 Primary target IP address responded with" in html  # Exchange's words
    assert 'class="box valid"' in html and 'class="box untrusted"' in html
    assert 'class="tl-bar' in html and 'class="tl-now"' in html
    assert "READY: Domain Security" in render_html(reports["ready"])


# --- headless Chromium ---------------------------------------------------------------------------


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the unfiltered rows of an 8-bit RGB/RGBA PNG (stdlib only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, ctype = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), (depth, ctype)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    bpp = 4 if ctype == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r[i:i + 3]) for r in rows[::4] for i in range(0, stride, bpp * 4)]


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    exe = require_tool("chromium")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


@pytest.mark.slow
def test_renders_in_headless_chromium(reports: dict[str, PreflightReport], tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(reports["not-ready"]), encoding="utf-8")
    shot = tmp_path / "report.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri(), tmp=tmp_path)
    assert shot.exists(), done.stderr[-2000:]
    width, height, pixels = _png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 1600)
    colours = {p for p in pixels}
    assert len(colours) > 50, f"the screenshot looks blank ({len(colours)} colours)"
    # The red verdict banner is at the top.
    reds = [p for p in pixels[: len(pixels) // 8] if p[0] > 150 and p[1] < 80 and p[2] < 90]
    assert reds, "no red verdict banner in the top of the page"
    dom = _chromium("--dump-dom", page.as_uri(), tmp=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    verdict = re.search(r'id="verdict">\s*([^<]+)', dom.stdout)
    assert verdict and verdict.group(1).strip().startswith("NOT READY: Domain Security with fabrikam.test")

