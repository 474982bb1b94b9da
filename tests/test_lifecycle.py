"""The job lifecycle end to end, through the storage interface, with real child processes.

Each test builds a project, writes a manifest for the probe handler (tests/handlers/test/probe), runs a
worker, and reads back what the plugin would read: response.yaml and the job folder.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import yaml

from conftest import executions, fast_config, make_job, run_worker, run_worker_in_thread
from jobs import format_time, utc_now


def test_success_writes_completed_result_and_logs(env, tmp_path, record_dir):
    env.write_manifest([make_job("ok1", "succeed", name="first", probe={"behaviour": "succeed", "seconds": 0.5})])
    run_worker(env.source(), fast_config(tmp_path))
    response = env.response("ok1")
    assert response["state"] == "completed"
    assert response["worker_id"] == "worker-a"
    assert response["result"] == {"checkpoint_path": "gpu_jobs/x.pt", "echo": "first"}
    assert response["epochs_completed"] >= 1
    assert response["retry_count"] == 0
    assert "lease_expires_at" in response and "claimed_at" in response
    logs = env.read_file("gpu_jobs/job_ok1/logs.txt").decode()
    assert "running handler" in logs and "completed" in logs
    assert executions(record_dir) == [("ok1", "start"), ("ok1", "done")]


def test_mark_complete_is_the_result_when_run_returns_none(env, tmp_path):
    env.write_manifest([make_job("m1", "mark")])
    run_worker(env.source(), fast_config(tmp_path))
    response = env.response("m1")
    assert response["state"] == "completed" and response["result"] == {"marked": True}


def test_failure_and_exception_become_failed_with_human_messages(env, tmp_path):
    env.write_manifest([make_job("f1", "fail", minutes_ago=3), make_job("f2", "raise", minutes_ago=2)])
    run_worker(env.source(), fast_config(tmp_path))
    assert env.response("f1")["state"] == "failed"
    assert env.response("f1")["error_message"] == "the data had no recordings"
    failed = env.response("f2")
    assert failed["state"] == "failed"
    assert failed["error_message"] == "ValueError: cell JHN 1:1 has no text"
    assert "Traceback" in env.read_file("gpu_jobs/job_f2/logs.txt").decode()  # details go to the logs


def test_unknown_handler_fails_and_the_worker_goes_on(env, tmp_path, record_dir):
    env.write_manifest([
        make_job("u1", minutes_ago=5, model={"type": "NoSuchModel"}),
        make_job("u2", "succeed", minutes_ago=1),
    ])
    run_worker(env.source(), fast_config(tmp_path))
    failed = env.response("u1")
    assert failed["state"] == "failed"
    message = failed["error_message"]
    assert message.startswith("this worker has no handler for job_type 'test' with model.type 'NoSuchModel' "
                              "in mode 'training'; it runs: ")
    assert "tts/stabletts (inference, training, training_and_inference)" in message
    assert "test/probe (training)" in message  # the --handler-path root's handlers are offered too
    assert "\n" not in message and str(Path(__file__).parent.parent) not in message  # no server paths
    assert env.response("u2")["state"] == "completed"


def test_jobs_run_oldest_first_across_projects(tmp_path, record_dir):
    from conftest import LocalEnv
    from local_store import LocalSource

    first, second = LocalEnv(tmp_path / "p1"), LocalEnv(tmp_path / "p2")
    first.write_manifest([make_job("newer", minutes_ago=1), make_job("oldest", minutes_ago=30)])
    second.write_manifest([make_job("middle", minutes_ago=10)])
    run_worker(LocalSource([first.root, second.root]), fast_config(tmp_path))
    starts = [job for job, event in executions(record_dir) if event == "start"]
    assert starts == ["oldest", "middle", "newer"]


def test_cancel_flag_mid_job(env, tmp_path, record_dir):
    job = make_job("c1", "loop")
    env.write_manifest([job])
    worker, thread = run_worker_in_thread(env.source(), fast_config(tmp_path))
    env.wait_for(lambda: (env.response("c1") or {}).get("epochs_completed", 0) >= 1)
    env.write_manifest([{**job, "canceled": True}])
    thread.join(30)
    assert not thread.is_alive()
    response = env.response("c1")
    assert response["state"] == "canceled"
    assert response["termination_reason"] == "canceled by the user"
    assert ("c1", "stopping") in executions(record_dir)  # the handler saw the stop and could save


def test_cancel_by_removal_mid_job(env, tmp_path):
    env.write_manifest([make_job("r1", "loop"), make_job("other", "fail", minutes_ago=1)])
    worker, thread = run_worker_in_thread(env.source(), fast_config(tmp_path))
    env.wait_for(lambda: (env.response("r1") or {}).get("epochs_completed", 0) >= 1)
    env.write_manifest([make_job("other", "fail", minutes_ago=1)])
    thread.join(30)
    response = env.response("r1")
    assert response["state"] == "canceled"
    assert "removed" in response["termination_reason"]
    assert env.response("other")["state"] == "failed"  # the worker went on


def test_canceled_before_start_is_closed_without_running(env, tmp_path, record_dir):
    env.write_manifest([make_job("pre", canceled=True)])
    run_worker(env.source(), fast_config(tmp_path))
    assert env.response("pre")["state"] == "canceled"
    assert executions(record_dir) == []


def test_lost_lease_stops_and_writes_nothing_more(env, tmp_path, record_dir):
    env.write_manifest([make_job("l1", "loop")])
    worker, thread = run_worker_in_thread(env.source(), fast_config(tmp_path))
    env.wait_for(lambda: (env.response("l1") or {}).get("epochs_completed", 0) >= 1)
    theirs = {"worker_id": "worker-b", "state": "running", "timestamp": format_time(utc_now()),
              "lease_expires_at": format_time(utc_now() + timedelta(hours=1)), "claim_id": "b",
              "retry_count": 1, "epochs_completed": 0, "status_message": "taken over"}
    content = yaml.safe_dump(theirs, sort_keys=False)
    env.write_file("gpu_jobs/job_l1/response.yaml", content)
    thread.join(30)
    assert not thread.is_alive()
    assert env.read_file("gpu_jobs/job_l1/response.yaml").decode() == content
    assert ("l1", "stopping") in executions(record_dir)


def test_result_commit_after_losing_the_lease_is_refused(env, tmp_path):
    env.write_manifest([make_job("w1", "write", probe={"behaviour": "write", "seconds": 3})])
    worker, thread = run_worker_in_thread(env.source(), fast_config(tmp_path))
    env.wait_for(lambda: env.read_file("gpu_jobs/job_w1/model.bin") is not None)
    theirs = yaml.safe_dump({"worker_id": "worker-b", "state": "running", "timestamp": format_time(utc_now()),
                             "claim_id": "b", "retry_count": 1})
    env.write_file("gpu_jobs/job_w1/response.yaml", theirs)
    thread.join(30)
    assert env.read_file("gpu_jobs/job_w1/late.txt") is None
    assert env.read_file("gpu_jobs/job_w1/response.yaml").decode() == theirs


def _stale_response(worker: str, *, retry_count: int = 0, minutes_ago: float = 60, epochs: int = 2) -> str:
    moment = utc_now() - timedelta(minutes=minutes_ago)
    return yaml.safe_dump({
        "worker_id": worker, "state": "running", "timestamp": format_time(moment),
        "lease_expires_at": format_time(moment + timedelta(minutes=30)), "claim_id": "dead",
        "retry_count": retry_count, "epochs_completed": epochs, "status_message": "epoch 2/3",
    }, sort_keys=False)


def test_expired_lease_is_taken_over(env, tmp_path, record_dir, caplog):
    env.write_manifest([make_job("t1", "succeed")])
    env.write_file("gpu_jobs/job_t1/response.yaml", _stale_response("dead-worker"))
    with caplog.at_level(logging.INFO):
        run_worker(env.source(), fast_config(tmp_path))
    response = env.response("t1")
    assert response["state"] == "completed"
    assert response["retry_count"] == 1
    assert response["worker_id"] == "worker-a"
    assert response["epochs_completed"] >= 2  # never goes backwards
    assert any(getattr(r, "event", None) == "lease_taken_over" for r in caplog.records)


def test_live_lease_of_another_worker_is_left_alone(env, tmp_path, record_dir):
    env.write_manifest([make_job("held", "succeed")])
    env.write_file("gpu_jobs/job_held/response.yaml", _stale_response("busy-worker", minutes_ago=1))
    run_worker(env.source(), fast_config(tmp_path))
    assert env.response("held")["worker_id"] == "busy-worker"
    assert executions(record_dir) == []


def test_retry_cap_marks_failed(env, tmp_path, record_dir):
    env.write_manifest([make_job("cap", "succeed")])
    env.write_file("gpu_jobs/job_cap/response.yaml", _stale_response("dead-worker", retry_count=3))
    run_worker(env.source(), fast_config(tmp_path, max_retries=3))
    response = env.response("cap")
    assert response["state"] == "failed"
    assert "gave up" in response["error_message"] and "retry limit 3" in response["error_message"]
    assert executions(record_dir) == []


def test_timeout_before_start(env, tmp_path, record_dir):
    env.write_manifest([make_job("late", timeout=format_time(utc_now() - timedelta(minutes=1)))])
    run_worker(env.source(), fast_config(tmp_path))
    response = env.response("late")
    assert response["state"] == "failed"
    assert response["error_message"] == "timed out before start"
    assert executions(record_dir) == []


def test_timeout_while_running(env, tmp_path, record_dir, protocol_clock):
    """The job's timeout passes while it runs: the protocol's clock jumps past it instead of the test waiting."""
    env.write_manifest([make_job("slow", "loop", timeout=format_time(utc_now() + timedelta(hours=1)))])
    worker, thread = run_worker_in_thread(env.source(), fast_config(tmp_path))
    env.wait_state("slow", "running")
    assert thread.is_alive()  # still running an hour before its timeout
    protocol_clock.advance(hours=2)
    thread.join(60)
    assert not thread.is_alive()
    response = env.response("slow")
    assert response["state"] == "failed"
    assert response["error_message"].startswith("timed out")
    assert ("slow", "stopping") in executions(record_dir)


def test_handler_ignoring_heartbeats_is_killed_after_grace(env, tmp_path):
    job = make_job("hang", "hang")
    env.write_manifest([job])
    worker, thread = run_worker_in_thread(env.source(), fast_config(tmp_path, grace_seconds=1.0))
    env.wait_state("hang", "running")
    env.wait_for(lambda: "about to hang" in ((env.read_file("gpu_jobs/job_hang/logs.txt") or b"").decode()
                                            + (env.response("hang") or {}).get("status_message", "")), 20)
    env.write_manifest([{**job, "canceled": True}])
    thread.join(30)
    assert not thread.is_alive()
    assert env.response("hang")["state"] == "canceled"
    assert "killing the job's process" in env.read_file("gpu_jobs/job_hang/logs.txt").decode()


def test_stop_is_not_swallowed_by_except_exception(env, tmp_path):
    job = make_job("sw", "swallow")
    env.write_manifest([job])
    worker, thread = run_worker_in_thread(env.source(), fast_config(tmp_path, grace_seconds=30))
    env.wait_state("sw", "running")
    env.write_manifest([{**job, "canceled": True}])
    thread.join(20)  # well before the 30 s grace: the handler really stopped at its heartbeat
    assert not thread.is_alive()
    assert env.response("sw")["state"] == "canceled"
    assert "killing" not in env.read_file("gpu_jobs/job_sw/logs.txt").decode()


def test_segfault_and_exit_fail_the_job_not_the_worker(env, tmp_path, record_dir):
    env.write_manifest([make_job("seg", "segfault", minutes_ago=3), make_job("ex", "exit", minutes_ago=2),
                        make_job("fine", "succeed", minutes_ago=1)])
    run_worker(env.source(), fast_config(tmp_path))
    seg = env.response("seg")
    assert seg["state"] == "failed" and "SIGSEGV" in seg["error_message"]
    ex = env.response("ex")
    assert ex["state"] == "failed" and "exited with code 3" in ex["error_message"]
    assert env.response("fine")["state"] == "completed"


def test_manifest_version_2_and_invalid_yaml_are_logged_and_others_served(tmp_path, record_dir, caplog):
    from conftest import LocalEnv
    from local_store import LocalSource

    v2, broken, good = LocalEnv(tmp_path / "v2"), LocalEnv(tmp_path / "broken"), LocalEnv(tmp_path / "good")
    v2.write_manifest([make_job("v2job")], version=2)
    broken.write_file("gpu_jobs/manifest.yaml", "version: 1\njobs: [ {job_id: x\n")
    good.write_manifest([make_job("g1")])
    with caplog.at_level(logging.WARNING):
        run_worker(LocalSource([v2.root, broken.root, good.root]), fast_config(tmp_path))
    invalid = [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "manifest_invalid"]
    assert any("version 2 is not supported" in m and "gpu_jobs/manifest.yaml" in m for m in invalid)
    assert any("invalid YAML" in m for m in invalid)
    assert good.response("g1")["state"] == "completed"
    assert v2.response("v2job") is None


def test_invalid_job_gets_a_failed_response_naming_the_field(env, tmp_path, record_dir):
    env.write_manifest([make_job("bad", epochs=0), make_job("good", minutes_ago=1)])
    run_worker(env.source(), fast_config(tmp_path))
    bad = env.response("bad")
    assert bad["state"] == "failed"
    assert "field 'epochs'" in bad["error_message"] and "job bad" not in bad["error_message"]
    assert env.response("good")["state"] == "completed"


def test_ids_and_paths_leaving_the_project_are_rejected(env, tmp_path, record_dir):
    env.write_manifest([
        make_job("../../escape"),
        make_job("ckpt", model={"type": "Probe", "base_checkpoint": "../../../etc/passwd"}),
        make_job("voice", voice_reference="/etc/passwd"),
    ])
    run_worker(env.source(), fast_config(tmp_path))
    assert not (tmp_path / "escape").exists() and not (tmp_path / "job_..").exists()
    assert executions(record_dir) == []
    assert "leaves the project" in env.response("ckpt")["error_message"]
    assert "model.base_checkpoint" in env.response("ckpt")["error_message"]
    assert "absolute" in env.response("voice")["error_message"]


def test_handler_path_comes_before_builtin_and_names_are_normalised(env, tmp_path, record_dir):
    extra = tmp_path / "extra_handlers" / "asr" / "W2V2-BERT"
    extra.mkdir(parents=True)
    (extra / "inference.py").write_text(
        "def run(job_context, callbacks):\n"
        "    return {'success': True, 'from': 'extra', 'key': callbacks.get_job_config('inference.x')}\n")
    env.write_manifest([make_job("h1", job_type="asr", mode="inference", model={"type": "wav2vec2_bert"},
                                 inference={"x": 7})])
    run_worker(env.source(), fast_config(tmp_path, handler_paths=(tmp_path / "extra_handlers",)))
    assert env.response("h1")["result"] == {"from": "extra", "key": 7}


def test_in_process_mode_runs_the_same_lifecycle(env, tmp_path, record_dir):
    env.write_manifest([make_job("ip", "succeed")])
    run_worker(env.source(), fast_config(tmp_path, in_process=True))
    assert env.response("ip")["state"] == "completed"
