"""What a job and a poll cost in GitLab requests and bytes, as projects grow.

    .venv/bin/python bench/bench_gitlab.py [--quick]

Runs the fake GitLab (tests/gitlab_fake) in-process on loopback and counts every request it serves:

* per job, for N verses (N audio files): read the .codex, fetch the audio its cells name (``download_many``),
  commit the results (N new audio attachments + the .codex update + a 20 MB model), split under
  ``max_commit_bytes``;
* per poll of P projects (10 % with a manifest), all idle: the first poll, the steady idle poll, and the
  periodic full listing.

Each figure is printed next to the naive count (one raw request per file; one manifest request per
project per poll, plus the project listing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from gitlab_fake import GitLabTestServer  # noqa: E402
from gitlab_jobs import GitLabProjectStore, GitLabSource  # noqa: E402
from storage import FileAction  # noqa: E402

TOKEN = "bench-token"
AUDIO = ".project/attachments/pointers/MAT"
GITATTRIBUTES = "".join(f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in ("wav", "mp3", "m4a", "ogg", "webm"))
MODEL_BYTES = 20 * 1024 * 1024


def tiny_audio(seed: str, size: int = 1500) -> bytes:
    block = hashlib.sha256(seed.encode()).digest()
    return (b"\x1a\x45\xdf\xa3" + block * (size // 32 + 1))[:size]


def audio_id(verse: int) -> str:
    return f"audio-mat-1-{verse}-1763655321982-{verse:09d}"


def codex_notebook(verses: int) -> str:
    """MAT with one recorded take per verse (attachment ``url`` names the ``files/`` twin, as the editor does)."""
    cells = [{"kind": 2, "value": f"<span>verse {n}</span>",
              "metadata": {"id": f"MAT 1:{n}", "selectedAudioId": audio_id(n), "attachments": {
                  audio_id(n): {"url": f".project/attachments/files/MAT/{audio_id(n)}.webm", "type": "audio"}}}}
             for n in range(verses)]
    return json.dumps({"cells": cells, "metadata": {"id": "MAT"}})


def audio_paths(notebook: bytes) -> list[str]:
    """Where the cells' takes live in git: ``pointers/`` for the ``files/`` url."""
    cells = json.loads(notebook)["cells"]
    urls = [a["url"] for c in cells for a in c["metadata"]["attachments"].values()]
    return [u.replace("/attachments/files/", "/attachments/pointers/") for u in urls]


def split(actions: list[FileAction], limit: int) -> list[list[FileAction]]:
    """Greedy split of actions under a payload cap (what the handlers do before committing)."""
    batches: list[list[FileAction]] = [[]]
    size = 0
    for action in actions:
        if batches[-1] and size + action.size() > limit:
            batches.append([])
            size = 0
        batches[-1].append(action)
        size += action.size()
    return batches


def bench_job(server: GitLabTestServer, verses: int, work: Path) -> dict:
    """One job's storage traffic for a project with ``verses`` audio files."""
    path = f"bench/job-{verses}"
    files = {".gitattributes": GITATTRIBUTES, "files/target/MAT.codex": codex_notebook(verses)}
    files |= {f"{AUDIO}/{audio_id(n)}.webm": tiny_audio(f"{verses}-{n}") for n in range(verses)}
    server.add_project(path, files=files)
    model = work / f"model-{verses}.pt"
    model.write_bytes(os.urandom(MODEL_BYTES))

    store = GitLabProjectStore(server.url, path, token=TOKEN)
    server.reset_stats()
    started = time.perf_counter()
    notebook = store.read("files/target/MAT.codex")
    fetched = store.download_many(audio_paths(notebook.content), work / f"job-{verses}")
    assert len(fetched) == verses
    results = [FileAction.create(f"{AUDIO}/generated-{n:05d}.webm", tiny_audio(f"gen-{n}")) for n in range(verses)]
    results.append(FileAction.update("files/target/MAT.codex", notebook.content + b"\n",
                                     expected_version=notebook.version))
    results.append(FileAction.create(f"gpu_jobs/job_{verses}/checkpoint/best_model.pt", source=model))
    batches = split(results, store.max_commit_bytes)
    for number, batch in enumerate(batches, 1):
        store.commit(batch, f"GPU job {verses}: results ({number}/{len(batches)})")
    seconds = time.perf_counter() - started
    stats = server.stats()
    store.close()
    # Naive: the same .codex read and commits, but one raw request per audio file.
    return {"verses": verses, "requests": stats["total"], "naive": 1 + verses + len(batches),
            "commits": len(batches), "bytes_in": stats["bytes_in"], "bytes_out": stats["bytes_out"],
            "seconds": seconds, "by_endpoint": stats["requests"]}


