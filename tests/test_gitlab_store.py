"""GitLabProjectStore and GitLabSource against the fake GitLab: semantics, LFS, faults, request counts,
and the token never leaking."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from gitlab_fixtures import (  # noqa: F401 - fixtures
    FAST_RETRY,
    codex_project_dir,
    fake_audio,
    gitlab_project,
    gitlab_server,
    gitlab_store,
    gitlab_token,
    pointer_for,
)
from gitlab_jobs import (
    COMMIT_TRAILER,
    TOKEN_ENV,
    CommitTooLarge,
    GitLabAuthError,
    GitLabError,
    GitLabProjectStore,
    GitLabSource,
    GitLabUnavailable,
)
from git_lfs import LfsRules
from storage import FileAction, FileAlreadyExists, FileMissing, StoreSpec, VersionConflict
from stores import open_store

AUDIO = ".project/attachments/pointers/MAT"
COMMITS = "POST /projects/:id/repository/commits"


def landed(server, project, key_text: str) -> list[dict]:
    return [c for c in server.commits(project) if key_text in c["message"]]


# -- reads ---------------------------------------------------------------------------------------------
def test_read_version_list_and_download(gitlab_server, gitlab_project, gitlab_store, codex_project_dir, tmp_path):
    meta = gitlab_store.read("metadata.json")
    assert meta.content == (codex_project_dir / "metadata.json").read_bytes()
    assert meta.version == gitlab_server.commits(gitlab_project)[0]["id"] == gitlab_store.version("metadata.json")
    assert gitlab_store.read("nope.txt") is None and gitlab_store.version("nope.txt") is None
    assert not gitlab_store.exists("nope.txt") and gitlab_store.exists("metadata.json")

    everything = gitlab_store.list_files()
    assert everything == sorted(gitlab_server.files(gitlab_project))
    audio = gitlab_store.list_files(AUDIO + "/")
    assert len(audio) == 3 and all(p.startswith(AUDIO + "/") for p in audio)
    assert gitlab_store.list_files("no/such/folder") == []

    pointer = gitlab_store.read(audio[0])  # reads give the pointer text of LFS files...
    assert pointer.text.startswith("version https://git-lfs.github.com/spec/v1")
    target = gitlab_store.download(audio[0], tmp_path / "dl" / "a.webm")  # ...downloads the real bytes
    assert target.read_bytes() == gitlab_server.read_lfs(gitlab_project, audio[0])
    with pytest.raises(FileNotFoundError):
        gitlab_store.download("nope.webm", tmp_path / "dl" / "nope.webm")
    assert not (tmp_path / "dl" / "nope.webm").exists() and not (tmp_path / "dl" / "nope.webm.part").exists()


def test_list_files_pages_through_large_folders_in_few_requests(gitlab_server, gitlab_store, gitlab_project):
    gitlab_server.push(gitlab_project, {f"many/{n:04d}.txt": str(n) for n in range(450)})
    assert gitlab_store.branch == "main"  # the store's one look-up of the project
    gitlab_server.reset_stats()
    assert len(gitlab_store.list_files("many")) == 450
    assert gitlab_server.stats()["requests"] == {"GET /projects/:id/repository/tree": 5}


def test_download_many_uses_one_archive_per_folder_and_raw_for_the_rest(gitlab_server, gitlab_project, gitlab_store,
                                                                         tmp_path):
    audio = {f"{AUDIO}/bulk-{n:03d}.webm": fake_audio(f"bulk{n}", 3000) for n in range(40)}
    gitlab_server.push(gitlab_project, audio)
    wanted = sorted(audio) + ["metadata.json"]
    assert gitlab_store.branch == "main"
    gitlab_server.reset_stats()
    got = gitlab_store.download_many(wanted, tmp_path / "bulk")
    assert sorted(got) == wanted
    for path, data in audio.items():
        assert got[path] == tmp_path / "bulk" / path and got[path].read_bytes() == data
    assert gitlab_server.stats()["requests"] == {"GET /projects/:id/repository/archive": 1,
                                                 "GET /projects/:id/repository/files/:path/raw": 1}
    with pytest.raises(FileNotFoundError, match="1 file"):
        gitlab_store.download_many(["metadata.json", "nope.txt"], tmp_path / "bulk2")
    # A pointer whose object never reached the server stays a pointer in the archive: it is not passed
    # off as audio, the raw fallback is tried, and the file is reported missing.
    orphan = f"{AUDIO}/bulk-orphan.webm"
    gitlab_server.push(gitlab_project, {orphan: pointer_for(b"never uploaded")})
    with pytest.raises(FileNotFoundError, match="bulk-orphan"):
        gitlab_store.download_many(sorted(audio) + [orphan], tmp_path / "bulk4")
    assert not (tmp_path / "bulk4" / orphan).exists()
    assert sorted(gitlab_store.download_many(["metadata.json", "nope.txt"], tmp_path / "bulk3",
                                             missing_ok=True)) == ["metadata.json"]


def test_download_many_falls_back_to_raw_when_archives_fail(gitlab_server, gitlab_project, gitlab_store, tmp_path):
    audio = {f"{AUDIO}/fb-{n:02d}.webm": fake_audio(f"fb{n}") for n in range(20)}
    gitlab_server.push(gitlab_project, audio)
    gitlab_server.faults.script("5xx", "GET /projects/:id/repository/archive", times=FAST_RETRY.attempts)
    got = gitlab_store.download_many(sorted(audio), tmp_path / "fb")
    assert {p: f.read_bytes() for p, f in got.items()} == audio
    assert gitlab_server.stats()["requests"]["GET /projects/:id/repository/files/:path/raw"] == 20


def test_a_folder_archive_past_its_cap_is_abandoned_for_per_file_downloads(gitlab_server, gitlab_project,
                                                                           gitlab_store, tmp_path):
    """A folder may hold far more than the wanted takes (a translator's large video): the archive is spooled
    only up to ``archive_max_bytes``, then the wanted files come one by one, exactly as asked."""
    audio = {f"{AUDIO}/cap-{n:02d}.webm": fake_audio(f"cap{n}", 3000) for n in range(20)}
    gitlab_server.push(gitlab_project, {**audio, f"{AUDIO}/huge-video.webm": os.urandom(400_000)})  # incompressible
    gitlab_store.archive_max_bytes = 100_000
    gitlab_server.reset_stats()
    got = gitlab_store.download_many(sorted(audio), tmp_path / "cap")
    assert {p: f.read_bytes() for p, f in got.items()} == audio
    requests = gitlab_server.stats()["requests"]
    assert requests["GET /projects/:id/repository/archive"] == 1  # tried once, not retried
    assert requests["GET /projects/:id/repository/files/:path/raw"] == 20
    assert not (tmp_path / "cap" / AUDIO / "huge-video.webm").exists()


# -- commits -------------------------------------------------------------------------------------------
def test_commit_semantics_and_every_precondition_error(gitlab_server, gitlab_project, gitlab_store):
    path = "gpu_jobs/job_a/response.yaml"
    sha = gitlab_store.commit([FileAction.create(path, "state: running\n")], "claim")
    assert gitlab_server.commits(gitlab_project)[0]["id"] == sha
    first = gitlab_store.read(path)
    before = gitlab_server.commits(gitlab_project)

    with pytest.raises(FileAlreadyExists) as exists:
        gitlab_store.commit([FileAction.create(path, "state: running\n")], "claim again")
    assert exists.value.path == path
    with pytest.raises(FileMissing) as missing:
        gitlab_store.commit([FileAction.update("gpu_jobs/nope.yaml", "x")], "update missing")
    assert missing.value.path == "gpu_jobs/nope.yaml"
    with pytest.raises(FileMissing):
        gitlab_store.commit([FileAction.delete("gpu_jobs/nope.yaml")], "delete missing")
    assert gitlab_server.commits(gitlab_project) == before

    gitlab_server.push(gitlab_project, {"unrelated.txt": "translator"})  # does not make our version stale
    gitlab_store.commit([FileAction.update(path, "state: completed\n", expected_version=first.version)], "finish")
    with pytest.raises(VersionConflict) as stale:
        gitlab_store.commit([FileAction.update(path, "state: failed\n", expected_version=first.version),
                             FileAction.create("gpu_jobs/job_a/logs.txt", "log")], "late")
    assert stale.value.path == path
    assert gitlab_server.read(gitlab_project, path) == b"state: completed\n"
    assert gitlab_server.read(gitlab_project, "gpu_jobs/job_a/logs.txt") is None

    now = gitlab_store.version(path)
    gitlab_store.commit([FileAction.delete(path, expected_version=now)], "remove")
    assert gitlab_store.read(path) is None


def test_branch_moved_is_retried_and_preconditions_still_hold(gitlab_server, gitlab_project, gitlab_store):
    pushes = iter([{"translator-1.txt": "a"}, {"translator-2.txt": "b"}])
    gitlab_server.before_ref_update = lambda project: gitlab_server.push(project, next(pushes, {"more.txt": "c"}))
    try:
        gitlab_store._retry = type(FAST_RETRY)(base_delay=0.01, max_delay=0.05, branch_moved_retries=1)
        with pytest.raises(GitLabUnavailable, match="kept moving"):
            gitlab_store.commit([FileAction.create("mine.txt", "m")], "busy branch")
    finally:
        gitlab_server.before_ref_update = None
        gitlab_store._retry = FAST_RETRY
    assert gitlab_server.read(gitlab_project, "mine.txt") is None

    # One race, then the retry lands.
    raced = iter([True])
    gitlab_server.before_ref_update = lambda project: next(raced, False) and gitlab_server.push(project, {"t.txt": "t"})
    gitlab_store.commit([FileAction.create("mine.txt", "m")], "lands on retry")
    gitlab_server.before_ref_update = None
    assert gitlab_server.read(gitlab_project, "mine.txt") == b"m"

    # A race that creates our very path: the retry must fail the create, not overwrite.
    raced = iter([True])
    gitlab_server.before_ref_update = lambda project: next(raced, False) and gitlab_server.push(
        project, {"gpu_jobs/job_r/response.yaml": "worker: other\n"})
    with pytest.raises(FileAlreadyExists):
        gitlab_store.commit([FileAction.create("gpu_jobs/job_r/response.yaml", "worker: me\n")], "claim")
    gitlab_server.before_ref_update = None
    assert gitlab_server.read(gitlab_project, "gpu_jobs/job_r/response.yaml") == b"worker: other\n"


def test_large_source_goes_through_lfs_and_only_the_pointer_is_committed(gitlab_server, gitlab_project,
                                                                          gitlab_store, tmp_path):
    model = tmp_path / "big.webm"
    with model.open("wb") as handle:
        for block in range(20):
            handle.write(hashlib.sha256(str(block).encode()).digest() * (1024 * 1024 // 32))
    data = model.read_bytes()
    assert len(data) == 20 * 1024 * 1024
    path = f"{AUDIO}/model-output.webm"
    gitlab_server.reset_stats()
    gitlab_store.commit([FileAction.create(path, source=model),
                         FileAction.create("gpu_jobs/job_m/logs.txt", "done\n")], "results")
    stats = gitlab_server.stats()
    assert stats["requests"]["POST /:repo.git/info/lfs/objects/batch"] == 1
    assert stats["requests"]["PUT /:repo.git/gitlab-lfs/objects/:oid/:size"] == 1
    assert stats["by_endpoint"][COMMITS]["bytes_in"] < 10_000  # the pointer, not 27 MB of base64
    assert gitlab_server.read(gitlab_project, path).decode() == pointer_for(data)
    assert gitlab_server.read_lfs(gitlab_project, path) == data
    assert gitlab_store.download(path, tmp_path / "back.webm").read_bytes() == data
    assert len(landed(gitlab_server, gitlab_project, "results")) == 1

    # An update of an LFS path goes through LFS too (GitLab would commit update content as a plain blob).
    smaller = fake_audio("update", 4000)
    gitlab_store.commit([FileAction.update(path, smaller)], "replace")
    assert gitlab_server.read(gitlab_project, path).decode() == pointer_for(smaller)
    assert gitlab_server.read_lfs(gitlab_project, path) == smaller
    # Small creates on LFS paths travel in the body; GitLab makes the object.
    gitlab_store.commit([FileAction.create(f"{AUDIO}/small.webm", smaller)], "small")
    assert gitlab_server.read_lfs(gitlab_project, f"{AUDIO}/small.webm") == smaller


def test_a_large_model_goes_to_lfs_and_gitattributes_learns_its_kind(gitlab_server, gitlab_project, tmp_path):
    """Codex's .gitattributes tracks audio, not models: a model still must not travel base64 in a commit body
    (a real ASR model is 2.4 GB, over any cap). It goes to LFS, and the same commit adds a line for that
    kind of job file, so the editor's checkout and git-lfs see a tracked pointer; small files stay blobs."""
    store = GitLabProjectStore(gitlab_server.url, gitlab_project.id, token=gitlab_server.token, retry=FAST_RETRY,
                               lfs_min_bytes=10_000)
    before = gitlab_server.read(gitlab_project, ".gitattributes").decode()
    assert "*.tar" not in before and not LfsRules(before).tracks("gpu_jobs/job_a/model/asr_model.pth.tar")
    model = tmp_path / "asr_model.pth.tar"
    model.write_bytes(fake_audio("model", 50_000))
    path = "gpu_jobs/job_a/model/asr_model.pth.tar"
    gitlab_server.reset_stats()
    store.commit([FileAction.create(path, source=model), FileAction.create("gpu_jobs/job_a/logs.txt", "ok\n")],
                 "model")
    assert gitlab_server.stats()["by_endpoint"][COMMITS]["bytes_in"] < 10_000  # a pointer, not the model
    assert gitlab_server.read(gitlab_project, path).decode() == pointer_for(model.read_bytes())
    assert gitlab_server.read_lfs(gitlab_project, path) == model.read_bytes()
    assert store.download(path, tmp_path / "back.tar").read_bytes() == model.read_bytes()
    assert gitlab_server.read(gitlab_project, "gpu_jobs/job_a/logs.txt") == b"ok\n"  # small: a plain blob
    after = gitlab_server.read(gitlab_project, ".gitattributes").decode()
    assert after == before + "gpu_jobs/**/*.tar filter=lfs diff=lfs merge=lfs -text\n"
    assert len(landed(gitlab_server, gitlab_project, "model")) == 1  # model, pointer and line: one commit

    # The next job's model is tracked already: no second line. A translator's change to .gitattributes made
    # after the store read it costs a re-read, and both changes survive.
    store.commit([FileAction.create("gpu_jobs/job_b/logs.txt", "started\n")], "small")  # reads .gitattributes
    gitlab_server.push(gitlab_project, {".gitattributes": after + "*.png filter=lfs diff=lfs merge=lfs -text\n"})
    gitlab_server.reset_stats()
    store.commit([FileAction.create("gpu_jobs/job_b/model/asr_model.pth.tar", source=model),
                  FileAction.create("gpu_jobs/job_b/checkpoint/best_model.pt", b"w" * 20_000)], "more")
    final = gitlab_server.read(gitlab_project, ".gitattributes").decode()
    assert final == after + "*.png filter=lfs diff=lfs merge=lfs -text\n" \
        + "gpu_jobs/**/*.pt filter=lfs diff=lfs merge=lfs -text\n"
    assert gitlab_server.stats()["requests"][COMMITS] == 2  # refused once on the stale .gitattributes
    assert gitlab_server.read_lfs(gitlab_project, "gpu_jobs/job_b/checkpoint/best_model.pt") == b"w" * 20_000
    store.close()


def test_a_large_notebook_is_committed_as_json_never_as_an_lfs_pointer(gitlab_server, gitlab_project):
    """Only results under gpu_jobs/ go to LFS by size: a 50 MB notebook committed as a pointer would leave the
    editor reading pointer text instead of the translation."""
    store = GitLabProjectStore(gitlab_server.url, gitlab_project.id, token=gitlab_server.token, retry=FAST_RETRY,
                               lfs_min_bytes=1000)
    before = gitlab_server.read(gitlab_project, ".gitattributes")
    notebook = "files/target/BIG.codex"
    big = ('{"cells": [' + ",".join(['{"kind": 2, "value": "x"}'] * 200) + '], "metadata": {}}').encode()
    store.commit([FileAction.create(notebook, big)], "a large notebook")
    store.commit([FileAction.update(notebook, big + b"\n", expected_version=store.version(notebook))], "again")
    assert gitlab_server.read(gitlab_project, notebook) == big + b"\n"
    assert gitlab_server.read(gitlab_project, ".gitattributes") == before
    store.close()


def test_the_store_never_sends_a_body_over_its_cap(gitlab_server, gitlab_project, gitlab_store):
    small = GitLabProjectStore(gitlab_server.url, gitlab_project.id, token=gitlab_server.token,
                               max_body_bytes=50_000, retry=FAST_RETRY)
    assert small.max_commit_bytes < 50_000 * 3 // 4
    gitlab_server.reset_stats()
    with pytest.raises(CommitTooLarge):
        small.commit([FileAction.create("big.bin", b"x" * 60_000)], "too big")
    assert COMMITS not in gitlab_server.stats()["requests"]
    # And when the server's cap is lower than the store believes, the 413 is the same clear error.
    gitlab_server.app.max_commit_bytes = 1000
    with pytest.raises(CommitTooLarge):
        gitlab_store.commit([FileAction.create("big.bin", b"x" * 5000)], "too big for the server")
    assert gitlab_server.read(gitlab_project, "big.bin") is None


@pytest.mark.parametrize("kind, after_apply", [
    ("5xx", False), ("5xx", True), ("429", False), ("reset", False), ("reset", True), ("slow", False),
])
@pytest.mark.parametrize("blind", [False, True], ids=["claim", "blind-update"])
def test_a_commit_lands_exactly_once_under_each_fault(gitlab_server, gitlab_project, gitlab_store, kind, after_apply,
                                                      blind):
    # A blind update has no precondition to stop a duplicate: only checking the branch prevents one.
    actions = [FileAction.update("metadata.json", "{}")]
    if not blind:
        actions.append(FileAction.create("gpu_jobs/job_f/response.yaml", "state: running\n"))
    gitlab_server.faults.script(kind, COMMITS, after_apply=after_apply, delay=0.3)
    before = len(gitlab_server.commits(gitlab_project))
    sha = gitlab_store.commit(actions, f"commit under {kind}")
    commits = gitlab_server.commits(gitlab_project)
    assert len(commits) == before + 1 and commits[0]["id"] == sha
    assert gitlab_server.faults.injected == {kind: 1}
    assert gitlab_server.read(gitlab_project, "metadata.json") == b"{}"


def test_many_commits_under_random_faults_land_once_each(gitlab_server, gitlab_project, gitlab_store, tmp_path):
    gitlab_server.set_faults("5xx=0.12,429=0.03,reset=0.12,slow=0.01")
    gitlab_server.faults.slow_range = (0.05, 0.2)
    audio = tmp_path / "take.webm"
    audio.write_bytes(fake_audio("take", 300_000))
    for number in range(12):
        extra = [FileAction.create(f"{AUDIO}/take-{number}.webm", source=audio)] if number % 4 == 0 else []
        gitlab_store.commit([FileAction.create(f"gpu_jobs/job_{number}/response.yaml", f"n: {number}\n"), *extra],
                            f"job {number}")
    gitlab_server.set_faults(None)
    keys = [c["message"].split(f"{COMMIT_TRAILER}: ")[1].strip() for c in gitlab_server.commits(gitlab_project)
            if COMMIT_TRAILER in c["message"]]
    assert len(keys) == len(set(keys)) == 12
    for number in range(12):
        assert gitlab_server.read(gitlab_project, f"gpu_jobs/job_{number}/response.yaml") == f"n: {number}\n".encode()
    assert gitlab_server.read_lfs(gitlab_project, f"{AUDIO}/take-8.webm") == audio.read_bytes()
    assert sum(gitlab_server.faults.injected.values()) > 0


def test_reads_survive_faults(gitlab_server, gitlab_project, gitlab_store, tmp_path):
    gitlab_server.set_faults("5xx=0.2,reset=0.2,429=0.05")
    try:
        for _ in range(4):
            assert gitlab_store.read("metadata.json") is not None
            assert len(gitlab_store.list_files()) == len(gitlab_server.files(gitlab_project))
            path = gitlab_store.list_files(AUDIO)[0]
            assert gitlab_store.download(path, tmp_path / "f.webm").read_bytes() == \
                gitlab_server.read_lfs(gitlab_project, path)
    finally:
        gitlab_server.set_faults(None)
    assert gitlab_server.faults.injected.get("reset", 0) > 0


# -- specs, reprs and the token ------------------------------------------------------------------------
def test_spec_round_trip_takes_the_token_from_the_environment(gitlab_server, gitlab_project, gitlab_store,
                                                              monkeypatch):
    spec = gitlab_store.spec()
    assert spec.kind == "gitlab" and spec.options["branch"] == "main"
    assert gitlab_server.token not in repr(spec) and gitlab_server.token not in repr(gitlab_store)
    reopened = open_store(spec)
    assert reopened.read("metadata.json").content == gitlab_store.read("metadata.json").content
    assert reopened.name == "bible/demo"
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(GitLabAuthError):
        open_store(StoreSpec("gitlab", dict(spec.options)))


def test_the_token_never_leaks(gitlab_server, gitlab_project, gitlab_store, caplog):
    caplog.set_level(logging.DEBUG)
    token = gitlab_server.token
    texts: list[str] = []

    def failing(call) -> None:
        with pytest.raises(Exception) as info:
            call()
        error: BaseException | None = info.value
        while error is not None:
            texts.extend([str(error), repr(error), repr(error.args)])
            error = error.__cause__ or error.__context__

    bad = GitLabProjectStore(gitlab_server.url, gitlab_project.id, token=token[::-1], retry=FAST_RETRY)
    failing(lambda: bad.read("metadata.json"))
    failing(lambda: bad.commit([FileAction.create("x.txt", "x")], f"a message mentioning {token}"))
    failing(lambda: gitlab_store.download("missing.webm", Path("/nonexistent/dir/x")))
    gitlab_store.commit([FileAction.create("c.txt", "1")], f"mentioning {token} by mistake")
    version = gitlab_store.version("c.txt")
    gitlab_store.commit([FileAction.update("c.txt", "2", expected_version=version)], "second")
    failing(lambda: gitlab_store.commit([FileAction.update("c.txt", "3", expected_version=version)], "stale"))
    failing(lambda: gitlab_store.commit([FileAction.update(f"{AUDIO}/x.webm", b"x")], "lfs update of nothing"))
    gitlab_server.faults.script("reset", COMMITS, after_apply=True)
    gitlab_store.commit([FileAction.update(f"{AUDIO}/" + gitlab_store.list_files(AUDIO)[0].rsplit("/", 1)[1],
                                           fake_audio("x"))], "lfs under a fault")
    texts += [repr(gitlab_store), repr(bad), str(gitlab_store.spec()), repr(GitLabSource(gitlab_server.url, token))]
    texts += [record.getMessage() for record in caplog.records]
    texts += [record.exc_text or "" for record in caplog.records]
    texts += [c["message"] for c in gitlab_server.commits(gitlab_project)]
    assert len(texts) > 20 and any("401" in t or "refused the token" in t for t in texts)
    leaks = [t for t in texts if token in t]
    assert leaks == []


def test_lfs_rules_follow_gitattributes_patterns():
    rules = LfsRules("*.webm filter=lfs diff=lfs merge=lfs -text\n# comment\n"
                     "/models/**/*.pt filter=lfs\nsmall.webm -filter\ndocs/*.wav filter=lfs\n")
    assert rules.tracks(".project/attachments/pointers/MAT/a.webm") and rules.tracks("a.webm")
    assert not rules.tracks("x/small.webm") and not rules.tracks("a.webm.txt")
    assert rules.tracks("models/a/b/c.pt") and rules.tracks("models/c.pt") and not rules.tracks("x/models/c.pt")
    assert rules.tracks("docs/a.wav") and not rules.tracks("docs/sub/a.wav")
    assert not LfsRules(None).tracks("a.webm")


# -- the source ----------------------------------------------------------------------------------------
def _manifest(job_id: str = "j1") -> str:
    return yaml.safe_dump({"version": 1, "jobs": [{"job_id": job_id, "job_type": "tts", "mode": "training"}]})


def _idle_projects(server, count: int, with_manifest: set[int]) -> None:
    long_ago = datetime.now(timezone.utc) - timedelta(hours=6)
    for number in range(count):
        files = {"metadata.json": "{}"}
        if number in with_manifest:
            files["gpu_jobs/manifest.yaml"] = _manifest()
        server.add_project(f"team/p{number:03d}", files=files)
        server.set_last_activity(f"team/p{number:03d}", long_ago)


class Clock:
    """The source's clock, moved by hand; it starts at the real time because it is compared with GitLab's."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_source_polls_idle_projects_cheaply(gitlab_server):
    _idle_projects(gitlab_server, 50, with_manifest={3, 17, 42})
    clock = Clock()
    source = GitLabSource(gitlab_server.url, gitlab_server.token, retry=FAST_RETRY, relist_seconds=600, clock=clock)

    gitlab_server.reset_stats()
    first = source.poll()
    assert sorted(s.name for s in first) == ["team/p003", "team/p017", "team/p042"]
    assert gitlab_server.stats()["requests"] == {"GET /projects": 1, "HEAD /projects/:id/repository/files/:path": 50}
    for store in first:
        source.note_scanned(store, has_open_jobs=store.name == "team/p017")

    gitlab_server.reset_stats()
    clock.now += 30
    second = source.poll()
    assert [s.name for s in second] == ["team/p017"]  # open jobs are revisited, for free
    assert gitlab_server.stats()["requests"] == {"GET /projects": 1}
    source.note_scanned(second[0], has_open_jobs=False)

    # A translator pushes a manifest into an idle project: one HEAD, for that project only.
    gitlab_server.push("team/p020", {"gpu_jobs/manifest.yaml": _manifest("new")})
    gitlab_server.reset_stats()
    clock.now += 30
    assert [s.name for s in source.poll()] == ["team/p020"]
    assert gitlab_server.stats()["requests"] == {"GET /projects": 1, "HEAD /projects/:id/repository/files/:path": 1}

    # A store handed out but never reported back is handed out again.
    clock.now += 30
    assert [s.name for s in source.poll()] == ["team/p020"]

    # The periodic full listing catches a project newly shared with the token (old activity time).
    gitlab_server.add_project("team/shared-later", files={"gpu_jobs/manifest.yaml": _manifest()})
    gitlab_server.set_last_activity("team/shared-later", datetime.now(timezone.utc) - timedelta(days=30))
    clock.now += 30
    assert "team/shared-later" not in [s.name for s in source.poll()]
    gitlab_server.reset_stats()
    clock.now += 600
    assert "team/shared-later" in [s.name for s in source.poll()]
    requests_made = gitlab_server.stats()["requests"]
    assert requests_made["GET /projects"] == 1 and requests_made["HEAD /projects/:id/repository/files/:path"] <= 2
    source.close()


def test_source_notices_pushes_gitlab_has_not_timestamped_yet(tmp_path):
    """GitLab moves last_activity_at at most once an hour; a manifest pushed within that hour must still
    be seen (the source re-checks recently active projects)."""
    from gitlab_fake import GitLabTestServer

    with GitLabTestServer("tok", root=tmp_path / "srv", activity_throttle=3600) as server:
        server.add_project("team/busy", files={"metadata.json": "{}"})
        source = GitLabSource(server.url, "tok", retry=FAST_RETRY)
        assert source.poll() == []
        stamp = server.project("team/busy").last_activity_at
        server.push("team/busy", {"gpu_jobs/manifest.yaml": _manifest()})
        assert server.project("team/busy").last_activity_at == stamp
        assert [s.name for s in source.poll()] == ["team/busy"]
        source.close()


def test_a_poll_outlives_a_gitlab_outage(gitlab_server):
    _idle_projects(gitlab_server, 3, with_manifest={0, 1})
    source = GitLabSource(gitlab_server.url, gitlab_server.token, retry=FAST_RETRY)
    busy, quiet = sorted(source.poll(), key=lambda s: s.name)
    source.note_scanned(busy, has_open_jobs=True)
    source.note_scanned(quiet, has_open_jobs=False)
    gitlab_server.faults.script("5xx", "GET /projects", times=FAST_RETRY.attempts)
    assert source.poll() == [busy]  # the listing failed; busy projects are still served
    assert gitlab_server.faults.injected == {"5xx": FAST_RETRY.attempts}
    gitlab_server.push("team/p002", {"gpu_jobs/manifest.yaml": _manifest("after-outage")})
    assert sorted(s.name for s in source.poll()) == ["team/p000", "team/p002"]
    source.close()


def test_source_token_comes_from_the_environment(gitlab_server, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(GitLabAuthError):
        GitLabSource(gitlab_server.url)
    monkeypatch.setenv(TOKEN_ENV, "not-the-token")
    with pytest.raises(GitLabAuthError):
        GitLabSource(gitlab_server.url, retry=FAST_RETRY).poll()
    assert isinstance(GitLabAuthError("x"), GitLabError)
    assert os.environ[TOKEN_ENV] == "not-the-token"
