"""The one writer of training_metrics.csv: following a run's history, and reading it back as numbers."""

from training_metrics import ASR_METRICS_COLUMNS, TTS_METRICS_COLUMNS, MetricsLog


def _history(epochs, offset=0.0):
    return [{"epoch": e, "train_total_loss": 10.0 / e + offset, "val_total_loss": 12.0 / e + offset}
            for e in epochs]


def test_follow_appends_the_newest_epoch_and_rewrites_a_history_from_elsewhere(tmp_path):
    path = tmp_path / "checkpoint" / "training_metrics.csv"
    log = MetricsLog(path, TTS_METRICS_COLUMNS)
    log.follow([])
    assert not path.exists()
    for last in (1, 2, 3):
        log.follow(_history(range(1, last + 1)))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(TTS_METRICS_COLUMNS)
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2", "3"]
    log.follow(_history(range(1, 4)))             # the same history again: nothing changes
    assert path.read_text(encoding="utf-8").splitlines() == lines
    # A resume on another machine brings a history that does not continue this file: it wins, whole.
    other = MetricsLog(path, TTS_METRICS_COLUMNS)
    other.follow(_history(range(1, 6), offset=1.0))
    rows = MetricsLog(path, TTS_METRICS_COLUMNS).numbers()
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["train_total_loss"] == 11.0 and rows[4]["val_total_loss"] == 3.4
    assert rows[0]["train_diff_loss"] is None      # a column the history lacks is empty, not zero


def test_numbers_of_an_asr_file_with_gaps(tmp_path):
    log = MetricsLog(tmp_path / "m.csv", ASR_METRICS_COLUMNS)
    log.append(1, train_total_loss=9.5, val_cer=float("nan"))
    log.append(2, train_total_loss=4.0, val_total_loss=3.0, val_wer=0.5, val_cer=0.25)
    assert MetricsLog(tmp_path / "m.csv", ASR_METRICS_COLUMNS).numbers() == [
        {"epoch": 1, "train_total_loss": 9.5, "val_total_loss": None, "val_wer": None, "val_cer": None},
        {"epoch": 2, "train_total_loss": 4.0, "val_total_loss": 3.0, "val_wer": 0.5, "val_cer": 0.25}]