def bench_poll(server: GitLabTestServer, projects: int) -> dict:
    """Requests per poll of ``projects`` idle projects, 10 % of them with a manifest."""
    long_ago = datetime.now(timezone.utc) - timedelta(hours=6)
    manifest = "version: 1\njobs: []\n"
    for number in range(projects):
        files = {"metadata.json": "{}"}
        if number % 10 == 0:
            files["gpu_jobs/manifest.yaml"] = manifest
        server.add_project(f"poll-{projects}/p{number:04d}", files=files)
        server.set_last_activity(f"poll-{projects}/p{number:04d}", long_ago)
    now = [time.time()]
    source = GitLabSource(server.url, TOKEN, clock=lambda: now[0], relist_seconds=600)
    figures = {"projects": projects}
    server.reset_stats()
    for store in source.poll():
        source.note_scanned(store, has_open_jobs=False)
    figures["first"] = server.stats()["total"]
    idle = []
    for _ in range(5):
        now[0] += 30
        server.reset_stats()
        assert source.poll() == []
        idle.append(server.stats()["total"])
    figures["idle"] = max(idle)
    now[0] += 600
    server.reset_stats()
    source.poll()
    figures["full_relist"] = server.stats()["total"]
    # The naive poll: list all projects, then ask each one for its manifest.
    figures["naive"] = math.ceil(projects / 100) + projects
    source.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (seconds, for CI)")
    args = parser.parse_args(argv)
    verse_counts = (10, 100) if args.quick else (10, 100, 1000)
    project_counts = (10, 100) if args.quick else (10, 100, 1000)

    with tempfile.TemporaryDirectory(prefix="bench-gitlab-") as scratch:
        work = Path(scratch)
        print("Per job: read .codex + fetch its audio + commit N attachments, the .codex update and a 20 MB model;")
        print("naive = one raw request per audio file, same .codex read and commits")
        print(f"{'verses':>7} {'requests':>9} {'naive':>7} {'commits':>8} {'MB up':>7} {'MB down':>8} {'s':>6}")
        for verses in verse_counts:
            with GitLabTestServer(TOKEN, root=work / f"srv-job-{verses}") as server:
                row = bench_job(server, verses, work)
            print(f"{row['verses']:>7} {row['requests']:>9} {row['naive']:>7} {row['commits']:>8} "
                  f"{row['bytes_in'] / 1e6:>7.1f} {row['bytes_out'] / 1e6:>8.2f} {row['seconds']:>6.1f}")
            print(f"        {row['by_endpoint']}")
        print()
        print("Per poll of idle projects (10 % with a manifest); naive = list + one manifest request per project")
        print(f"{'projects':>9} {'first':>7} {'idle':>6} {'full relist':>12} {'naive':>7}")
        for projects in project_counts:
            with GitLabTestServer(TOKEN, root=work / f"srv-poll-{projects}") as server:
                row = bench_poll(server, projects)
            print(f"{row['projects']:>9} {row['first']:>7} {row['idle']:>6} {row['full_relist']:>12} {row['naive']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
