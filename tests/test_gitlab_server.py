"""The fake GitLab answers like GitLab: statuses, messages, headers, pagination, LFS and atomicity.

Driven with python-gitlab (the worker's client) where it has a call for the endpoint, with requests where
the test needs the raw answer (headers, exact bodies).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import gitlab
import pytest
import requests

from gitlab_fixtures import (  # noqa: F401 - fixtures
    codex_project_dir,
    fake_audio,
    gitlab_client,
    gitlab_project,
    gitlab_server,
    gitlab_token,
    pointer_for,
)
from gitlab_fake import GitLabTestServer

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ".project/attachments/pointers/MAT"
COMMITS = "POST /projects/:id/repository/commits"


def api(server, path: str, method: str = "GET", token: str | None = "default", **kwargs) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if token == "default":
        token = server.token
    if token is not None:
        headers["PRIVATE-TOKEN"] = token
    return requests.request(method, f"{server.url}/api/v4{path}", headers=headers, timeout=10, **kwargs)


def commit(server, project_id, actions, branch="main", message="test") -> requests.Response:
    return api(server, f"/projects/{project_id}/repository/commits", "POST",
               json={"branch": branch, "commit_message": message, "actions": actions})


def audio_paths(server, project) -> list[str]:
    return [p for p in server.files(project) if p.startswith(AUDIO)]


# -- running it ----------------------------------------------------------------------------------------
def test_runs_as_a_process_and_prints_its_url_first(tmp_path, codex_project_dir):
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.gitlab_server", "--port", "0", "--token", "cli-token",
         "--project", f"bible/cli={codex_project_dir}", "--root", str(tmp_path / "srv")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline().strip()
        assert first.startswith("GITLAB_URL=http://127.0.0.1:"), (first, process.stderr.read() if process.poll() else "")
        url = first.split("=", 1)[1]
        assert process.stdout.readline().split() == ["PROJECT", "1", "bible/cli"]
        client = gitlab.Gitlab(url, private_token="cli-token")
        project = client.projects.get("bible/cli")
        assert project.default_branch == "main"
        assert project.files.get("metadata.json", ref="main").decode().startswith(b"{")
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_rejects_unusable_command_lines(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tests.gitlab_server", "--token", "t", "--faults", "boom=1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "unknown fault kind" in result.stderr


# -- auth ----------------------------------------------------------------------------------------------
def test_only_the_token_is_accepted(gitlab_server, gitlab_project):
    for bad in (None, "wrong", ""):
        answer = api(gitlab_server, "/projects", token=bad)
        assert answer.status_code == 401 and answer.json() == {"message": "401 Unauthorized"}
    bearer = requests.get(f"{gitlab_server.url}/api/v4/projects", timeout=10,
                          headers={"Authorization": f"Bearer {gitlab_server.token}"})
    assert bearer.status_code == 200
    basic_on_api = requests.get(f"{gitlab_server.url}/api/v4/projects", auth=("x", gitlab_server.token), timeout=10)
    assert basic_on_api.status_code == 401
    with pytest.raises(gitlab.exceptions.GitlabAuthenticationError):
        gitlab.Gitlab(gitlab_server.url, private_token="nope").projects.list(get_all=False)
    batch = f"{gitlab_server.url}/bible/demo.git/info/lfs/objects/batch"
    body = {"operation": "download", "objects": [{"oid": "0" * 64, "size": 1}]}
    assert requests.post(batch, json=body, auth=("anyone", "nope"), timeout=10).status_code == 401
    assert requests.post(batch, json=body, auth=("anyone", gitlab_server.token), timeout=10).status_code == 200
    assert requests.get(f"{gitlab_server.url}/__stats", timeout=10).status_code == 200  # no auth needed


# -- projects ------------------------------------------------------------------------------------------
def test_projects_list_paginates_and_filters_by_activity(gitlab_server, gitlab_client):
    for number in range(5):
        gitlab_server.add_project(f"team/p{number}", files={"README.md": f"p{number}\n"})
    hours_ago = datetime.now(timezone.utc) - timedelta(hours=3)
    for number in (0, 1, 2):
        gitlab_server.set_last_activity(f"team/p{number}", hours_ago)

    first = api(gitlab_server, "/projects", params={"membership": "true", "simple": "true", "per_page": 2})
    assert first.headers["X-Total"] == "5" and first.headers["X-Total-Pages"] == "3"
    assert first.headers["X-Next-Page"] == "2" and first.headers["X-Page"] == "1"
    assert 'rel="next"' in first.headers["Link"] and len(first.json()) == 2
    item = first.json()[0]
    for key in ("id", "path_with_namespace", "default_branch", "http_url_to_repo", "web_url", "last_activity_at"):
        assert key in item
    assert item["http_url_to_repo"] == f"{gitlab_server.url}/{item['path_with_namespace']}.git"

    gitlab_server.reset_stats()
    every = list(gitlab_client.projects.list(membership=True, simple=True, per_page=2, iterator=True))
    assert sorted(p.path_with_namespace for p in every) == [f"team/p{n}" for n in range(5)]
    assert gitlab_server.stats()["requests"] == {"GET /projects": 3}

    since = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    recent = gitlab_client.projects.list(last_activity_after=since, get_all=True)
    assert sorted(p.path_with_namespace for p in recent) == ["team/p3", "team/p4"]


def test_project_by_id_or_encoded_path(gitlab_server, gitlab_client, gitlab_project):
    by_id = gitlab_client.projects.get(gitlab_project.id)
    by_path = gitlab_client.projects.get("bible/demo")
    assert by_id.id == by_path.id == gitlab_project.id
    assert by_path.path_with_namespace == "bible/demo" and by_path.default_branch == "main"
    missing = api(gitlab_server, "/projects/bible%2Fnope")
    assert missing.status_code == 404 and missing.json() == {"message": "404 Project Not Found"}


def test_last_activity_moves_with_every_commit_unless_throttled(gitlab_server, gitlab_project, tmp_path):
    long_ago = datetime.now(timezone.utc) - timedelta(days=2)
    gitlab_server.set_last_activity(gitlab_project, long_ago)
    assert commit(gitlab_server, gitlab_project.id, [{"action": "create", "file_path": "a.txt", "content": "a"}]).ok
    assert gitlab_project.last_activity_at > long_ago + timedelta(days=1)
    # GitLab's own rule (at most once an hour), on request:
    with GitLabTestServer("t", root=tmp_path / "throttled", activity_throttle=3600) as throttled:
        project = throttled.add_project("a/b", files={"x": "1"})
        before = project.last_activity_at
        throttled.push(project, {"y": "2"})
        assert project.last_activity_at == before


# -- import --------------------------------------------------------------------------------------------
def test_import_commits_what_git_would_with_lfs_objects(gitlab_server, gitlab_project, codex_project_dir):
    files = gitlab_server.files(gitlab_project)
    assert not any(p.startswith(".project/attachments/files/") for p in files)  # .gitignore honoured
    assert len(gitlab_server.commits(gitlab_project)) == 1
    audio = audio_paths(gitlab_server, gitlab_project)
    assert len(audio) == 3
    for path in audio:
        blob = gitlab_server.read(gitlab_project, path)
        assert blob.startswith(b"version https://git-lfs.github.com/spec/v1\n")
        real = (codex_project_dir / path.replace("/pointers/", "/files/"))
        expected = real.read_bytes() if real.exists() else (codex_project_dir / path).read_bytes()
        assert gitlab_server.read_lfs(gitlab_project, path) == expected
        assert blob.decode() == pointer_for(expected)


# -- files ---------------------------------------------------------------------------------------------
def test_files_get_and_head_name_the_last_commit_of_the_file(gitlab_server, gitlab_client, gitlab_project):
    project = gitlab_client.projects.get(gitlab_project.id, lazy=True)
    first = project.files.get("metadata.json", ref="main")
    initial = gitlab_server.commits(gitlab_project)[0]["id"]
    assert first.last_commit_id == first.commit_id == initial
    assert first.blob_id and first.content_sha256 == hashlib.sha256(first.decode()).hexdigest()
    assert first.encoding == "base64" and first.size == len(first.decode()) and first.file_name == "metadata.json"

    other = commit(gitlab_server, gitlab_project.id, [{"action": "create", "file_path": "other.txt", "content": "o"}])
    again = project.files.get("metadata.json", ref="main")
    assert again.commit_id == other.json()["id"] and again.last_commit_id == initial

    head = project.files.head("metadata.json", ref="main")
    assert head["X-Gitlab-Last-Commit-Id"] == initial
    assert head["X-Gitlab-Blob-Id"] == first.blob_id
    assert head["X-Gitlab-Size"] == str(first.size) and head["X-Gitlab-Commit-Id"] == other.json()["id"]

    missing = api(gitlab_server, f"/projects/{gitlab_project.id}/repository/files/nope.txt", params={"ref": "main"})
    assert missing.status_code == 404 and missing.json() == {"message": "404 File Not Found"}
    no_ref = api(gitlab_server, f"/projects/{gitlab_project.id}/repository/files/metadata.json")
    assert no_ref.status_code == 400 and no_ref.json() == {"error": "ref is missing"}
    with pytest.raises(gitlab.exceptions.GitlabHeadError) as info:
        project.files.head("nope.txt", ref="main")
    assert info.value.response_code == 404


def test_raw_returns_the_pointer_or_with_lfs_true_the_object(gitlab_server, gitlab_client, gitlab_project,
                                                             codex_project_dir):
    project = gitlab_client.projects.get(gitlab_project.id, lazy=True)
    path = audio_paths(gitlab_server, gitlab_project)[0]
    pointer = project.files.raw(path, ref="main")
    assert pointer == gitlab_server.read(gitlab_project, path)
    chunks: list[bytes] = []
    project.files.raw(path, ref="main", lfs=True, streamed=True, action=chunks.append)
    assert b"".join(chunks) == (codex_project_dir / path.replace("/pointers/", "/files/")).read_bytes()
    assert project.files.raw("metadata.json", ref="main", lfs=True) == gitlab_server.read(gitlab_project,
                                                                                          "metadata.json")


# -- tree ----------------------------------------------------------------------------------------------
def test_tree_recursive_paths_and_both_paginations(gitlab_server, gitlab_client):
    files = {f"book/{n:03d}.txt": str(n) for n in range(130)} | {"top.txt": "t"}
    created = gitlab_server.add_project("team/tree", files=files)
    project = gitlab_client.projects.get(created.id, lazy=True)

    default = api(gitlab_server, f"/projects/{created.id}/repository/tree", params={"recursive": "true"})
    assert len(default.json()) == 20 and default.headers["X-Total"] == "132"  # 131 files + the folder
    capped = api(gitlab_server, f"/projects/{created.id}/repository/tree",
                 params={"recursive": "true", "per_page": 500})
    assert len(capped.json()) == 100 and capped.headers["X-Next-Page"] == "2"
    top = project.repository_tree(ref="main", get_all=True)
    assert [(e["type"], e["path"]) for e in top] == [("tree", "book"), ("blob", "top.txt")]

    gitlab_server.reset_stats()
    keyset = list(project.repository_tree(path="book", recursive=True, iterator=True, per_page=50,
                                          pagination="keyset"))
    assert [e["path"] for e in keyset] == sorted(f"book/{n:03d}.txt" for n in range(130))
    assert gitlab_server.stats()["requests"] == {"GET /projects/:id/repository/tree": 3}

    missing = api(gitlab_server, f"/projects/{created.id}/repository/tree", params={"path": "nope"})
    assert missing.status_code == 404 and missing.json() == {"message": "404 Tree Not Found"}


# -- commits -------------------------------------------------------------------------------------------
def test_commit_actions_and_gitlabs_exact_errors(gitlab_server, gitlab_project):
    pid = gitlab_project.id
    made = commit(gitlab_server, pid, [
        {"action": "create", "file_path": "a.txt", "content": "hello"},
        {"action": "create", "file_path": "b.bin", "content": base64.b64encode(b"\0\1").decode(), "encoding": "base64"},
    ])
    assert made.status_code == 201 and made.json()["message"] == "test" and made.json()["parent_ids"]
    assert gitlab_server.read(gitlab_project, "b.bin") == b"\0\1"

    exists = commit(gitlab_server, pid, [{"action": "create", "file_path": "a.txt", "content": "x"}])
    assert (exists.status_code, exists.json()) == (400, {"message": "A file with this name already exists"})
    missing = commit(gitlab_server, pid, [{"action": "update", "file_path": "zz.txt", "content": "x"}])
    assert (missing.status_code, missing.json()) == (400, {"message": "A file with this name doesn't exist"})
    gone = commit(gitlab_server, pid, [{"action": "delete", "file_path": "zz.txt"}])
    assert gone.json() == {"message": "A file with this name doesn't exist"}

    version = made.json()["id"]
    # An unrelated commit does not make the version stale (GitLab compares the file's last commits).
    commit(gitlab_server, pid, [{"action": "create", "file_path": "c.txt", "content": "c"}])
    ok = commit(gitlab_server, pid, [{"action": "update", "file_path": "a.txt", "content": "v2",
                                      "last_commit_id": version}])
    assert ok.status_code == 201
    stale = commit(gitlab_server, pid, [{"action": "update", "file_path": "a.txt", "content": "v3",
                                         "last_commit_id": version}])
    assert (stale.status_code, stale.json()) == (
        400, {"message": "The file has changed since you started editing it: a.txt"})
    moved = commit(gitlab_server, pid, [{"action": "move", "previous_path": "a.txt", "file_path": "d/a.txt"},
                                        {"action": "delete", "file_path": "c.txt"}])
    assert moved.status_code == 201
    assert gitlab_server.read(gitlab_project, "d/a.txt") == b"v2" and gitlab_server.read(gitlab_project, "c.txt") is None
    no_branch = commit(gitlab_server, pid, [{"action": "create", "file_path": "q", "content": "q"}], branch="nope")
    assert no_branch.status_code == 400


def test_a_commit_with_one_failing_action_changes_nothing(gitlab_server, gitlab_project):
    before_files = {p: gitlab_server.read(gitlab_project, p) for p in gitlab_server.files(gitlab_project)}
    before_commits = gitlab_server.commits(gitlab_project)
    answer = commit(gitlab_server, gitlab_project.id, [
        {"action": "create", "file_path": "new.txt", "content": "n"},
        {"action": "update", "file_path": "metadata.json", "content": "{}"},
        {"action": "create", "file_path": "metadata.json", "content": "dup"},  # fails
    ])
    assert answer.status_code == 400
    assert gitlab_server.commits(gitlab_project) == before_commits
    assert {p: gitlab_server.read(gitlab_project, p) for p in gitlab_server.files(gitlab_project)} == before_files


def test_branch_moved_underneath_is_refused_and_not_applied(gitlab_server, gitlab_project):
    gitlab_server.before_ref_update = lambda project: gitlab_server.push(project, {"translator.txt": "edit"})
    answer = commit(gitlab_server, gitlab_project.id, [{"action": "create", "file_path": "w.txt", "content": "w"}])
    gitlab_server.before_ref_update = None
    assert (answer.status_code, answer.json()) == (
        400, {"message": "Could not update refs/heads/main. Please refresh and try again."})
    assert gitlab_server.read(gitlab_project, "w.txt") is None
    assert gitlab_server.read(gitlab_project, "translator.txt") == b"edit"


def test_concurrent_creates_exactly_one_wins(gitlab_server, gitlab_project):
    results: list[requests.Response] = []
    start = threading.Barrier(8)

    def claim(number: int) -> None:
        start.wait()
        results.append(commit(gitlab_server, gitlab_project.id,
                              [{"action": "create", "file_path": "gpu_jobs/job_1/response.yaml",
                                "content": f"worker: {number}\n"}]))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [r for r in results if r.status_code == 201]
    assert len(winners) == 1
    for loser in results:
        if loser.status_code != 201:
            assert loser.status_code == 400 and loser.json()["message"] in (
                "A file with this name already exists",
                "Could not update refs/heads/main. Please refresh and try again.")
    assert len(gitlab_server.commits(gitlab_project)) == 2
    content = gitlab_server.read(gitlab_project, "gpu_jobs/job_1/response.yaml").decode()
    assert gitlab_server.commits(gitlab_project)[0]["id"] == winners[0].json()["id"] and content.startswith("worker:")


def test_commits_list_and_get(gitlab_server, gitlab_client, gitlab_project):
    sha = commit(gitlab_server, gitlab_project.id, [{"action": "create", "file_path": "t.txt", "content": "t"}],
                 message="title\n\nWorker-Commit-Id: abc123\n").json()["id"]
    project = gitlab_client.projects.get(gitlab_project.id, lazy=True)
    since = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()
    listed = project.commits.list(ref_name="main", since=since, get_all=True)
    assert listed[0].id == sha and "Worker-Commit-Id: abc123" in listed[0].message
    assert listed[0].trailers == {"Worker-Commit-Id": "abc123"}
    assert project.commits.list(ref_name="main", since="2999-01-01T00:00:00Z", get_all=True) == []
    assert project.commits.get(sha).title == "title"
    assert api(gitlab_server, f"/projects/{gitlab_project.id}/repository/commits/{'0' * 40}").status_code == 404


# -- LFS -----------------------------------------------------------------------------------------------
def test_create_on_an_lfs_path_stores_an_object_and_update_commits_content_as_sent(gitlab_server, gitlab_project):
    path = f"{AUDIO}/generated.webm"
    data = fake_audio("generated", 5000)
    made = commit(gitlab_server, gitlab_project.id, [
        {"action": "create", "file_path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}])
    assert made.status_code == 201
    assert gitlab_server.read(gitlab_project, path).decode() == pointer_for(data)
    assert gitlab_server.read_lfs(gitlab_project, path) == data

    # GitLab wraps whatever a create carries — a pointer text becomes an object holding that text.
    wrapped = f"{AUDIO}/wrapped.webm"
    commit(gitlab_server, gitlab_project.id, [{"action": "create", "file_path": wrapped, "content": pointer_for(data)}])
    assert gitlab_server.read_lfs(gitlab_project, wrapped) == pointer_for(data).encode()

    # An update is committed as sent: the pointer of an object the server has works as-is.
    commit(gitlab_server, gitlab_project.id, [{"action": "update", "file_path": wrapped, "content": pointer_for(data)}])
    assert gitlab_server.read_lfs(gitlab_project, wrapped) == data


def test_lfs_batch_api_upload_and_download(gitlab_server, gitlab_project):
    repo = f"{gitlab_server.url}/bible/demo.git"
    auth = ("whoever", gitlab_server.token)
    headers = {"Accept": "application/vnd.git-lfs+json", "Content-Type": "application/vnd.git-lfs+json"}
    data = fake_audio("upload", 70_000)
    oid, size = hashlib.sha256(data).hexdigest(), len(data)

    def batch(operation: str) -> dict:
        answer = requests.post(f"{repo}/info/lfs/objects/batch", auth=auth, headers=headers, timeout=10,
                               data=json.dumps({"operation": operation, "transfers": ["basic"],
                                                "objects": [{"oid": oid, "size": size}]}))
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == "application/vnd.git-lfs+json"
        return answer.json()["objects"][0]

    assert batch("download")["error"]["code"] == 404
    upload = batch("upload")["actions"]["upload"]
    assert set(upload) == {"href", "header"} and upload["header"]["Transfer-Encoding"] == "chunked"
    chunks = lambda payload: (payload[i:i + 10_000] for i in range(0, len(payload), 10_000))  # noqa: E731
    wrong = requests.put(upload["href"], data=chunks(b"x" * size), headers=upload["header"], timeout=10)
    assert wrong.status_code == 422
    # As GitLab asks: chunked. (A body with a Content-Length and that header would be misread, as by GitLab.)
    assert requests.put(upload["href"], data=chunks(data), headers=upload["header"], timeout=10).status_code == 200
    assert "actions" not in batch("upload")  # the server has it now
    download = batch("download")["actions"]["download"]
    assert requests.get(download["href"], headers=download["header"], timeout=10).content == data


def test_archive_of_a_folder_includes_lfs_blobs(gitlab_server, gitlab_client, gitlab_project, codex_project_dir):
    project = gitlab_client.projects.get(gitlab_project.id, lazy=True)

    def members(**options) -> dict[str, bytes]:
        raw = project.repository_archive(sha="main", format="tar.gz", path=AUDIO, **options)
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar if m.isfile()}

    resolved = members(include_lfs_blobs="true")
    assert sorted(resolved) == audio_paths(gitlab_server, gitlab_project)
    for path, data in resolved.items():
        assert data == gitlab_server.read_lfs(gitlab_project, path)
    pointers = members(include_lfs_blobs="false")
    assert all(data.startswith(b"version https://git-lfs") for data in pointers.values())


# -- faults, limits, counters --------------------------------------------------------------------------
def test_scripted_faults(gitlab_server, gitlab_project):
    path = f"/projects/{gitlab_project.id}/repository/files/metadata.json?ref=main"
    gitlab_server.faults.script("5xx", "GET /projects/:id/repository/files/:path", status=503)
    assert api(gitlab_server, path).status_code == 503
    gitlab_server.faults.script("429", "GET /projects/:id/repository/files/:path")
    limited = api(gitlab_server, path)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    gitlab_server.faults.script("reset", "GET /projects/:id/repository/files/:path")
    with pytest.raises(requests.exceptions.RequestException):
        api(gitlab_server, path)
    gitlab_server.faults.script("slow", "GET /projects/:id/repository/files/:path", delay=0.2)
    assert api(gitlab_server, path).status_code == 200

    # The nastiest case: the commit is applied, the answer is lost.
    gitlab_server.faults.script("reset", COMMITS, after_apply=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        commit(gitlab_server, gitlab_project.id, [{"action": "create", "file_path": "landed.txt", "content": "x"}])
    assert gitlab_server.read(gitlab_project, "landed.txt") == b"x"
    gitlab_server.faults.script("reset", COMMITS, after_apply=False)
    with pytest.raises(requests.exceptions.ConnectionError):
        commit(gitlab_server, gitlab_project.id, [{"action": "create", "file_path": "lost.txt", "content": "x"}])
    assert gitlab_server.read(gitlab_project, "lost.txt") is None
    gitlab_server.faults.script("5xx", COMMITS, after_apply=True)
    assert commit(gitlab_server, gitlab_project.id,
                  [{"action": "create", "file_path": "502.txt", "content": "x"}]).status_code == 502
    assert gitlab_server.read(gitlab_project, "502.txt") == b"x"
    assert gitlab_server.stats()["faults_injected"] == {"5xx": 2, "429": 1, "reset": 3, "slow": 1}


def test_random_faults_are_reproducible_and_spare_stats(tmp_path):
    def outcomes(seed: int) -> list[int | str]:
        with GitLabTestServer("t", root=tmp_path / f"s{seed}-{len(list(tmp_path.iterdir()))}",
                              faults="5xx=0.3,429=0.2,reset=0.2", seed=seed) as server:
            server.add_project("a/b", files={"x": "1"})
            seen: list[int | str] = []
            for _ in range(30):
                try:
                    seen.append(api(server, "/projects/1").status_code)
                except requests.exceptions.RequestException:
                    seen.append("reset")
                assert requests.get(f"{server.url}/__stats", timeout=10).status_code == 200
            return seen

    first, again = outcomes(7), outcomes(7)
    assert first == again
    assert {200, 429, "reset"} <= set(first) and any(isinstance(s, int) and s >= 500 for s in first)


def test_commit_body_over_the_cap_is_413(tmp_path):
    with GitLabTestServer("t", root=tmp_path / "s", max_commit_bytes=10_000) as server:
        project = server.add_project("a/b", files={"x": "1"})
        small = commit(server, project.id, [{"action": "create", "file_path": "s", "content": "s"}])
        big = commit(server, project.id, [{"action": "create", "file_path": "b", "content": "b" * 20_000}])
        assert small.status_code == 201 and big.status_code == 413
        assert server.read(project, "b") is None


def test_stats_count_requests_and_bytes_and_reset(gitlab_server, gitlab_project):
    gitlab_server.reset_stats()
    api(gitlab_server, f"/projects/{gitlab_project.id}")
    api(gitlab_server, f"/projects/{gitlab_project.id}")
    commit(gitlab_server, gitlab_project.id, [{"action": "create", "file_path": "n", "content": "n"}])
    stats = requests.get(f"{gitlab_server.url}/__stats", timeout=10).json()
    assert stats["requests"] == {"GET /projects/:id": 2, COMMITS: 1}
    assert stats["total"] == 3 and stats["by_method"] == {"GET": 2, "POST": 1}
    assert stats["by_endpoint"][COMMITS]["bytes_in"] > 0 and stats["bytes_out"] > 0
    assert requests.post(f"{gitlab_server.url}/__stats/reset", timeout=10).status_code == 200
    assert requests.get(f"{gitlab_server.url}/__stats", timeout=10).json()["total"] == 0
