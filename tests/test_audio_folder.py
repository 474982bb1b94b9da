"""One reader of an AudioFolder's metadata.csv (``audio_folder``) for both training libraries."""

from __future__ import annotations

from pathlib import Path

import pytest

from asr.datasets import read_metadata
from audio_folder import DatasetError, read_audio_folder
from tts.datasets import read_dataset


def _folder(tmp_path: Path, text: str) -> Path:
    (tmp_path / "metadata.csv").write_text(text, encoding="utf-8")
    return tmp_path


def test_tts_and_asr_read_the_same_clips_from_one_metadata_csv(tmp_path):
    absolute = tmp_path / "elsewhere" / "c.wav"
    # A BOM (spreadsheet exports write one) must not hide the first column from either reader.
    folder = _folder(tmp_path, "\ufefffile_name,transcription,cell_id,verse_id\n"
                               f"audio/a.wav,In the beginning,GEN 1:1,v1\naudio/b.wav,,GEN 1:2,\n{absolute},Amen,,v3\n")
    utterances = read_dataset(folder)
    examples = read_metadata(folder / "metadata.csv")
    assert [(u.audio_path, u.text) for u in utterances] == [(e.audio, e.text) for e in examples] == [
        (tmp_path / "audio" / "a.wav", "In the beginning"), (tmp_path / "audio" / "b.wav", ""), (absolute, "Amen")]
    assert [u.id for u in utterances] == ["GEN 1:1", "GEN 1:2", str(absolute)]  # cell_id, else file_name
    # cell_id (what gitlab_to_hf_dataset.py writes), else the row number
    assert [e.id for e in examples] == ["GEN 1:1", "GEN 1:2", "row-2"]


def test_asr_columns_and_audio_base_may_be_chosen(tmp_path):
    _folder(tmp_path, "path,text,key\nx.wav,hello,k1\n")
    [example] = read_metadata(tmp_path / "metadata.csv", audio_column="path", text_column="text", id_column="key",
                              audio_base=tmp_path / "clips")
    assert (example.audio, example.text, example.id) == (tmp_path / "clips" / "x.wav", "hello", "k1")


def test_a_missing_column_is_one_library_error_naming_the_file(tmp_path):
    _folder(tmp_path, "path,text\nx.wav,hello\n")
    for read in (read_dataset, read_metadata, read_audio_folder):
        with pytest.raises(DatasetError) as caught:
            read(tmp_path / "metadata.csv")
        assert str(caught.value) == f"{tmp_path / 'metadata.csv'} lacks column(s) ['file_name', 'transcription']; " \
                                    "it has ['path', 'text']"
