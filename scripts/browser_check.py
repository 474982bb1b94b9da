"""`make browser-check`: render the StableTTS demo page in headless Chromium and check what a person sees.

A random tiny voice is written to a temporary folder, `gradio_demo_stabletts` serves it on a free loopback
port, and Chromium loads the page twice: once for the DOM after the page's scripts ran (`--dump-dom`), once
for a screenshot. The check passes when the rendered page (script text left out: Gradio's config, embedded
in the HTML, names every label before anything is drawn) shows the title, the text box, the voice-reference
upload, the synthesis settings and the Speak button, and no connection error. Offline: nothing but loopback.

    python scripts/browser_check.py [--chromium PATH] [--screenshot demo_out/browser_check.png]

Exit status: 0 the page rendered as expected; 1 something is missing (named); 2 Chromium was not found.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Before gradio and huggingface_hub are imported: they read these once.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--hide-scrollbars", "--window-size=1280,1100",
)
VIRTUAL_TIME_MS = 15_000
CHROMIUM_TIMEOUT_S = 120
CONNECTION_ERRORS = ("Connection errored out", "Could not connect", "Error loading")


@dataclass
class RenderedPage:
    """What a person would see: the visible text (in document order) and the kinds of elements drawn."""

    title: str = ""
    text: str = ""
    tags: dict[str, int] = field(default_factory=dict)
    buttons: list[str] = field(default_factory=list)


class _Renderer(HTMLParser):
    _HIDDEN = {"script", "style", "template", "noscript"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = RenderedPage()
        self._open: list[str] = []
        self._chunks: list[str] = []
        self._button: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.page.tags[tag] = self.page.tags.get(tag, 0) + 1
        if tag == "button":
            self._button = []
        if tag not in ("br", "img", "input", "meta", "link", "hr", "source"):
            self._open.append(tag)

    def handle_endtag(self, tag):
        if tag == "button" and self._button is not None:
            self.page.buttons.append(" ".join("".join(self._button).split()))
            self._button = None
        if tag in self._open:
            while self._open and self._open.pop() != tag:
                pass

    def handle_data(self, data):
        if any(t in self._HIDDEN for t in self._open):
            return
        if "title" in self._open:
            self.page.title += data
            return
        self._chunks.append(data)
        if self._button is not None:
            self._button.append(data)

    def close(self):
        super().close()
        self.page.text = " ".join(" ".join(self._chunks).split())


def rendered_page(dom: str) -> RenderedPage:
    """Parse Chromium's `--dump-dom` output."""
    parser = _Renderer()
    parser.feed(dom)
    parser.close()
    return parser.page


def problems(page: RenderedPage, title: str, labels: list[str]) -> list[str]:
    """Everything a person would miss on the page, as sentences; empty when it rendered as expected."""
    found = []
    if title not in page.title:
        found.append(f"the document title is {page.title.strip()!r}, not {title!r}")
    for text in [title, *labels]:
        if text not in page.text:
            found.append(f"{text!r} is not shown")
    if not page.tags.get("textarea"):
        found.append("no text box was drawn")
    if "Speak" not in page.buttons:
        found.append(f"no Speak button (buttons: {page.buttons})")
    for error in CONNECTION_ERRORS:
        if error in page.text:
            found.append(f"the page says {error!r}")
    return found


def find_chromium(given: str | None) -> str | None:
    """The Chromium binary to run: `given` if it exists, else the first known name on PATH; None if none."""
    if given:
        return given if Path(given).is_file() or shutil.which(given) else None
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def run_chromium(chromium: str, url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    """Load `url` headless with a throw-away profile, giving the page's scripts VIRTUAL_TIME_MS to settle."""
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={VIRTUAL_TIME_MS}",
               *extra, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False)


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_voice_checkpoint(folder: Path) -> Path:
    """A random tiny StableTTS voice with its sidecar, as training writes one (it babbles: a page check only)."""
    import torch

    from StableTTS import build_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(build_model("tiny"), folder / "best_model.pt",
                           frontend={"kind": "romanized", "language": "swh", "romanizer": "latin"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", help=f"Chromium binary (default: the first of {', '.join(CHROMIUM_NAMES)} on PATH)")
    parser.add_argument("--screenshot", type=Path, default=ROOT / "demo_out" / "browser_check.png",
                        help="where to save a screenshot of the page (default: demo_out/browser_check.png)")
    args = parser.parse_args(argv)

    chromium = find_chromium(args.chromium)
    if chromium is None:
        print(f"chromium not found (looked for {args.chromium or ', '.join(CHROMIUM_NAMES)}); "
              "install it (Debian: apt-get install chromium) or pass --chromium PATH", file=sys.stderr)
        return 2

    import gradio_demo_stabletts as tts_demo
    from tts.inference import load_voice

    with tempfile.TemporaryDirectory(prefix="browser_check_") as tmp:
        tmp_dir = Path(tmp)
        checkpoint = tiny_voice_checkpoint(tmp_dir)
        demo = tts_demo.build_demo(load_voice(checkpoint, device="cpu"), checkpoint=checkpoint)
        demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
        try:
            url = demo.local_url
            print(f"Serving the TTS demo at {url}; rendering it with {chromium}")
            dumped = run_chromium(chromium, url, tmp_dir / "profile", "--dump-dom")
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            shot = run_chromium(chromium, url, tmp_dir / "profile", f"--screenshot={args.screenshot.resolve()}")
        except subprocess.TimeoutExpired as exc:
            print(f"FAIL: Chromium did not finish within {exc.timeout} s", file=sys.stderr)
            return 1
        finally:
            demo.close()

    if dumped.returncode != 0 or not dumped.stdout.strip():
        print(f"FAIL: Chromium exited {dumped.returncode} without a page:\n{dumped.stderr[-2000:]}", file=sys.stderr)
        return 1
    page = rendered_page(dumped.stdout)
    found = problems(page, tts_demo.TITLE, [tts_demo.TEXT_LABEL, tts_demo.REFERENCE_LABEL, "Synthesis settings"])
    if shot.returncode != 0 or not args.screenshot.is_file():
        found.append(f"no screenshot (Chromium exited {shot.returncode})")
    if found:
        print("FAIL: the TTS demo page did not render as expected:\n  - " + "\n  - ".join(found), file=sys.stderr)
        print(f"Visible text: {page.text[:1000]!r}", file=sys.stderr)
        return 1
    print(f"OK: {tts_demo.TITLE!r} rendered with its text box, voice reference upload, settings and Speak button "
          f"({len(page.text)} characters of visible text); screenshot: {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
