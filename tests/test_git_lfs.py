"""What is behind a fetched file: real bytes, nothing, or only a Git LFS pointer -- decided in one place
(``git_lfs.real_content_problem``) and used by every fetch that tries several paths (``git_lfs.fetch_real``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import git_lfs
from git_lfs import EMPTY, POINTER_MAX_BYTES, POINTER_ONLY, fetch_real, lfs_pointer_for, real_content_problem
from storage import UnsafePath

POINTER = lfs_pointer_for(b"a recording that was never pushed")


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("data, problem", [
    (b"", EMPTY),
    (POINTER, POINTER_ONLY),
    (lfs_pointer_for(b"old spec").replace(git_lfs.LFS_SPEC.encode(), b"https://hawser.github.com/spec/v1"),
     POINTER_ONLY),
    (b"OggS\x00\x02" + bytes(range(256)) * 8, None),
    (b"version 2\n", None),                                      # text that only starts like a pointer
    (POINTER + b"x" * (POINTER_MAX_BYTES + 1 - len(POINTER)), None),  # pointer-looking, but too big to be one
])
def test_real_content_problem(tmp_path, data, problem):
    assert real_content_problem(write(tmp_path, "file", data)) == problem


def test_a_pointer_padded_up_to_the_limit_is_still_a_pointer(tmp_path):
    padded = POINTER + b"\n" * (POINTER_MAX_BYTES - len(POINTER))
    assert len(padded) == POINTER_MAX_BYTES
    assert real_content_problem(write(tmp_path, "file", padded)) == POINTER_ONLY


class Project:
    """A store's ``download`` over a dict of files; a value of None is a link leading outside."""

    def __init__(self, files: dict[str, bytes | None]):
        self.files, self.asked = files, []

    def download(self, path: str, dest: Path) -> Path:
        self.asked.append(path)
        if path not in self.files:
            raise FileNotFoundError(path)
        if self.files[path] is None:
            raise UnsafePath(f"{path} links outside the project")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(self.files[path])
        return dest


def test_fetch_real_takes_the_first_candidate_with_real_bytes_and_says_why_it_passed_the_others(tmp_path):
    project = Project({"pointers/a.webm": POINTER, "files/b.webm": b"", "old/a.webm": b"audio", "late.webm": b"x"})
    fetched = fetch_real(project.download, ["files/a.webm", "pointers/a.webm", "files/b.webm", "old/a.webm",
                                            "late.webm"], lambda path: tmp_path / Path(path).name)
    assert (fetched.path, fetched.local) == ("old/a.webm", tmp_path / "a.webm")
    assert fetched.local.read_bytes() == b"audio"
    assert fetched.problems == ("files/a.webm does not exist", f"pointers/a.webm is {POINTER_ONLY}",
                                "files/b.webm is empty")
    assert "late.webm" not in project.asked                      # no request after the first real bytes
    assert not (tmp_path / "b.webm").exists()                    # passed-over files are not left behind


def test_fetch_real_without_real_bytes_anywhere(tmp_path):
    dest = tmp_path / "voice.wav"
    fetched = fetch_real(Project({"p.wav": POINTER}).download, ["p.wav", "q.wav"], dest)
    assert (fetched.path, fetched.local) == (None, None)
    assert fetched.problems == (f"p.wav is {POINTER_ONLY}", "q.wav does not exist")
    assert not dest.exists()


def test_a_link_outside_the_project_is_raised_unless_skipped(tmp_path):
    project = Project({"link.wav": None, "real.wav": b"RIFF"})
    with pytest.raises(UnsafePath):
        fetch_real(project.download, ["link.wav", "real.wav"], tmp_path / "x.wav")
    fetched = fetch_real(project.download, ["link.wav", "real.wav"], tmp_path / "x.wav", skip_unsafe=True)
    assert fetched.path == "real.wav" and fetched.problems[0].startswith("link.wav is not read: ")
