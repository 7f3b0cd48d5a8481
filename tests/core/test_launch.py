"""The launcher's pieces that need no processes: the accelerate config it writes, the event tail, crash reports."""

from __future__ import annotations

import pytest
from accelerate.commands.config.config_args import load_config_from_file

from lora_studio.core import events as ev
from lora_studio.core.training.launch import EventTail, MultiProcessRun, check_processes, root_cause, \
    write_accelerate_config
from lora_studio.errors import LoraStudioError

# The report torch's elastic agent printed when rank 1 of a two-process run was killed (launcher log, trimmed).
ELASTIC_REPORT = """\
Failures:
[1]:
  time      : 2026-12-06_23:58:54
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 15481)  (SIGTERM)
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-06_23:58:54
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 15482)  (SIGKILL)
  error_file: <N/A>
"""


@pytest.mark.parametrize("cpu", [True, False])
def test_accelerate_reads_the_written_config_as_a_multi_process_run(tmp_path, cpu):
    path = write_accelerate_config(tmp_path, 2, "bf16", cpu)
    loaded = load_config_from_file(str(path))
    assert loaded.num_processes == 2 and loaded.use_cpu is cpu and loaded.mixed_precision == "bf16"
    assert loaded.distributed_type.value == "MULTI_GPU" and loaded.num_machines == 1
    assert 0 < loaded.main_process_port < 65536


def test_root_cause_names_the_first_failed_rank_and_how_it_ended():
    assert root_cause(ELASTIC_REPORT) == (1, "exit code -9, SIGKILL")
    assert root_cause(ELASTIC_REPORT.replace("-9 (pid: 15482)  (SIGKILL)", "1 (pid: 15482) ")) == (1, "exit code 1")
    assert root_cause("Traceback (most recent call last):\n...") == (None, "")


def test_event_tail_reads_whole_lines_from_where_the_run_began(tmp_path):
    path = tmp_path / "ev.jsonl"
    path.write_text(ev.to_json(ev.Warning("an earlier run")) + "\n", encoding="utf-8")
    tail = EventTail(path)
    progress = ev.to_json(ev.Progress(step=1, total=4, loss=float("nan")))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(ev.to_json(ev.Started(total_steps=4)) + "\n" + progress[:10])
    assert tail.read() == [ev.Started(total_steps=4)]
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(progress[10:] + "\n")
    got = tail.read()
    assert len(got) == 1 and got[0].step == 1 and got[0].loss != got[0].loss  # NaN kept
    assert tail.read() == []


def test_a_line_cut_short_by_a_killed_writer_is_closed_before_the_crash_report(tmp_path):
    run = MultiProcessRun(tmp_path / "run.toml", tmp_path / "out", 2, cpu=True)  # not started
    tail = EventTail(run.events_path)
    run.events_path.write_text(ev.to_json(ev.Started(total_steps=4)) + "\n" + '{"event": "Progr', encoding="utf-8")
    run.append_event(ev.Failed("process 1 of 2 failed", "resume"))
    assert tail.read() == [ev.Started(total_steps=4), ev.Failed("process 1 of 2 failed", "resume")]


def test_more_processes_than_gpus_is_refused_with_advice():
    check_processes(2, 0)  # no GPU: CPU processes
    check_processes(2, 2)
    with pytest.raises(LoraStudioError) as info:
        check_processes(3, 2)
    assert "2 GPU" in str(info.value) and "--processes 2" in info.value.advice
    with pytest.raises(LoraStudioError):
        check_processes(0, 0)
